"""Take a daily run's orders to a broker under portfolio-level risk controls.

Sells first and never blocked (sized by the held quantity); then buys in descending quality,
each passing breaker -> drawdown -> quality -> positions -> correlation -> deployment -> cash
buffer, or rejected with its reason. State (cash, positions) is updated after every fill, so
later orders in the batch see earlier ones. Every processed signal gets one audit record.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.execution import RiskProfile
from stages.trading.execution.brokers import Broker, BrokerOrder
from stages.trading.execution.notify import AuditLog, Notifier
from stages.trading.execution.store import ExecutionStore, now
from stages.trading.rules import lot_shares

log = logging.getLogger(__name__)
FINAL = {"FILLED", "PARTIALLY_FILLED", "REJECTED", "FAILED"}


def client_order_id(as_of: date, symbol: str, side: str, run_id: str) -> str:
    """Deterministic id from (date, symbol, side, run): the same order in a rerun gets the same id."""
    digest = hashlib.sha256(f"{as_of}|{symbol}|{side}|{run_id}".encode()).hexdigest()[:20]
    return f"TF-{digest}"


def quality_score(confidence: float, sharpe_estimate: float) -> float:
    """confidence x min(sharpe_estimate / 2, 1), floored at 0 (0.8 and 1.5 -> 0.6)."""
    return max(0.0, confidence * min(sharpe_estimate / 2.0, 1.0))


def quality_position_shares(equity: float, fraction: float, quality: float, price: float, lot: int) -> int:
    """equity x fraction x quality / price, rounded down to lots (100,000 x 0.025 x 0.6 / 150 = 10 shares)."""
    return lot_shares(equity * fraction * quality, price, lot)


def sharpe_estimates(prices: pd.DataFrame | None, window: int) -> dict[str, float]:
    """Annualised mean/std of each symbol's last `window` daily returns (the recent risk-adjusted return)."""
    if prices is None or prices.empty:
        return {}
    close = prices.pivot(index="date", columns="symbol", values="close").iloc[-(window + 1):]
    rets = close.pct_change(fill_method=None).iloc[1:]
    sd = rets.std(ddof=1)
    return (rets.mean() / sd.where(sd > 0) * math.sqrt(252)).dropna().to_dict()


def highly_correlated(candidate: str, held: list[str], prices: pd.DataFrame | None, window: int, threshold: float) -> list[str]:
    """Held symbols whose daily RETURNS correlate with the candidate's beyond |threshold|."""
    if prices is None or not held:
        return []
    close = prices[prices["symbol"].isin([candidate, *held])].pivot(index="date", columns="symbol", values="close")
    rets = close.iloc[-(window + 1):].pct_change(fill_method=None).iloc[1:]
    if candidate not in rets:
        return []
    corr = rets.corr(min_periods=max(10, window // 2))[candidate]
    return [s for s in held if s in corr and abs(corr[s]) > threshold]


@dataclass
class ExecutionSummary:
    approved: int = 0
    rejected: int = 0
    filled: int = 0
    failed: int = 0
    skipped_already_done: int = 0
    rejections: dict[str, str] = field(default_factory=dict)
    breaker_tripped: bool = False


def execute_orders(orders: pd.DataFrame, *, store: ExecutionStore, broker: Broker, profile: RiskProfile,
                   config: TrendflowConfig, as_of: date, run_id: str = "daily", prices: pd.DataFrame | None = None,
                   notifier: Notifier | None = None, audit: AuditLog | None = None) -> ExecutionSummary:
    notifier = notifier or Notifier(url="")
    summary = ExecutionSummary()
    lot = config.execution.lot_size
    last_price = dict(zip(orders["symbol"], orders["current_price"]))
    if prices is not None and not prices.empty:
        latest = prices.sort_values("date").groupby("symbol")["close"].last().to_dict()
        last_price = {**latest, **last_price}

    def equity() -> float:
        return store.cash() + sum(n * last_price.get(s, 0.0) for s, n in store.positions().items())

    current = equity()
    store.update_peak(current)
    drawdown = current / store.peak_equity() - 1.0
    if drawdown <= -profile.circuit_breaker and not store.breaker()["tripped"]:
        store.trip_breaker(f"portfolio drawdown {drawdown:.2%} <= -{profile.circuit_breaker:.0%}")
        summary.breaker_tripped = True
        notifier.critical(f"circuit breaker tripped: portfolio drawdown {drawdown:.2%}; buys stop until `trendflow risk reset-breaker`")
        if audit:
            audit.append({"event": "breaker_tripped", "drawdown": drawdown, "timestamp": now()})

    sharpe = sharpe_estimates(prices, profile.sharpe_window)
    frame = orders.copy()
    confidence = frame["signal_strength"].fillna(0.5).clip(0, 1)
    frame["quality"] = [quality_score(c, sharpe.get(s, 1.0)) for c, s in zip(confidence, frame["symbol"])]
    sells = frame[frame["action"] == "SELL"]
    buys = frame[frame["action"] == "BUY"].sort_values(["quality", "symbol"], ascending=[False, True], kind="stable")
    deployment_full = False

    for row in pd.concat([sells, buys]).itertuples(index=False):
        coid = client_order_id(as_of, row.symbol, row.action, run_id)
        existing = store.order(coid)
        if existing is not None and existing["status"] in FINAL:
            summary.skipped_already_done += 1
            continue
        if existing is None:
            store.insert_pending(coid, run_id, str(as_of), row.symbol, row.action, int(row.shares), row.reason, broker.name)
        status = store.order(coid)["status"]
        shares, rejection = int(row.shares), None
        if status == "PENDING":
            if row.action == "SELL":
                shares = min(shares, store.positions().get(row.symbol, 0))
                rejection = None if shares > 0 else "no_position"
            else:
                shares, rejection = _check_buy(row, store, profile, config, prices, equity(), last_price, deployment_full, lot)
                deployment_full = deployment_full or rejection == "deployment_limit"
            if rejection:
                store.set_status(coid, "REJECTED", rejection_reason=rejection, quality=float(row.quality))
                summary.rejected += 1
                summary.rejections[row.symbol] = rejection
                notifier.warning(f"rejected {row.action} {row.symbol}: {rejection}")
                _audit(audit, row, "REJECTED", False, 0, coid, rejection)
                continue
            store.set_status(coid, "APPROVED", approved_shares=shares, quality=float(row.quality))
            summary.approved += 1
        else:
            shares = int(store.order(coid)["approved_shares"])
        if store.order(coid)["status"] == "APPROVED":
            store.set_status(coid, "SUBMITTED")
        fill = broker.submit(BrokerOrder(coid, row.symbol, row.action, shares, float(row.current_price)))
        if fill is None:
            store.set_status(coid, "FAILED", rejection_reason="no fill from broker")
            summary.failed += 1
            notifier.critical(f"{row.action} {row.symbol}: broker returned no fill")
            _audit(audit, row, "FAILED", True, shares, coid, "no fill from broker")
            continue
        status = "FILLED" if fill.shares >= shares else "PARTIALLY_FILLED"
        store.record_fill(coid, row.action, row.symbol, fill.shares, fill.price, fill.commission, status)
        last_price[row.symbol] = fill.price
        summary.filled += 1
        notifier.info(f"{status.lower()} {row.action} {fill.shares} {row.symbol} @ {fill.price:.4f}")
        _audit(audit, row, status, True, fill.shares, coid, None, value=fill.shares * fill.price)
    store.update_peak(equity())
    return summary


def _check_buy(row, store: ExecutionStore, profile: RiskProfile, config: TrendflowConfig, prices, equity: float,
               last_price: dict, deployment_full: bool, lot: int) -> tuple[int, str | None]:
    """The buy-side checks in order; returns (shares, rejection reason or None)."""
    if deployment_full:
        return 0, "deployment_limit"
    if store.breaker()["tripped"]:
        return 0, "circuit_breaker"
    drawdown = equity / store.peak_equity() - 1.0
    if drawdown <= -profile.max_drawdown:
        return 0, "max_drawdown"
    if row.quality < profile.min_quality:
        return 0, "low_quality"
    held = store.positions()
    if row.symbol not in held and len(held) >= profile.max_positions:
        return 0, "max_positions"
    correlated = highly_correlated(row.symbol, [s for s in held if s != row.symbol], prices, profile.correlation_window,
                                   profile.max_correlation)
    if len(correlated) >= profile.max_correlated_positions:
        return 0, "correlation"
    price = float(row.current_price)
    shares = min(int(row.shares), quality_position_shares(equity, profile.max_position_size, row.quality, price, lot))
    invested = sum(n * last_price.get(s, 0.0) for s, n in held.items())
    headroom = profile.max_deployment * equity - invested
    shares = min(shares, lot_shares(headroom, price * (1 + config.execution.commission_rate), lot))
    if shares <= 0:
        return 0, "deployment_limit"
    cash_floor = profile.cash_buffer_min * equity
    spendable = store.cash() - cash_floor
    shares = min(shares, lot_shares(spendable / (1 + config.execution.commission_rate), price, lot))
    if shares <= 0:
        return 0, "cash_buffer"
    return shares, None


def _audit(audit: AuditLog | None, row, status: str, passed: bool, shares: int, coid: str, reason: str | None,
           value: float | None = None) -> None:
    if audit is None:
        return
    audit.append({
        "signal": {"symbol": row.symbol, "action": row.action, "shares": int(row.shares), "reason": row.reason,
                   "signal_strength": None if pd.isna(row.signal_strength) else float(row.signal_strength),
                   "quality": float(row.quality)},
        "status": status, "risk_check_passed": passed, "position_size": int(shares),
        "position_value": float(value if value is not None else shares * float(row.current_price)),
        "order_id": coid, "rejection_reason": reason, "timestamp": now(),
    })
