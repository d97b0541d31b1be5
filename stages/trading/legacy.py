"""Portfolio snapshots in the older design's shape (signal_pipeline's portfolio_{date}.json), read as
trendflow's PortfolioSnapshot: `{as_of_date, holdings: {sym: {shares, cost_basis, entry_date}}, cash,
total_value, cluster_assignments, metadata}`.

`read_any_snapshot` is what a daily run uses for `--portfolio`: trendflow's snapshot as `read_snapshot`
checks it, or an older one converted with a WARNING. A file of neither shape, or an older one that
cannot be converted, is a SnapshotError -- never an empty portfolio.
"""
from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.trading import SNAPSHOT_VERSION, Holding, PortfolioSnapshot, SnapshotMetadata
from stages.common.errors import SnapshotError
from stages.trading.snapshot import read_snapshot, trading_config_hash

log = logging.getLogger(__name__)


def _raw(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"portfolio snapshot {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged (not valid JSON: {exc})") from None


def is_older_snapshot(raw: Any) -> bool:
    return isinstance(raw, dict) and "version" not in raw and {"as_of_date", "holdings", "cash"} <= set(raw)


def read_any_snapshot(path: Path, expected_date: date, config: TrendflowConfig, prices: pd.DataFrame | None,
                      accept_edited: bool = False) -> PortfolioSnapshot:
    """A daily run's starting snapshot from `path`, in either shape, as of `expected_date`."""
    path = Path(path)
    if path.is_dir():
        raise SnapshotError(f"portfolio snapshot {path} is a folder, not a snapshot file (give --portfolio FILE)")
    raw = _raw(path) if path.exists() else None
    if not is_older_snapshot(raw):
        return read_snapshot(path, expected_date, accept_edited=accept_edited)
    snapshot = from_older(raw, path, config, prices)
    log.warning("%s is an older signal_pipeline snapshot: converted (%d holdings; no pending orders, ATR stops set at "
                "the next close)", path, len(snapshot.holdings))
    if snapshot.as_of_date != expected_date:
        raise SnapshotError(f"portfolio snapshot {path} is as of {snapshot.as_of_date}, but the trading day before this "
                            f"run is {expected_date}")
    return snapshot


def from_older(raw: dict[str, Any], path: Path, config: TrendflowConfig, prices: pd.DataFrame | None) -> PortfolioSnapshot:
    """Convert the older shape (see trendflow.load_portfolio for what is filled in, and how)."""
    from pydantic import ValidationError

    try:
        as_of = date.fromisoformat(str(raw["as_of_date"])[:10])
        closes = _closes_up_to(prices, as_of)
        holdings = {}
        for symbol, h in (raw.get("holdings") or {}).items():
            shares = int(h["shares"])
            if shares == 0:
                continue
            cost = float(h["cost_basis"])
            entry = date.fromisoformat(str(h.get("entry_date") or as_of)[:10])
            history = closes.get(symbol)
            held = history[history.index >= pd.Timestamp(entry)] if history is not None else None
            if held is not None and len(held):
                last, highest, days = float(held.iat[-1]), float(held.max()), len(held) - 1
            else:
                last = float(h["value"]) / shares if h.get("value") else cost
                highest, days = last, 0
            holdings[str(symbol)] = Holding(shares=shares, entry_date=entry, entry_price=cost, highest_close=max(highest, last),
                                            stop_level=0.0, last_close=last, days_held=days,
                                            cluster=int((raw.get("cluster_assignments") or {}).get(symbol, -1)))
        cash = float(raw["cash"])
        total = cash + sum(h.shares * h.last_close for h in holdings.values())
        snapshot = PortfolioSnapshot(
            version=SNAPSHOT_VERSION, as_of_date=as_of, trading_day_index=0, holdings=holdings, pending_orders=[],
            cash=cash, total_value=total, peak_equity=total, breaker_on=False, market_drawdown=0.0,
            cluster_assignments={str(s): int(c) for s, c in (raw.get("cluster_assignments") or {}).items()},
            metadata=SnapshotMetadata(trading_config_hash=trading_config_hash(config), mode="signals",
                                      fill_price=config.execution.fill_price, lot_size=config.execution.lot_size),
        )
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        detail = "; ".join(e["msg"] for e in exc.errors()[:3]) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        raise SnapshotError(f"portfolio snapshot {path} (older shape) cannot be converted: {detail}") from None
    return snapshot


def _closes_up_to(prices: pd.DataFrame | None, day: date) -> dict[str, pd.Series]:
    if prices is None:
        return {}
    upto = prices[prices["date"] <= pd.Timestamp(day)].sort_values("date", kind="stable")
    return {str(s): g.set_index("date")["close"] for s, g in upto.groupby("symbol", sort=False)}
