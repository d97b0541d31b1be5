"""The trading stage as a unit of work: read saved artifacts, run the engine, write validated outputs.

Backtest (no as-of date): fold the engine over every day of prices.parquet. Writes trade_log.csv,
allocation_history.csv, positions.parquet, equity_curve.parquet (+ csv twins), and the last day's
orders_{D}.csv + portfolio_{D}.json so daily runs can carry on from it.

Daily run (as-of date D): one engine step from portfolio_{D-1}.json (D-1 = the trading day before D
in prices.parquet), or from cash with `fresh`. The step fills the snapshot's pending orders (decided
at the close of D-1) at D's open, marks to D's close and decides. Writes
- orders_{D}.csv: the orders standing after the close of D -- decided at that close from D's
  signals (plus any sell carried over a suspension) -- to be filled at the open of the next session
  (fill_price = next_open); with fill_price = close they were filled at D's close already;
- portfolio_{D}.json: the state after the close of D, with those orders as pending_orders.
These are exactly the backtest's orders of day D and its state after D (the parity test proves it).

`dry_run` reads the same inputs, prints the orders and writes nothing (not even the manifest).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from schemas.live import ReconcileSchema
from schemas.prices import prices_subset_schema
from schemas.signals import SignalsSchema
from schemas.trading import (
    AllocationHistorySchema,
    EquityCurveSchema,
    OrdersSchema,
    PortfolioSnapshot,
    PositionsSchema,
    TradeLogSchema,
)
from stages.common.artifacts import StageRun, read_artifact, stage_run
from stages.common.errors import ConfigError, DataError, SnapshotError
from stages.common.folder_lock import writing
from stages.common.lineage import Lineage
from stages.common.stage import StageResult
from stages.trading.backtest import ORDER_COLUMNS, order_row, orders_frame, run_backtest
from stages.trading.book import MATCH, execution_db, record_step_fills, settle_and_adopt
from stages.trading.execution.notify import AuditLog, Notifier
from stages.trading.execution.store import ExecutionStore
from stages.trading.live import LIVE_ARTIFACTS, append_day, live_rows
from stages.trading.engine import decide_by_signals, decide_by_weights, fresh_state, step
from stages.trading.rules import data_ended_hits
from stages.trading.market import SIGNAL_COLUMNS_READ, build_market, price_columns_read
from stages.trading.legacy import read_any_snapshot
from stages.trading.snapshot import from_snapshot, to_snapshot
from stages.trading.weights import load_weights_file, validate_weights

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
    allow_stale: bool = False,
    accept_edited_snapshot: bool = False,
) -> StageResult:
    t0 = time.perf_counter()
    if as_of_date is None and (fresh or portfolio is not None):
        raise ConfigError("--portfolio and --fresh are for a daily run: give --as-of-date too")
    if fresh and portfolio is not None:
        raise ConfigError("--fresh and --portfolio contradict each other: give one")
    out_dir = Path(out_dir)
    in_dir = Path(in_dir) if in_dir is not None else out_dir
    if dry_run:
        result = _run(config, in_dir, out_dir, None, weights, as_of_date, portfolio, fresh, allow_stale,
                      accept_edited_snapshot)
    else:
        with stage_run("trading", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins,
                       lineage=Lineage("trading", config)) as run:
            result = _run(config, in_dir, out_dir, run, weights, as_of_date, portfolio, fresh, allow_stale,
                          accept_edited_snapshot)
        result.outputs = dict(run.written)
    result.seconds = time.perf_counter() - t0
    log.info(result.log_line())
    return result


def _run(config: TrendflowConfig, in_dir: Path, out_dir: Path, run: StageRun | None, weights, as_of_date, portfolio,
         fresh: bool, allow_stale: bool = False, accept_edited_snapshot: bool = False) -> StageResult:
    read: Callable = run.read if run is not None else _dry_run_reader(config)
    price_columns = price_columns_read(config)
    prices = read(in_dir / "prices.parquet", prices_subset_schema(price_columns), columns=price_columns)
    signals_path = in_dir / "signals_output.parquet"
    signals = read(signals_path, SignalsSchema, columns=SIGNAL_COLUMNS_READ) if weights is None or signals_path.exists() else None
    weights_frame = None
    if weights is not None:
        weights_frame = load_weights_file(weights)
        if run is not None:
            run.record_input(Path(weights))
    source = str(weights) if weights is not None else "weights"
    if as_of_date is None:
        return _backtest(run, prices, signals, weights_frame, source, config)
    return _daily(run, prices, signals, weights_frame, source, config, as_of_date, portfolio, fresh, out_dir, allow_stale,
                  accept_edited_snapshot)


def _warn_if_no_lot_is_affordable(prices: pd.DataFrame, config: TrendflowConfig, cash: float | None = None,
                                   what: str = "the backtest made no trades") -> None:
    """A run without a single fill because the account cannot pay for one lot of anything runs
    to the end (an all-cash equity curve is a valid answer) and says why."""
    lot = config.execution.lot_size
    cash, source = (config.execution.initial_cash, "execution.initial_cash") if cash is None else (cash, "cash")
    cheapest = prices.loc[prices["close"].idxmin()] if len(prices) else None
    if cheapest is not None and cheapest["close"] * lot > cash:
        log.warning("account too small: %s %.2f cannot buy one lot (execution.lot_size %d shares) of any symbol; the "
                    "cheapest lot, %s on %s, costs %.2f: %s", source, cash, lot, cheapest["symbol"],
                    pd.Timestamp(cheapest["date"]).date(), cheapest["close"] * lot, what)


def _dry_run_reader(config: TrendflowConfig) -> Callable:
    """read_artifact with the lineage check a StageRun makes (a dry run writes nothing, not even the manifest)."""
    lineage = Lineage("trading", config)

    def read(path: Path, schema, columns: list[str] | None = None) -> pd.DataFrame:
        lineage.check_input(path)
        return read_artifact(path, schema, columns=columns)

    return read


def _backtest(run: StageRun | None, prices, signals, weights_frame, source: str, config: TrendflowConfig) -> StageResult:
    bt = run_backtest(signals, prices, config, weights=weights_frame, weights_source=source)
    if bt.trade_log.empty:
        _warn_if_no_lot_is_affordable(prices, config)
    market, last_t = bt.market, len(bt.market.dates) - 1
    last_day = market.dates[last_t].date()
    orders = bt.orders[bt.orders["date"] == market.dates[last_t]].drop(columns="date").reset_index(drop=True)
    curve = bt.equity_curve
    summary = {
        "mode": bt.mode, "first_date": str(market.dates[0].date()), "last_date": str(last_day),
        "final_equity": float(curve["equity"].iat[-1]),
        "total_return": float(curve["equity"].iat[-1] / config.execution.initial_cash - 1.0),
        "fills": len(bt.trade_log), "open_positions": int(bt.state.held.sum()), "orders_next_session": len(orders),
        "blocked_or_resized": bt.blocked,
    }
    log.info("Backtest %s..%s (%s mode): final equity %.2f (%+.2f%%), %d fills, %d open positions", summary["first_date"],
             summary["last_date"], bt.mode, summary["final_equity"], 100 * summary["total_return"], summary["fills"],
             summary["open_positions"])
    log.info("Orders not filled in full, by reason (a waiting sell counts each session): %s",
             ", ".join(f"{k} {v}" for k, v in bt.blocked.items()) or "none")
    rows = {"trade_log": len(bt.trade_log), "positions": len(bt.positions), "equity_curve": len(curve), "orders": len(orders)}
    if run is None:
        _print_orders(orders, last_day, config)
        return StageResult("trading", {}, rows, summary=summary)
    run.write(bt.trade_log, "trade_log.csv", TradeLogSchema)
    run.write(bt.allocation_history, "allocation_history.csv", AllocationHistorySchema)
    run.write(bt.positions, "positions.parquet", PositionsSchema)
    run.write(curve, "equity_curve.parquet", EquityCurveSchema)
    run.write(orders, f"orders_{last_day.isoformat()}.csv", OrdersSchema)
    run.write_json(to_snapshot(bt.state, market, last_t, config, bt.mode), f"portfolio_{last_day.isoformat()}.json",
                   PortfolioSnapshot)
    run.retire_dated_after(last_day, ("orders", "portfolio"))
    return StageResult("trading", {}, rows, summary=summary)


def _daily(run: StageRun | None, prices, signals, weights_frame, source: str, config: TrendflowConfig,
           as_of_date: date, portfolio, fresh: bool, out_dir: Path, allow_stale: bool = False,
           accept_edited_snapshot: bool = False) -> StageResult:
    market = build_market(prices, signals, config)
    plan = validate_weights(weights_frame, market, source) if weights_frame is not None else None
    mode = "weights" if plan is not None else "signals"
    t = market.index_of(as_of_date)
    if fresh:
        state = fresh_state(len(market.symbols), config)
        log.info("Daily run %s starts from cash (--fresh): %.2f", as_of_date, state.cash)
    else:
        if t == 0:
            raise SnapshotError(f"{as_of_date} is the first trading day in prices.parquet: there is no previous "
                                "snapshot to resume; start with --fresh")
        previous = market.dates[t - 1].date()
        path = Path(portfolio) if portfolio is not None else out_dir / f"portfolio_{previous.isoformat()}.json"
        snapshot = read_any_snapshot(path, previous, config, prices,  # an older signal_pipeline one is converted
                                     accept_edited=accept_edited_snapshot)
        if run is not None:
            run.record_input(path)
        state = from_snapshot(snapshot, market, config, mode, str(path))
    if not allow_stale:
        check_fresh_holdings(state, market, t)
    model = copy.deepcopy(state)
    settlement = None
    if not fresh and execution_db(out_dir).exists():
        _refuse_data_ended_sales_at_a_real_broker(out_dir, state, market, t, config)
        settlement = _settle(out_dir, state, market, t, config, commit=run is not None)
        state = settlement.executed
        log.info("Daily run %s resumes from the executed book in %s: cash %.2f, %d positions", as_of_date,
                 execution_db(out_dir), state.cash, int(state.held.sum()))
    opening_equity = state.equity() if settlement is None else settlement.before.equity()
    decide = decide_by_weights(plan.get(t)) if plan is not None else decide_by_signals
    day, day_index = market.day(t), state.day_index
    if settlement is not None:  # the settlement applied the day's corporate actions before the open already
        day = dataclasses.replace(day, dividend=None, split=None)
    record = step(state, day, config, decide)
    if settlement is not None and record.fills and run is not None:
        _book_step_fills(out_dir, record.fills, market, t, config)
    orders = orders_frame([order_row(o, market) for o in record.orders], ORDER_COLUMNS)
    if orders.empty and not state.held.any():
        _warn_if_no_lot_is_affordable(prices[prices["date"] == pd.Timestamp(as_of_date)], config, record.cash,
                                      f"no orders for {as_of_date}")
    tag = as_of_date.isoformat()
    summary = {
        "mode": mode, "as_of_date": tag, "fills_today": len(record.fills), "orders": len(orders), "equity": record.equity,
        "cash": record.cash, "positions": int(state.held.sum()), "breaker_on": record.breaker_on,
        "unfilled_today": [f"{o.side} {o.shares} {market.symbols[o.symbol]} ({o.note})" for o in record.unfilled],
        "waiting_sells": [f"{o.side} {o.shares} {market.symbols[o.symbol]} ({o.note})" for o in record.waiting],
        "order_list": [f"{o.side} {o.shares} {market.symbols[o.symbol]}" for o in record.orders],
        "blocked_or_resized": record.blocked,
    }
    if not record.orders:
        summary["no_orders_reason"] = why_no_orders(day, day_index, config, weights_today=plan.get(t) if plan else None,
                                                    weights_mode=plan is not None)
        log.info("No orders after the close of %s: %s", tag, summary["no_orders_reason"])
    for f in record.fills:
        log.info("filled %s: %s %d %s at %.4f (commission %.2f, %s)", tag, f.side, f.quantity, market.symbols[f.symbol],
                 f.price, f.commission, f.reason)
    if record.unfilled:
        log.warning("%d order(s) not filled in full on %s: %s", len(record.unfilled), tag,
                    summary["unfilled_today"])
    if record.waiting:
        log.warning("%d sell(s) not filled in full on %s wait for the next session: %s", len(record.waiting), tag,
                    summary["waiting_sells"])
    log.info("Daily run %s: %d fills, %d orders for the next session, equity %.2f", tag, len(record.fills), len(orders),
             record.equity)
    if run is None:
        _print_orders(orders, as_of_date, config)
        return StageResult("trading", {}, {"orders": len(orders)}, summary=summary)
    run.write(orders, f"orders_{tag}.csv", OrdersSchema)
    run.write_json(to_snapshot(state, market, t, config, mode), f"portfolio_{tag}.json", PortfolioSnapshot)
    if settlement is not None:
        run.write(settlement.reconcile, f"reconcile_{tag}.csv", ReconcileSchema)
        _warn_on_drift(settlement, record.equity, config, tag, out_dir)
        summary["drift"] = settlement.drift
    live = live_rows(market, t, state, record, model, opening_equity, settlement)
    for name, schema in LIVE_ARTIFACTS.items():
        append_day(run, out_dir, name, live[name], schema, market.dates[t])
    return StageResult("trading", {}, {"orders": len(orders)}, summary=summary)


def _settle(out_dir: Path, state, market, t: int, config: TrendflowConfig, commit: bool):
    """Settle the paper broker and adopt the executed book, holding the execution folder's write lock
    (`trendflow execute` holds it too); the settlement's audit records go to audit.jsonl."""
    db = execution_db(out_dir)
    with writing(db.parent) if commit else contextlib.nullcontext():
        store = ExecutionStore(db, config.execution.initial_cash, create=False)
        try:
            settlement = settle_and_adopt(store, state, market, t, config, commit=commit)
            if commit:
                AuditLog(db.parent / "audit.jsonl").export(store)
        finally:
            store.close()
    return settlement


def _book_step_fills(out_dir: Path, fills, market, t: int, config: TrendflowConfig) -> None:
    """The step's own fills on the executed book (data_ended sales at the close) into the database."""
    db = execution_db(out_dir)
    with writing(db.parent):
        store = ExecutionStore(db, config.execution.initial_cash, create=False)
        try:
            record_step_fills(store, fills, market, t)
            AuditLog(db.parent / "audit.jsonl").export(store)
        finally:
            store.close()


def _refuse_data_ended_sales_at_a_real_broker(out_dir: Path, model, market, t: int, config: TrendflowConfig) -> None:
    """The day step sells a holding whose data ended at its last close (`rules.data_ended_hits`, reached
    with --allow-stale). A paper account books that sale; an account holding a real broker's book
    cannot: the broker never made it, and its next sync would bring the holding back. So, on such an
    account, the session is settled without recording anything first, and if its executed book holds
    such a symbol the run stops naming it, before the settlement or any artifact is written (a rerun
    after the user sold it at the broker and synced then starts from the synced book)."""
    store = ExecutionStore(execution_db(out_dir), config.execution.initial_cash, create=False)
    try:
        broker = store.book_broker()
        if broker is None:
            return
        executed = settle_and_adopt(store, model, market, t, config, commit=False).executed
    finally:
        store.close()
    day = market.day(t)
    ended = np.flatnonzero(executed.held & data_ended_hits(day.sessions_without_price, config))
    if not len(ended):
        return
    named = ", ".join(f"SELL {int(executed.shares[i])} {market.symbols[i]} (data_ended)" for i in ended)
    raise DataError(f"{day.date.date()}: the model would {named} at the last close, a fill {broker} never makes (their "
                    f"price data ended): sell them at {broker}, then `trendflow reconcile --sync {broker} --out {out_dir}`, "
                    f"and run {day.date.date()} again")


def _warn_on_drift(settlement, equity: float, config: TrendflowConfig, tag: str, out_dir: Path) -> None:
    """A WARNING (log and webhook) when the executed book drifted beyond `live.drift_tolerance`."""
    limit = config.live.drift_tolerance * equity
    if settlement.drift <= limit:
        return
    differing = settlement.reconcile[settlement.reconcile["reason"] != MATCH]
    detail = "; ".join(f"{r.symbol}: {r.reason}" for r in differing.head(5).itertuples())
    message = (f"{tag}: the executed book drifted {settlement.drift:,.2f} from the model's (tolerance {limit:,.2f}); "
               f"see {out_dir / f'reconcile_{tag}.csv'}: {detail}")
    log.warning(message)
    Notifier().warning(message)


def check_fresh_holdings(state, market, t: int) -> None:
    """A daily run decides at the close of D: a holding without a price row on D is stale data (files not
    updated, or a suspension). An error naming them (skipped with --allow-stale)."""
    stale = np.flatnonzero(state.held & ~market.tradable[t])
    if not len(stale):
        return
    last = [market.dates[t - int(market.sessions_without_price[t, i])] if market.sessions_without_price[t, i] <= t else None
            for i in stale]
    named = ", ".join(f"{market.symbols[i]} (last price {d.date() if d is not None else 'never'})" for i, d in zip(stale, last))
    raise DataError(f"daily run {market.dates[t].date()}: {len(stale)} holding(s) have no price on that date -- stale data: "
                    f"{named}. Update the price files, or run with --allow-stale to carry their last close")


def why_no_orders(day, day_index: int, config: TrendflowConfig, *, weights_mode: bool = False,
                  weights_today=None) -> str:
    """Why a daily step decided no orders, in the order the day step applies its rules (risk exits
    run every day, so reaching here means none fired)."""
    from stages.trading.rules import is_rebalance_day

    if weights_mode:
        return ("no row of target weights for this date" if weights_today is None
                else "every holding is already at its target weight (whole lots)")
    if not is_rebalance_day(day_index, config):
        wait = config.scoring.rebalance_frequency - day_index % config.scoring.rebalance_frequency
        return f"not a rebalance day (the next is in {wait} session(s)) and no holding hit a risk exit"
    if day.breaker_on:
        return (f"the market circuit breaker is on (market {day.market_drawdown:.1%} from its peak): no new buys, "
                "and no holding hit a risk exit")
    if not (day.tradable & (day.trend_signal == 1)).any():
        return "no symbol has a buy signal (trend signal 1) today, and no holding hit a risk exit"
    return ("the holdings are already at their targets (within position_sizing.rebalance_threshold) and no "
            "candidate with a buy signal made the selection")


def _print_orders(orders: pd.DataFrame, day: date, config: TrendflowConfig) -> None:
    when = "to fill at the next session's open" if config.execution.fill_price == "next_open" else "filled at that close"
    print(f"dry run -- orders decided at the close of {day}, {when} (nothing written):")
    print(orders.to_string(index=False) if len(orders) else "  (no orders)")
