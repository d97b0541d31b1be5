"""portfolio_{D}.json: the engine state after the close of D, saved so the next day's run resumes
exactly where the backtest (or yesterday's run) left off.

A snapshot is refused -- SnapshotError, never a silent empty portfolio -- when it is missing,
unreadable, of another format version, fails its schema or its own consistency checks, was saved
for another day than the trading day before the run's date, under other trading settings or in
the other mode, or holds symbols the prices do not know. `--fresh` starts from cash instead.
"""
from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.config import TRADING_KEYS, TrendflowConfig
from schemas.trading import SNAPSHOT_VERSION, Holding, PendingOrder, PortfolioSnapshot, SnapshotMetadata
from stages.common.artifacts import read_json_artifact, verify_against_manifest
from stages.common.errors import ArtifactMissingError, IntegrityError, SchemaError, SnapshotError

log = logging.getLogger(__name__)
from stages.trading.engine import Order, PortfolioState, empty_state
from stages.trading.market import Market


def trading_config_hash(config: TrendflowConfig) -> str:
    """sha256 of the TRADING_KEYS values: a snapshot only resumes under the same ones."""
    return config.parameters_hash(TRADING_KEYS)


def to_snapshot(state: PortfolioState, market: Market, t: int, config: TrendflowConfig, mode: str) -> PortfolioSnapshot:
    """The state after the close of day t (its pending orders are the ones decided at that close)."""
    syms = market.symbols
    held = np.flatnonzero(state.held)
    traded = np.flatnonzero(market.tradable[t])
    return PortfolioSnapshot(
        version=SNAPSHOT_VERSION,
        as_of_date=market.dates[t].date(),
        trading_day_index=state.day_index,
        holdings={str(syms[i]): Holding(
            shares=int(state.shares[i]), entry_date=state.entry_date[i].item(), entry_price=float(state.entry_price[i]),
            highest_close=float(state.highest_close[i]), stop_level=float(state.stop_level[i]),
            last_close=float(state.last_close[i]), days_held=int(state.days_held[i]), cluster=int(state.cluster[i]),
        ) for i in held},
        pending_orders=[PendingOrder(
            symbol=str(syms[o.symbol]), side=o.side, shares=o.shares, reason=o.reason,
            signal_strength=_none_if_nan(o.signal_strength), momentum_score=_none_if_nan(o.momentum_score),
            target_weight=o.target_weight, reference_price=o.reference_price, decision_date=o.decided.date(),
        ) for o in state.pending],
        cash=state.cash,
        total_value=state.equity(),
        peak_equity=state.peak_equity,
        breaker_on=state.breaker_on,
        market_drawdown=state.market_drawdown,
        cluster_assignments={str(syms[i]): int(market.cluster[t, i]) for i in traded},
        risk_exits={str(syms[i]): int(state.exit_day[i]) for i in np.flatnonzero(
            state.day_index - state.exit_day <= config.risk.reentry_cooldown_days)},
        metadata=SnapshotMetadata(trading_config_hash=trading_config_hash(config), mode=mode,
                                  fill_price=config.execution.fill_price, lot_size=config.execution.lot_size),
    )


def from_snapshot(snapshot: PortfolioSnapshot, market: Market, config: TrendflowConfig, mode: str,
                  source: str) -> PortfolioState:
    """Rebuild the engine state; refuse a snapshot made under other settings or for unknown symbols."""
    meta = snapshot.metadata
    if meta.trading_config_hash != trading_config_hash(config):
        raise SnapshotError(f"{source} was saved under different trading settings ({', '.join(TRADING_KEYS)}): "
                            "rerun the backtest with this config, or start again with --fresh")
    if meta.mode != mode:
        raise SnapshotError(f"{source} was saved in {meta.mode} mode, this run is in {mode} mode "
                            "(--weights decides the mode): use the matching mode or --fresh")
    index = market.symbol_index()
    unknown = sorted({*snapshot.holdings, *(o.symbol for o in snapshot.pending_orders), *snapshot.risk_exits} - set(index))
    if unknown:
        raise SnapshotError(f"{source} holds symbols that are not in prices.parquet: {unknown[:10]}")
    state = empty_state(len(market.symbols), snapshot.cash)
    for symbol, h in snapshot.holdings.items():
        i = index[symbol]
        state.shares[i] = h.shares
        state.entry_date[i] = np.datetime64(h.entry_date, "D")
        state.entry_price[i], state.highest_close[i], state.stop_level[i] = h.entry_price, h.highest_close, h.stop_level
        state.last_close[i], state.days_held[i], state.cluster[i] = h.last_close, h.days_held, h.cluster
    state.pending = [Order(
        symbol=index[o.symbol], side=o.side, shares=o.shares, reason=o.reason,
        signal_strength=_nan_if_none(o.signal_strength), momentum_score=_nan_if_none(o.momentum_score),
        target_weight=o.target_weight, reference_price=o.reference_price, decided=pd.Timestamp(o.decision_date),
    ) for o in snapshot.pending_orders]
    for symbol, exit_day in snapshot.risk_exits.items():
        state.exit_day[index[symbol]] = exit_day
    state.day_index = snapshot.trading_day_index
    state.peak_equity = snapshot.peak_equity
    state.breaker_on, state.market_drawdown = snapshot.breaker_on, snapshot.market_drawdown
    return state


def read_snapshot(path: Path, expected_date: date, *, verify_hash: bool = True,
                  accept_edited: bool = False) -> PortfolioSnapshot:
    """Load and check a snapshot file for a run whose previous trading day is `expected_date`.

    The file must still have the sha256 its run recorded in manifest.json (a hand edit -- cash
    changed, a holding added -- is refused naming the file); `accept_edited` takes an edited one
    anyway and records that in the log."""
    if not path.exists():
        raise SnapshotError(f"portfolio snapshot {path} does not exist: give --portfolio FILE (the snapshot of "
                            f"{expected_date}), or --fresh to start from cash")
    if path.is_dir():
        raise SnapshotError(f"portfolio snapshot {path} is a folder, not a snapshot file (give --portfolio FILE)")
    try:
        raw = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged (not valid JSON: {exc})") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"portfolio snapshot {path} has format version {version!r}; this trendflow reads version "
                            f"{SNAPSHOT_VERSION}: rerun the backtest to write a current snapshot, or use --fresh")
    if verify_hash:
        try:
            verify_against_manifest(path)
        except IntegrityError as exc:
            if not accept_edited:
                raise SnapshotError(f"portfolio snapshot {path} is damaged: {exc} "
                                    "(to resume from it as edited: --accept-edited-snapshot, recorded in the log)") from None
            log.warning("--accept-edited-snapshot: resuming from the edited portfolio snapshot %s (%s)", path, exc)
    try:
        snapshot = read_json_artifact(path, PortfolioSnapshot, verify_hash=False)
    except (SchemaError, IntegrityError, ArtifactMissingError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged: {exc}") from None
    if snapshot.as_of_date != expected_date:
        raise SnapshotError(f"portfolio snapshot {path} is as of {snapshot.as_of_date}, but the trading day before this "
                            f"run is {expected_date}: run the missing days first, or start again with --fresh")
    return snapshot


def _none_if_nan(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)
