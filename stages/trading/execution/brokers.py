"""Brokers behind one small interface. `submit` is idempotent per client order id, so a rerun
after a crash never executes an order twice."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from schemas.config import TrendflowConfig
from stages.common.errors import ConfigError
from stages.trading.execution.store import ExecutionStore, now
from stages.trading.rules import commission as commission_for, slipped_price


@dataclass(frozen=True)
class BrokerOrder:
    client_order_id: str
    symbol: str
    side: str
    shares: int
    reference_price: float


@dataclass(frozen=True)
class BrokerFill:
    client_order_id: str
    shares: int
    price: float
    commission: float


class Broker(Protocol):
    name: str

    def submit(self, order: BrokerOrder) -> BrokerFill | None:
        """Send (or look up, if already sent) an order; the fill, or None if nothing filled."""


class PaperBroker:
    """Fills at the reference price (the next session's price) with slippage and commission; its own
    executions live in the same SQLite file, keyed by client order id."""

    name = "paper"

    def __init__(self, store: ExecutionStore, config: TrendflowConfig):
        self.store = store
        self.config = config

    def submit(self, order: BrokerOrder) -> BrokerFill | None:
        done = self.store.conn.execute("SELECT * FROM paper_executions WHERE client_order_id=?", (order.client_order_id,)).fetchone()
        if done is not None:  # already executed before a crash: report it, do not trade again
            return BrokerFill(order.client_order_id, int(done["shares"]), float(done["price"]), float(done["commission"]))
        price = slipped_price(order.reference_price, order.side, self.config)
        fee = commission_for(order.shares * price, self.config)
        with self.store.transaction() as cur:
            cur.execute("INSERT INTO paper_executions VALUES (?,?,?,?,?)", (order.client_order_id, order.shares, price, fee, now()))
        return BrokerFill(order.client_order_id, order.shares, price, fee)

    def executions(self) -> int:
        return int(self.store.conn.execute("SELECT COUNT(*) FROM paper_executions").fetchone()[0])


# --------------------------------------------------------------------------- Interactive Brokers
@dataclass(frozen=True)
class IBKRSettings:
    host: str
    port: int
    client_id: int
    account: str | None
    exchange: str
    currency: str

    @classmethod
    def from_env(cls) -> "IBKRSettings":
        """TRENDFLOW_IB_HOST/PORT/CLIENT_ID/ACCOUNT/EXCHANGE/CURRENCY; port 7497 = TWS paper trading."""
        try:
            return cls(host=os.environ.get("TRENDFLOW_IB_HOST", "127.0.0.1"), port=int(os.environ.get("TRENDFLOW_IB_PORT", "7497")),
                       client_id=int(os.environ.get("TRENDFLOW_IB_CLIENT_ID", "17")), account=os.environ.get("TRENDFLOW_IB_ACCOUNT"),
                       exchange=os.environ.get("TRENDFLOW_IB_EXCHANGE", "SMART"), currency=os.environ.get("TRENDFLOW_IB_CURRENCY", "USD"))
        except ValueError as exc:
            raise ConfigError(f"TRENDFLOW_IB_PORT / TRENDFLOW_IB_CLIENT_ID must be integers: {exc}") from None


def to_ib_contract(symbol: str, settings: IBKRSettings):
    """Our symbol -> an ib_async Stock contract. A CN code like 510300.SH maps to exchange SEHKNTL-style
    routing only through IB's own symbology, so the suffix is dropped and the configured exchange used."""
    from ib_async import Stock

    return Stock(symbol.split(".")[0], settings.exchange, settings.currency)


def to_ib_order(order: BrokerOrder, settings: IBKRSettings):
    """Our order -> an ib_async market order carrying our client order id in orderRef (idempotency key)."""
    from ib_async import MarketOrder

    ib_order = MarketOrder(order.side, order.shares)
    ib_order.orderRef = order.client_order_id
    if settings.account:
        ib_order.account = settings.account
    return ib_order


def from_ib_fills(client_order_id: str, fills) -> BrokerFill | None:
    """ib_async Fill objects (execution + commissionReport) -> one aggregated fill at the average price."""
    shares = sum(int(f.execution.shares) for f in fills)
    if shares <= 0:
        return None
    price = sum(f.execution.shares * f.execution.price for f in fills) / shares
    fee = sum(float(getattr(f.commissionReport, "commission", 0.0) or 0.0) for f in fills)
    return BrokerFill(client_order_id, shares, float(price), fee)


class IBKRBroker:
    """Interactive Brokers through ib_async (optional extra `trendflow[ibkr]`); paper port by default.
    Before placing, open trades with the same orderRef are looked up, so a rerun does not resend."""

    name = "ibkr"

    def __init__(self, settings: IBKRSettings | None = None, timeout: float = 30.0):
        try:
            from ib_async import IB
        except ImportError:
            raise ConfigError("the IBKR broker needs the optional extra: pip install 'trendflow[ibkr]'") from None
        self.settings = settings or IBKRSettings.from_env()
        self.timeout = timeout
        self.ib = IB()
        self.ib.connect(self.settings.host, self.settings.port, clientId=self.settings.client_id, timeout=timeout)

    def submit(self, order: BrokerOrder) -> BrokerFill | None:
        existing = [t for t in self.ib.trades() if t.order.orderRef == order.client_order_id]
        trade = existing[0] if existing else self.ib.placeOrder(to_ib_contract(order.symbol, self.settings), to_ib_order(order, self.settings))
        self.ib.waitOnUpdate(timeout=self.timeout)
        return from_ib_fills(order.client_order_id, trade.fills)
