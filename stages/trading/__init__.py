"""Trading stage: one engine stepping a portfolio a day at a time (backtest = fold, daily = one step)."""
from stages.trading.backtest import BacktestResult, run_backtest
from stages.trading.stage import run_trading_stage

__all__ = ["BacktestResult", "run_backtest", "run_trading_stage"]
