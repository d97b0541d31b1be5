"""The backtest: the day step folded over history, and the tables it produces.

`run_backtest(signals, prices, config)` is the public entry point (DataFrames in, DataFrames out);
`fold(market, config)` is the loop itself, over a prepared `Market`, for callers that reuse one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.trading.engine import DayRecord, Order, PortfolioState, decide_by_signals, decide_by_weights, fresh_state, step
from stages.trading.market import Market, build_market
from stages.trading.weights import WeightPlan, validate_weights

ORDER_COLUMNS = ["symbol", "action", "shares", "reason", "signal_strength", "momentum_score", "target_weight",
                 "current_price", "estimated_value"]
TRADE_COLUMNS = ["date", "symbol", "side", "quantity", "price", "commission", "slippage", "reason", "decision_date"]
POSITION_COLUMNS = ["date", "symbol", "shares", "close", "market_value", "weight", "entry_date", "entry_price",
                    "highest_close", "cluster", "stop_level", "days_held"]


@dataclass
class BacktestResult:
    """The four history tables (schemas/trading.py), every order decided (with the date of the close
    it was decided at), the final engine state, and the market it ran on."""

    trade_log: pd.DataFrame
    allocation_history: pd.DataFrame
    positions: pd.DataFrame
    equity_curve: pd.DataFrame
    orders: pd.DataFrame
    state: PortfolioState
    market: Market
    mode: str
    blocked: dict[str, int]
    unfilled: pd.DataFrame


def run_backtest(signals: pd.DataFrame | None, prices: pd.DataFrame, config: TrendflowConfig, *,
                 weights: pd.DataFrame | None = None, weights_source: str = "weights", start: int = 0,
                 end: int | None = None) -> BacktestResult:
    """Trade the signals (or, with `weights`, a wide date x symbol frame of target weights, validated
    before any trading; `weights_source` names it in errors) over the trading days [start, end) of
    `prices`, starting from cash."""
    market = build_market(prices, signals, config)
    plan = validate_weights(weights, market, weights_source) if weights is not None else None
    return fold(market, config, plan=plan, start=start, end=end)


def fold(market: Market, config: TrendflowConfig, *, plan: WeightPlan | None = None, start: int = 0,
         end: int | None = None, state: PortfolioState | None = None,
         after_step: Callable[[PortfolioState, DayRecord], None] | None = None) -> BacktestResult:
    """Step the engine through days [start, end): the backtest. `state` resumes a saved portfolio
    (default: fresh); `after_step` sees the state after each day's close."""
    state = state if state is not None else fresh_state(len(market.symbols), config)
    end = len(market.dates) if end is None else end
    records: list[DayRecord] = []
    held_rows: list[tuple] = []
    for t in range(start, end):
        decide = decide_by_weights(plan.get(t)) if plan is not None else decide_by_signals
        record = step(state, market.day(t), config, decide)
        records.append(record)
        idx = np.flatnonzero(state.held)
        held_rows.append((np.full(len(idx), t), idx, state.shares[idx], state.last_close[idx], state.entry_date[idx],
                          state.entry_price[idx], state.highest_close[idx], state.cluster[idx], state.stop_level[idx],
                          state.days_held[idx]))
        if after_step is not None:
            after_step(state, record)
    return _tables(records, held_rows, state, market, config, "weights" if plan is not None else "signals")


def _tables(records: list[DayRecord], held_rows: list[tuple], state: PortfolioState, market: Market,
            config: TrendflowConfig, mode: str) -> BacktestResult:
    curve = equity_table(records, config)
    positions = positions_table(held_rows, market, curve)
    return BacktestResult(
        trade_log=trade_table(records, market), allocation_history=allocation_table(positions, curve),
        positions=positions, equity_curve=curve, orders=orders_table(records, market), state=state, market=market,
        mode=mode, blocked=blocked_counts(records), unfilled=unfilled_table(records, market),
    )


def unfilled_table(records: list[DayRecord], market: Market) -> pd.DataFrame:
    """Every order not filled in full, per session: the unfilled shares, why (`note`: suspended,
    limit_up, limit_down, volume_cap, t_plus_one, cash, not_held) and whether it waits for the next
    session (sells) or was dropped (buys)."""
    rows = [(r.date, str(market.symbols[o.symbol]), o.side, o.shares, o.reason, o.note, waits, o.decided)
            for r in records for waits, orders in ((False, r.unfilled), (True, r.waiting)) for o in orders]
    return pd.DataFrame(rows, columns=["date", "symbol", "side", "shares", "reason", "note", "waits", "decision_date"])


def blocked_counts(records: list[DayRecord]) -> dict[str, int]:
    """How many orders each reason (suspended, limit_up, limit_down, t_plus_one, volume_cap, cash,
    not_held) kept from filling in full, over the run: a sell waiting several sessions counts once a session."""
    total: dict[str, int] = {}
    for record in records:
        for note, n in record.blocked.items():
            total[note] = total.get(note, 0) + n
    return dict(sorted(total.items()))


def trade_table(records: list[DayRecord], market: Market) -> pd.DataFrame:
    """trade_log.csv: one row per fill, in execution order."""
    rows = [(r.date, market.symbols[f.symbol], f.side, f.quantity, f.price, f.commission, f.slippage, f.reason, f.decided)
            for r in records for f in r.fills]
    frame = pd.DataFrame(rows, columns=TRADE_COLUMNS)
    return frame.astype({"date": "datetime64[ns]", "decision_date": "datetime64[ns]", "symbol": str, "side": str,
                         "quantity": "int64", "price": float, "commission": float, "slippage": float, "reason": str})


def equity_table(records: list[DayRecord], config: TrendflowConfig) -> pd.DataFrame:
    """equity_curve.parquet: closing values of every day."""
    equity = np.array([r.equity for r in records], dtype=float)
    previous = np.concatenate([[config.execution.initial_cash], equity[:-1]])
    positions_value = np.array([r.positions_value for r in records], dtype=float)
    return pd.DataFrame({
        "date": pd.DatetimeIndex([r.date for r in records]),
        "equity": equity,
        "cash": np.array([r.cash for r in records], dtype=float),
        "positions_value": positions_value,
        "exposure": positions_value / equity,
        "n_positions": np.zeros(len(records), dtype=np.int64),
        "daily_return": equity / previous - 1.0,
        "turnover": np.array([r.traded_value for r in records], dtype=float) / equity,
        "costs": np.array([r.costs for r in records], dtype=float),
        "breaker_on": np.array([r.breaker_on for r in records], dtype=bool),
        "market_drawdown": np.array([r.market_drawdown for r in records], dtype=float),
    })


def positions_table(held_rows: list[tuple], market: Market, curve: pd.DataFrame) -> pd.DataFrame:
    """positions.parquet: every holding at every close; fills in the curve's n_positions."""
    columns = [np.concatenate(parts) for parts in zip(*held_rows)] if held_rows else [np.array([], dtype=np.int64)] * 10
    t, idx, shares, close, entry_date, entry_price, highest, cluster, stop, days = columns
    t = t.astype(np.int64)
    equity = curve["equity"].to_numpy()
    first = int(np.searchsorted(market.dates, curve["date"].iloc[0])) if len(curve) else 0
    frame = pd.DataFrame({
        "date": market.dates[t], "symbol": market.symbols[idx.astype(np.int64)].astype(str),
        "shares": shares.astype(np.int64), "close": close.astype(float),
        "market_value": shares * close.astype(float), "weight": shares * close.astype(float) / equity[t - first],
        "entry_date": pd.DatetimeIndex(entry_date.astype("datetime64[D]")).astype("datetime64[ns]"),
        "entry_price": entry_price.astype(float), "highest_close": highest.astype(float),
        "cluster": cluster.astype(np.int64), "stop_level": np.nan_to_num(stop.astype(float)), "days_held": days.astype(np.int64),
    })
    curve["n_positions"] = np.bincount(t - first, minlength=len(curve)).astype(np.int64)
    return frame[POSITION_COLUMNS]


def allocation_table(positions: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    """allocation_history.csv: wide, date x (every symbol held at some point) in percent of equity,
    plus Cash; each row sums to 100."""
    dates = pd.DatetimeIndex(curve["date"], name="date")
    wide = (positions.pivot(index="date", columns="symbol", values="weight").reindex(dates).fillna(0.0) * 100.0
            if len(positions) else pd.DataFrame(index=dates))
    wide = wide.reindex(columns=sorted(wide.columns))
    wide["Cash"] = curve["cash"].to_numpy() / curve["equity"].to_numpy() * 100.0
    wide.columns.name = None
    return wide.reset_index()


def orders_table(records: list[DayRecord], market: Market) -> pd.DataFrame:
    """Every order standing at each close (the daily run's orders_{D}.csv are the rows of date D)."""
    rows = [(r.date, *order_row(o, market)) for r in records for o in r.orders]
    return orders_frame(rows, ["date", *ORDER_COLUMNS])


def orders_frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns).astype(
        {"symbol": str, "action": str, "shares": "int64", "reason": str, "signal_strength": float,
         "momentum_score": float, "target_weight": float, "current_price": float, "estimated_value": float})


def order_row(order: Order, market: Market) -> tuple:
    """An order as a row of orders_{D}.csv (ORDER_COLUMNS); the estimated value rounded to 0.01, as a person reads it."""
    return (str(market.symbols[order.symbol]), order.side, order.shares, order.reason, order.signal_strength,
            order.momentum_score, order.target_weight, order.reference_price, round(order.shares * order.reference_price, 2))
