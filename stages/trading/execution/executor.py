"""Take a daily run's orders to a broker under portfolio-level risk controls.

First, a SELL of any holding below the profile's stop loss (reason stop_loss). Sells first, sized
by the held quantity and never blocked (only a rebalance trim stops at the cash buffer's upper edge);
then buys in descending quality, each passing breaker -> drawdown -> quality -> positions ->
correlation -> size (below one lot: size_too_small, the batch goes on) -> deployment -> cash buffer,
or rejected with its reason; an approved order may be resized, and says by what. A projected book
(fills, plus working orders at their reference price) is updated after every order, so later orders
in the batch see earlier ones. Warnings: a too-small position, deployment near its limit, cash above
the buffer. Every processed signal gets one audit record.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.execution import RiskProfile
from stages.common.errors import ConfigError
from stages.trading.execution.brokers import Broker, BrokerOrder, BrokerReport
from stages.trading.execution.notify import AuditLog, Notifier
from stages.trading.execution.store import ExecutionStore, now
from stages.trading.rules import affordable_shares, commission, lot_shares, slipped_price

log = logging.getLogger(__name__)
FINAL = {"FILLED", "PARTIALLY_FILLED", "REJECTED", "FAILED", "EXPIRED"}
DISCRETIONARY_SELLS = {"rebalance", "target_weight"}  # trims; exits (stops, rank-out, signal) are never held back


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
    orders: int = 0  # rows of the orders file
    approved: int = 0
    rejected: int = 0
    filled: int = 0
    working: int = 0
    failed: int = 0
    skipped_already_done: int = 0
    rejections: dict[str, str] = field(default_factory=dict)
    resized: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    breaker_tripped: bool = False


@dataclass
class ProjectedBook:
    """Cash and positions as they will be once the batch's orders are done: filled ones at their fill,
    working ones (paper orders fill at the next open) at the reference price with slippage and
    commission. The risk checks of later orders in the batch see every earlier one."""

    cash: float
    positions: dict[str, int]
    last_price: dict[str, float]

    def equity(self) -> float:
        return self.cash + self.invested()

    def invested(self) -> float:
        return sum(n * self.last_price.get(s, 0.0) for s, n in self.positions.items())

    def apply(self, side: str, symbol: str, shares: int, price: float, fee: float) -> None:
        sign = 1 if side == "BUY" else -1
        self.positions[symbol] = self.positions.get(symbol, 0) + sign * shares
        if self.positions[symbol] <= 0:
            self.positions.pop(symbol)
        self.cash -= sign * shares * price + fee


def stop_loss_sells(orders: pd.DataFrame, store: ExecutionStore, profile: RiskProfile, last_price: dict[str, float]) -> pd.DataFrame:
    """Requires: held positions with their cost, the latest prices, `profile.stop_loss`. Decides: a SELL
    of the whole holding (reason stop_loss) for each position whose last price is at least stop_loss
    below its average cost, unless the batch already sells it."""
    selling = set(orders.loc[orders["action"] == "SELL", "symbol"])
    rows = []
    for symbol, cost in store.costs().items():
        held = store.positions().get(symbol, 0)
        price = last_price.get(symbol)
        if held <= 0 or symbol in selling or price is None or price > cost / held * (1 - profile.stop_loss):
            continue
        rows.append(dict(symbol=symbol, action="SELL", shares=held, reason="stop_loss", signal_strength=float("nan"),
                         momentum_score=float("nan"), target_weight=0.0, current_price=price, estimated_value=held * price))
    return pd.DataFrame(rows, columns=orders.columns) if rows else orders.iloc[0:0]


def execute_orders(orders: pd.DataFrame, *, store: ExecutionStore, broker: Broker, profile: RiskProfile,
                   config: TrendflowConfig, as_of: date, run_id: str = "daily", prices: pd.DataFrame | None = None,
                   notifier: Notifier | None = None, audit: AuditLog | None = None) -> ExecutionSummary:
    notifier = notifier or Notifier(url="")
    if audit is not None:
        audit.export(store)  # records a killed earlier run committed but did not export
    summary = ExecutionSummary(orders=len(orders))
    lot = config.execution.lot_size
    last_price = dict(zip(orders["symbol"], orders["current_price"]))
    if prices is not None and not prices.empty:
        latest = prices[prices["date"] <= pd.Timestamp(as_of)].sort_values("date").groupby("symbol")["close"].last().to_dict()
        last_price = {**latest, **last_price}
    held = store.positions()
    for symbol, cost in store.costs().items():  # a holding with no price in sight is valued at its average cost
        last_price.setdefault(symbol, cost / held[symbol])
    book = ProjectedBook(store.cash(), held, last_price)
    for working in store.working_orders(broker.name):  # sent by an earlier run of this batch, not filled yet
        remainder = int(working["approved_shares"]) - store.filled_shares(working["client_order_id"])
        price = float(slipped_price(last_price.get(working["symbol"], 0.0), working["side"], config))
        book.apply(working["side"], working["symbol"], remainder, price, float(commission(remainder * price, config)))

    def warn(message: str) -> None:
        summary.warnings.append(message)
        log.warning(message)
        notifier.warning(message)

    current = book.equity()
    store.update_peak(current)
    drawdown = current / store.peak_equity() - 1.0
    if drawdown <= -profile.circuit_breaker and not store.breaker()["tripped"]:
        store.trip_breaker(f"portfolio drawdown {drawdown:.2%} <= -{profile.circuit_breaker:.0%}",
                           audit={"event": "breaker_tripped", "drawdown": drawdown, "timestamp": now()})
        summary.breaker_tripped = True
        notifier.critical(f"circuit breaker tripped: portfolio drawdown {drawdown:.2%}; buys stop until `trendflow risk reset-breaker`")

    sharpe = sharpe_estimates(prices, profile.sharpe_window)
    frame = pd.concat([orders, stop_loss_sells(orders, store, profile, last_price)], ignore_index=True)
    confidence = frame["signal_strength"].fillna(0.5).clip(0, 1)
    frame["quality"] = [quality_score(c, sharpe.get(s, 1.0)) for c, s in zip(confidence, frame["symbol"])]
    sells = frame[frame["action"] == "SELL"]
    buys = frame[frame["action"] == "BUY"].sort_values(["quality", "symbol"], ascending=[False, True], kind="stable")
    deployment_full = False
    deployment_warned = False

    for row in pd.concat([sells, buys]).itertuples(index=False):
        coid = client_order_id(as_of, row.symbol, row.action, run_id)
        existing = store.order(coid)
        if existing is not None and existing["status"] in FINAL:
            summary.skipped_already_done += 1
            continue
        if existing is None:
            store.insert_pending(coid, run_id, str(as_of), row.symbol, row.action, int(row.shares), row.reason, broker.name)
        status = store.order(coid)["status"]
        if status == "PENDING":
            if row.action == "SELL":
                shares, rejection, resize = _check_sell(row, book, profile, config, lot)
            else:
                shares, rejection, resize = _check_buy(row, store, book, profile, config, prices, deployment_full, lot)
                deployment_full = deployment_full or rejection == "deployment_limit"
            if rejection:
                store.set_status(coid, "REJECTED", rejection_reason=rejection, quality=float(row.quality),
                                 audit=_audit_record(row, "REJECTED", False, 0, coid, rejection))
                summary.rejected += 1
                summary.rejections[row.symbol] = rejection
                notifier.warning(f"rejected {row.action} {row.symbol}: {rejection}")
                if rejection == "size_too_small":
                    warn(f"position size too small: {row.symbol} sized below one lot of {lot} "
                         f"(quality {row.quality:.2f}, price {row.current_price:.4f})")
                continue
            store.set_status(coid, "APPROVED", approved_shares=shares, quality=float(row.quality),
                             **({"rejection_reason": f"resized: {resize}"} if resize else {}))
            if resize:
                summary.resized[row.symbol] = resize
            summary.approved += 1
            if row.action == "BUY":
                value = shares * float(row.current_price)
                if value < profile.small_position * book.equity():
                    warn(f"position size too small: BUY {shares} {row.symbol} is {value / book.equity():.2%} of equity "
                         f"(< {profile.small_position:.0%})")
        shares = int(store.order(coid)["approved_shares"])
        if store.order(coid)["status"] == "APPROVED":
            store.set_status(coid, "SUBMITTED")
        report = broker.submit(BrokerOrder(coid, row.symbol, row.action, shares, float(row.current_price)))
        outcome = _record(store, coid, row, shares, report, book, config,
                          lambda status: _audit_record(row, status, status != "FAILED", shares, coid,
                                                       None if status != "FAILED" else report.message))
        if outcome in ("FILLED", "PARTIALLY_FILLED"):
            summary.filled += 1
            notifier.info(f"{outcome.lower()} {row.action} {store.filled_shares(coid)} {row.symbol}")
        elif outcome == "OPEN":
            summary.working += 1
            log.info("%s %d %s working at %s: %s", row.action, shares, row.symbol, broker.name, report.message)
            filled = store.filled_shares(coid)
            if broker.name == "paper":
                notifier.info(f"{row.action} {shares} {row.symbol} sent to the paper broker: {report.message}")
            elif filled:  # a fill in progress: the book is between two states until the rest fills or is cancelled
                notifier.warning(f"{row.action} {shares} {row.symbol} still working at {broker.name} "
                                 f"({filled} filled): {report.message}")
            else:  # an evening's order rests until the next open: the normal case, not a warning every night
                notifier.info(f"{row.action} {shares} {row.symbol} working at {broker.name}, nothing filled yet "
                              f"(an order sent after the close fills at the next open): {report.message}")
        else:
            summary.failed += 1
            notifier.critical(f"{row.action} {row.symbol}: {report.message or 'no fill from the broker'}")
        if row.action == "BUY" and not deployment_warned:
            deployment = book.invested() / max(book.equity(), 1e-9)
            if deployment >= profile.max_deployment - profile.deployment_warning:
                deployment_warned = True
                warn(f"deployment limit approaching: {deployment:.1%} invested (limit {profile.max_deployment:.0%})")
    cash_share = book.cash / max(book.equity(), 1e-9)
    if len(frame) and cash_share > profile.cash_buffer_max:  # an empty batch changed nothing: nothing to say
        warn(f"cash {cash_share:.1%} of equity after the batch is above the buffer's upper edge "
             f"{profile.cash_buffer_max:.0%} (under-invested)")
    store.update_peak(book.equity())
    if audit is not None:
        audit.export(store)
    return summary


def orders_date(path: Path) -> date:
    """The decision date D in the name orders_D.csv (a ConfigError for any other name)."""
    match = re.search(r"orders_(\d{4}-\d{2}-\d{2})\.csv$", Path(path).name)
    if not match:
        raise ConfigError(f"--orders {path}: expected a file named orders_YYYY-MM-DD.csv")
    return date.fromisoformat(match.group(1))


def execute_orders_file(orders_path: Path, *, config: TrendflowConfig, broker: str, profile: RiskProfile, db: Path,
                        audit_path: Path | None = None, run_id: str = "daily", notifier: Notifier | None = None,
                        connection_alerts: bool = True) -> ExecutionSummary:
    """A daily run's orders_{D}.csv to `broker` ('paper' or 'ibkr') under `profile`, as `trendflow execute`
    and a daily run's execute step do: the execution database `db` must exist; prices.parquet beside the
    orders feeds the risk checks. For IBKR every symbol must have a route before anything is sent, and
    the connection is closed after the batch. A broker that cannot be reached (or is lost) is a
    BrokerConnectionError (exit 3), with a CRITICAL alert when `connection_alerts` (a flow run alerts
    once, from its failure hook)."""
    from schemas.prices import PricesSchema
    from schemas.trading import OrdersSchema
    from stages.common.artifacts import read_artifact
    from stages.trading.execution.brokers import BrokerConnectionError, IBKRSettings, PaperBroker, ib_route, open_ibkr

    orders_path = Path(orders_path)
    as_of = orders_date(orders_path)
    notifier = notifier or Notifier(url="")
    orders = read_artifact(orders_path, OrdersSchema)
    prices_path = orders_path.parent / "prices.parquet"
    prices = read_artifact(prices_path, PricesSchema) if prices_path.exists() else None
    store = ExecutionStore(db, config.execution.initial_cash, create=False)
    alerts = notifier if connection_alerts else None
    try:
        if broker == "ibkr":
            settings = IBKRSettings.from_env()
            for symbol in orders["symbol"]:
                ib_route(str(symbol), settings)  # refuse an unroutable symbol before anything is sent
            client = open_ibkr(settings, alerts)
        else:
            client = PaperBroker(store, config)
        try:
            return execute_orders(orders, store=store, broker=client, profile=profile, config=config,
                                  as_of=as_of, run_id=run_id, prices=prices, notifier=notifier,
                                  audit=AuditLog(audit_path or Path(db).parent / "audit.jsonl"))
        except BrokerConnectionError as exc:
            if alerts is not None:
                alerts.critical(f"broker connection lost during {orders_path.name}: {exc}")
            raise
        finally:
            if hasattr(client, "close"):
                client.close()
    finally:
        store.close()


def record_report(store: ExecutionStore, coid: str, side: str, symbol: str, shares: int, report: BrokerReport,
                  describe, book: bool = True) -> tuple[str, tuple[int, float, float] | None]:
    """Record what the broker reports about an order of `shares` beyond what is already recorded (a
    rerun or a book sync re-polls an OPEN order): the new fill (shares, price, commission) at the
    price that makes the recorded fills average to the broker's, and the order's status. Returns the
    status and the new fill, if any. `describe(status)` is the audit record, written in the
    transaction of the change it describes. `book=False` (a book sync): the fill leaves positions and
    cash alone, as the broker's own, loaded next, already hold it."""
    done = store.conn.execute("SELECT COALESCE(SUM(shares),0) n, COALESCE(SUM(shares*price),0) v, COALESCE(SUM(commission),0) c "
                              "FROM fills WHERE client_order_id=?", (coid,)).fetchone()
    filled = report.filled
    total = filled.shares if filled else 0
    if report.state == "FILLED" or total >= shares:
        status = "FILLED"
    elif report.state == "OPEN":
        status = "OPEN"
    else:
        status = "PARTIALLY_FILLED" if total > 0 else "FAILED"
    new = total - int(done["n"])
    if new > 0:
        price = (filled.shares * filled.price - float(done["v"])) / new
        fee = max(filled.commission - float(done["c"]), 0.0)
        store.record_fill(coid, side, symbol, new, price, fee, status, audit=describe(status), book=book)
        return status, (new, price, fee)
    if store.order(coid)["status"] != status:
        store.set_status(coid, status, audit=describe(status),
                         **({"rejection_reason": report.message} if status == "FAILED" else {}))
    else:
        store.add_audit(describe(status))
    return status, None


def _record(store: ExecutionStore, coid: str, row, shares: int, report: BrokerReport, book: ProjectedBook,
            config: TrendflowConfig, describe) -> str:
    """`record_report`, and the projected book: new fills at their price, a newly working remainder at
    the reference price with slippage and commission."""
    was_working = store.order(coid)["status"] == "OPEN"
    status, new = record_report(store, coid, row.action, row.symbol, shares, report, describe)
    if new is not None:
        book.apply(row.action, row.symbol, *new)
    if status == "OPEN" and not was_working:
        remainder = shares - (report.filled.shares if report.filled else 0)
        price = float(slipped_price(float(row.current_price), row.action, config))
        book.apply(row.action, row.symbol, remainder, price, float(commission(remainder * price, config)))
    return status


def _check_sell(row, book: ProjectedBook, profile: RiskProfile, config: TrendflowConfig, lot: int) -> tuple[int, str | None, str | None]:
    """A sell is sized by the holding and never blocked -- except a discretionary one (a rebalance trim)
    that would lift cash above `cash_buffer_max`: it is cut to what keeps cash at the edge."""
    held = book.positions.get(row.symbol, 0)
    shares = min(int(row.shares), held)
    if shares <= 0:
        return 0, "no_position", None
    if row.reason not in DISCRETIONARY_SELLS:
        return shares, None, None
    price = float(row.current_price)
    room = profile.cash_buffer_max * book.equity() - book.cash
    allowed = min(shares, lot_shares(max(room, 0.0), price, lot))
    if allowed <= 0:
        return 0, "cash_buffer_max", None
    return allowed, None, ("cash_buffer_max" if allowed < shares else None)


def _check_buy(row, store: ExecutionStore, book: ProjectedBook, profile: RiskProfile, config: TrendflowConfig, prices,
               deployment_full: bool, lot: int) -> tuple[int, str | None, str | None]:
    """The buy-side checks in order; returns (shares, rejection reason or None, what resized it or None).
    A size below one lot is `size_too_small` and does not stop later buys; a full deployment does."""
    if deployment_full:
        return 0, "deployment_limit", None
    if store.breaker()["tripped"]:
        return 0, "circuit_breaker", None
    equity = book.equity()
    drawdown = equity / store.peak_equity() - 1.0
    if drawdown <= -profile.max_drawdown:
        return 0, "max_drawdown", None
    if row.quality < profile.min_quality:
        return 0, "low_quality", None
    held = book.positions
    if row.symbol not in held and len(held) >= profile.max_positions:
        return 0, "max_positions", None
    correlated = highly_correlated(row.symbol, [s for s in held if s != row.symbol], prices, profile.correlation_window,
                                   profile.max_correlation)
    if len(correlated) >= profile.max_correlated_positions:
        return 0, "correlation", None
    price = float(row.current_price)
    wanted = int(row.shares)
    quality = row.quality if profile.scale_by_quality else 1.0
    shares = min(wanted, quality_position_shares(equity, profile.max_position_size, quality, price, lot))
    resize = "position_size" if shares < wanted else None
    if shares <= 0:
        return 0, "size_too_small", None
    fill_price = float(slipped_price(price, "BUY", config))
    headroom = profile.max_deployment * equity - book.invested()
    fit = lot_shares(headroom, fill_price * (1 + config.execution.commission_rate), lot)
    if fit <= 0:
        return 0, "deployment_limit", None
    if fit < shares:
        shares, resize = fit, "deployment_limit"
    spendable = book.cash - profile.cash_buffer_min * equity
    fit = affordable_shares(shares, fill_price, spendable, config) if spendable > 0 else 0
    if fit <= 0:
        return 0, "cash_buffer", None
    if fit < shares:
        shares, resize = fit, "cash_buffer"
    return shares, None, resize

def _audit_record(row, status: str, passed: bool, shares: int, coid: str, reason: str | None,
                  value: float | None = None) -> dict:
    """The audit record of one processed signal."""
    return {
        "signal": {"symbol": row.symbol, "action": row.action, "shares": int(row.shares), "reason": row.reason,
                   "signal_strength": None if pd.isna(row.signal_strength) else float(row.signal_strength),
                   "quality": float(row.quality)},
        "status": status, "risk_check_passed": passed, "position_size": int(shares),
        "position_value": float(value if value is not None else shares * float(row.current_price)),
        "order_id": coid, "rejection_reason": reason, "timestamp": now(),
    }
