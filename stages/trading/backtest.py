"""The backtest (the day step folded over history), the daily run (one step from a snapshot), and
the tables both produce."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from schemas.trading import Holding, PendingOrder, PortfolioSnapshot
from stages.common.errors import SnapshotError
from stages.trading.engine import DayRecord, Order, PortfolioState, fresh_state, step
from stages.trading.market import Market
from stages.trading.rules import Position

ORDER_COLUMNS = ["symbol", "action", "shares", "reason", "signal_strength", "momentum_score", "target_weight",
                 "current_price", "estimated_value"]


@dataclass
class BacktestResult:
    trade_log: pd.DataFrame
    allocation_history: pd.DataFrame
    positions: pd.DataFrame
    equity_curve: pd.DataFrame
    orders: pd.DataFrame  # every decided order, with the date of the close it was decided at
    state: PortfolioState
    market: Market


def trading_config_hash(config: TrendflowConfig) -> str:
    """Hash of every setting that changes trading decisions; a snapshot only resumes under the same one."""
    dumped = config.model_dump(mode="json")
    relevant = {k: dumped[k] for k in ("scoring", "risk", "position_sizing", "execution")}
    relevant["max_positions_per_cluster"] = dumped["clustering"]["max_positions_per_cluster"]
    relevant["market_index_symbol"] = dumped["data"]["market_index_symbol"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def run_backtest(market: Market, config: TrendflowConfig, *, weights: dict[int, dict[int, float]] | None = None,
                 start: int = 0, end: int | None = None, state: PortfolioState | None = None) -> BacktestResult:
    """Fold the day step over days start..end-1 (weights: day index -> {symbol index: weight})."""
    state = state or fresh_state(config)
    end = len(market.dates) if end is None else end
    records = []
    positions_rows = []
    for t in range(start, end):
        if weights is None:
            record = step(state, market, t, config)
        else:
            record = step(state, market, t, config, weights_mode=True, target_weights_today=weights.get(t))
        records.append(record)
        positions_rows.extend(
            (t, idx, p.shares, p.last_close, p.entry_date, p.entry_price, p.highest_close, p.cluster)
            for idx, p in sorted(state.holdings.items())
        )
    return assemble(records, positions_rows, state, market, config)


def assemble(records: list[DayRecord], positions_rows: list, state: PortfolioState, market: Market,
             config: TrendflowConfig) -> BacktestResult:
    dates = market.dates
    syms = market.symbols
    trade_log = pd.DataFrame(
        [(dates[r.t], syms[f.symbol], f.side, f.quantity, f.price, f.commission, f.slippage, f.reason)
         for r in records for f in r.fills],
        columns=["date", "symbol", "side", "quantity", "price", "commission", "slippage", "reason"],
    )
    equity = np.array([r.equity for r in records])
    prev = np.concatenate([[config.execution.initial_cash], equity[:-1]]) if len(records) else equity
    curve = pd.DataFrame({
        "date": [dates[r.t] for r in records],
        "equity": equity,
        "cash": [r.cash for r in records],
        "positions_value": [r.positions_value for r in records],
        "exposure": [r.positions_value / r.equity for r in records],
        "n_positions": [0] * len(records),
        "daily_return": equity / prev - 1.0 if len(records) else [],
        "turnover": [r.traded_value / r.equity for r in records],
        "costs": [r.costs for r in records],
        "breaker_on": [r.breaker_on for r in records],
    })
    positions = _positions_table(positions_rows, market)
    if len(positions):
        counts = positions.groupby("date").size()
        curve["n_positions"] = curve["date"].map(counts).fillna(0).astype(int).to_numpy()
        eq_by_date = pd.Series(curve["equity"].to_numpy(), index=curve["date"])
        positions["weight"] = positions["market_value"] / positions["date"].map(eq_by_date).to_numpy()
    else:
        positions["weight"] = pd.Series(dtype=float)
    positions = positions[["date", "symbol", "shares", "close", "market_value", "weight", "entry_date", "entry_price",
                           "highest_close", "cluster"]]
    orders = pd.DataFrame(
        [(dates[r.t], *order_row(o, market, r.t)) for r in records for o in r.orders],
        columns=["date", *ORDER_COLUMNS],
    )
    return BacktestResult(trade_log=trade_log, allocation_history=allocation_table(positions, curve, syms),
                          positions=positions, equity_curve=curve, orders=orders, state=state, market=market)


def _positions_table(rows: list, market: Market) -> pd.DataFrame:
    return pd.DataFrame(
        [(market.dates[t], market.symbols[idx], shares, close, shares * close, entry_date, entry_price, highest, cluster)
         for t, idx, shares, close, entry_date, entry_price, highest, cluster in rows],
        columns=["date", "symbol", "shares", "close", "market_value", "entry_date", "entry_price", "highest_close", "cluster"],
    ).astype({"entry_date": "datetime64[ns]"})


def allocation_table(positions: pd.DataFrame, curve: pd.DataFrame, symbols: np.ndarray) -> pd.DataFrame:
    """Wide: date x (symbols held at some point) in percent of equity, plus Cash; rows sum to 100."""
    if len(positions):
        wide = positions.pivot(index="date", columns="symbol", values="weight").reindex(curve["date"]).fillna(0.0) * 100.0
    else:
        wide = pd.DataFrame(index=pd.DatetimeIndex(curve["date"]))
    wide = wide.reindex(columns=sorted(wide.columns))
    wide["Cash"] = 100.0 - wide.sum(axis=1)
    wide.index.name = "date"
    wide.columns.name = None
    return wide.reset_index()


def order_row(order: Order, market: Market, t: int) -> tuple:
    return (market.symbols[order.symbol], order.side, order.shares, order.reason, order.signal_strength,
            order.momentum_score, order.target_weight, order.reference_price, order.shares * order.reference_price)


# --------------------------------------------------------------------------- snapshots
def to_snapshot(state: PortfolioState, market: Market, t: int, config: TrendflowConfig) -> PortfolioSnapshot:
    syms = market.symbols
    clusters = {syms[i]: int(c) for i, c in enumerate(np.nan_to_num(market.cluster[t], nan=-1)) if market.tradable[t, i]}
    return PortfolioSnapshot(
        as_of_date=market.dates[t].date(),
        trading_day_index=state.day_index,
        holdings={syms[i]: Holding(shares=p.shares, entry_date=p.entry_date, entry_price=p.entry_price,
                                   highest_close=p.highest_close, stop_level=p.stop_level, last_close=p.last_close,
                                   days_held=p.days_held, cluster=p.cluster) for i, p in sorted(state.holdings.items())},
        pending_orders=[PendingOrder(symbol=syms[o.symbol], side=o.side, shares=o.shares, reason=o.reason,
                                     signal_strength=_finite_or_none(o.signal_strength),
                                     momentum_score=_finite_or_none(o.momentum_score),
                                     target_weight=o.target_weight, reference_price=o.reference_price)
                        for o in state.pending],
        cash=state.cash,
        total_value=state.equity(),
        peak_equity=state.peak_equity,
        cluster_assignments=clusters,
        metadata={"trading_config_hash": trading_config_hash(config), "fill_price": config.execution.fill_price},
    )


def from_snapshot(snapshot: PortfolioSnapshot, market: Market, config: TrendflowConfig, source: str) -> PortfolioState:
    """Rebuild the engine state; refuse a snapshot made under other trading settings or for unknown symbols."""
    wanted = trading_config_hash(config)
    if snapshot.metadata.get("trading_config_hash") != wanted:
        raise SnapshotError(f"{source} was made with different trading settings (scoring/risk/sizing/execution); "
                            "rerun the backtest or start again with --fresh")
    index = {s: i for i, s in enumerate(market.symbols)}
    unknown = sorted(set(snapshot.holdings) | {o.symbol for o in snapshot.pending_orders} - set(index))
    unknown = [s for s in unknown if s not in index]
    if unknown:
        raise SnapshotError(f"{source}: symbols {unknown} are not in prices.parquet")
    holdings = {index[s]: Position(shares=h.shares, entry_date=h.entry_date, entry_price=h.entry_price,
                                   highest_close=h.highest_close, stop_level=h.stop_level, last_close=h.last_close,
                                   days_held=h.days_held, cluster=h.cluster) for s, h in snapshot.holdings.items()}
    pending = [Order(symbol=index[o.symbol], side=o.side, shares=o.shares, reason=o.reason,
                     signal_strength=_nan_if_none(o.signal_strength), momentum_score=_nan_if_none(o.momentum_score),
                     target_weight=o.target_weight, reference_price=o.reference_price) for o in snapshot.pending_orders]
    return PortfolioState(cash=snapshot.cash, holdings=holdings, pending=pending,
                          day_index=snapshot.trading_day_index, peak_equity=snapshot.peak_equity)


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)
