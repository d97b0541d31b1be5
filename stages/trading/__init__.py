"""Trading stage: one engine stepping a portfolio a day at a time (backtest = fold, daily = one step).

The package's names are imported on first use (PEP 562): a module of the package read by another
stage (stages.trading.exchange by the signal stage's quality gate, stages.trading.rules by the demo
generator) then no longer loads the whole trading stage, its book and the execution package with it
(0.05-0.08 s of every `trendflow signal` process)."""
from importlib import import_module

_EXPORTS = {"BacktestResult": "stages.trading.backtest", "run_backtest": "stages.trading.backtest",
            "run_trading_stage": "stages.trading.stage"}

__all__ = ["BacktestResult", "run_backtest", "run_trading_stage"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
