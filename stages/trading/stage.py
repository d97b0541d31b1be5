"""The trading stage as a unit of work: read saved artifacts, run the engine, write validated outputs.

Backtest (no as-of date): fold the engine over every day in the signals; writes the history
tables plus the snapshot and orders of the last day (so daily runs can continue from it).
Daily run (as-of date D): one engine step from portfolio_{D-1}.json; writes orders_{D}.csv (decided
at the close of D, to fill on the next session) and portfolio_{D}.json.
"""
from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.prices import PricesSchema
from schemas.signals import SignalsSchema
from schemas.trading import (
    AllocationHistorySchema,
    EquityCurveSchema,
    OrdersSchema,
    PortfolioSnapshot,
    PositionsSchema,
    TradeLogSchema,
)
from stages.common.artifacts import StageRun, read_json_artifact, stage_run
from stages.common.errors import ArtifactMissingError, IntegrityError, SchemaError, SnapshotError
from stages.common.stage import StageResult
from stages.trading.backtest import ORDER_COLUMNS, from_snapshot, order_row, run_backtest, to_snapshot
from stages.trading.engine import fresh_state, step
from stages.trading.market import build_market
from stages.trading.weights import load_weights

log = logging.getLogger(__name__)


def run_trading_stage(
    config: TrendflowConfig,
    in_dir: str | Path | None,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    as_of_date: date | None = None,
    portfolio: str | Path | None = None,
    fresh: bool = False,
    dry_run: bool = False,
) -> StageResult:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    in_dir = Path(in_dir) if in_dir is not None else out_dir
    with stage_run("trading", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins) as run:
        prices = run.read(in_dir / "prices.parquet", PricesSchema)
        signals = None
        if weights is None or (in_dir / "signals_output.parquet").exists():
            signals = run.read(in_dir / "signals_output.parquet", SignalsSchema)
        market = build_market(prices, signals, config)
        weight_plan = None
        if weights is not None:
            weight_plan = load_weights(weights, market)
            run.record_input(Path(weights))
        if as_of_date is None:
            result = _backtest(run, market, config, weight_plan, dry_run)
        else:
            result = _daily(run, market, config, weight_plan, as_of_date, portfolio, fresh, dry_run, out_dir)
        if dry_run:
            run.abort()
    result.seconds = time.perf_counter() - t0
    log.info(result.log_line())
    return result


def _backtest(run: StageRun, market, config: TrendflowConfig, weight_plan, dry_run: bool) -> StageResult:
    bt = run_backtest(market, config, weights=weight_plan)
    last_t = len(market.dates) - 1
    last_day = market.dates[last_t].date()
    orders = _orders_frame(bt.state.pending if config.execution.fill_price == "next_open" else [], market, last_t)
    curve = bt.equity_curve
    summary = {
        "first_date": str(market.dates[0].date()), "last_date": str(last_day),
        "final_equity": float(curve["equity"].iat[-1]), "total_return": float(curve["equity"].iat[-1] / config.execution.initial_cash - 1),
        "trades": len(bt.trade_log), "open_positions": len(bt.state.holdings), "orders_next_session": len(orders),
    }
    if dry_run:
        _print_orders(orders, last_day)
        return StageResult("trading", {}, {"trade_log": len(bt.trade_log)}, summary=summary)
    run.write(bt.trade_log, "trade_log.csv", TradeLogSchema)
    run.write(bt.allocation_history, "allocation_history.csv", AllocationHistorySchema)
    run.write(bt.positions, "positions.parquet", PositionsSchema)
    run.write(curve, "equity_curve.parquet", EquityCurveSchema)
    run.write(orders, f"orders_{last_day.isoformat()}.csv", OrdersSchema)
    run.write_json(to_snapshot(bt.state, market, last_t, config), f"portfolio_{last_day.isoformat()}.json", PortfolioSnapshot)
    log.info("Backtest %s..%s: final equity %.2f (%+.2f%%), %d trades, %d open positions", summary["first_date"],
             summary["last_date"], summary["final_equity"], 100 * summary["total_return"], summary["trades"], summary["open_positions"])
    return StageResult("trading", {}, {"trade_log": len(bt.trade_log), "positions": len(bt.positions),
                                       "equity_curve": len(curve), "orders": len(orders)}, summary=summary)


def _daily(run: StageRun, market, config: TrendflowConfig, weight_plan, as_of_date: date, portfolio, fresh: bool,
           dry_run: bool, out_dir: Path) -> StageResult:
    t = market.index_of(pd.Timestamp(as_of_date))
    if fresh:
        if portfolio is not None:
            raise SnapshotError("--fresh and --portfolio contradict each other: give one")
        state = fresh_state(config)
    else:
        if t == 0:
            raise SnapshotError(f"{as_of_date} is the first day in the data: there is no previous snapshot; use --fresh")
        previous = market.dates[t - 1].date()
        path = Path(portfolio) if portfolio is not None else out_dir / f"portfolio_{previous.isoformat()}.json"
        snapshot = _read_snapshot(run, path)
        if snapshot.as_of_date != previous:
            raise SnapshotError(f"{path} is as of {snapshot.as_of_date}, but the trading day before {as_of_date} is "
                                f"{previous}: run the missing days first, or start with --fresh")
        state = from_snapshot(snapshot, market, config, str(path))
    if weight_plan is None:
        record = step(state, market, t, config)
    else:
        record = step(state, market, t, config, weights_mode=True, target_weights_today=weight_plan.get(t))
    orders = _orders_frame(record.orders, market, t)
    tag = as_of_date.isoformat()
    summary = {"as_of_date": tag, "orders": len(orders), "fills_today": len(record.fills), "equity": record.equity,
               "cash": record.cash, "positions": len(state.holdings),
               "unfilled_today": [market.symbols[o.symbol] for o in record.unfilled]}
    if record.unfilled:
        log.warning("%d order(s) could not be filled on %s (no price): %s", len(record.unfilled), tag, summary["unfilled_today"])
    if dry_run:
        _print_orders(orders, as_of_date)
        return StageResult("trading", {}, {"orders": len(orders)}, summary=summary)
    run.write(orders, f"orders_{tag}.csv", OrdersSchema)
    run.write_json(to_snapshot(state, market, t, config), f"portfolio_{tag}.json", PortfolioSnapshot)
    log.info("Daily run %s: %d fills today, %d orders for the next session, equity %.2f", tag, len(record.fills),
             len(orders), record.equity)
    return StageResult("trading", {}, {"orders": len(orders)}, summary=summary)


def _read_snapshot(run: StageRun, path: Path) -> PortfolioSnapshot:
    try:
        return run.read_json(path, PortfolioSnapshot)
    except ArtifactMissingError:
        raise SnapshotError(f"portfolio snapshot {path} does not exist: give --portfolio FILE, or --fresh to start "
                            "from cash") from None
    except (SchemaError, IntegrityError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged: {exc}") from None


def _orders_frame(orders, market, t: int) -> pd.DataFrame:
    return pd.DataFrame([order_row(o, market, t) for o in orders], columns=ORDER_COLUMNS).astype(
        {"symbol": str, "action": str, "shares": "int64", "reason": str, "signal_strength": float,
         "momentum_score": float, "target_weight": float, "current_price": float, "estimated_value": float})


def _print_orders(orders: pd.DataFrame, day: date) -> None:
    print(f"dry run -- orders decided at the close of {day} (nothing written):")
    print(orders.to_string(index=False) if len(orders) else "  (no orders)")
