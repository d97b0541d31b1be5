"""Brokers behind one small interface. `submit` is idempotent per client order id, so a rerun
after a crash never executes an order twice."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Protocol

from schemas.config import TrendflowConfig
from stages.common.errors import ConfigError, TransientIOError
from stages.trading.execution.store import ExecutionStore, now


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


@dataclass(frozen=True)
class BrokerReport:
    """Where an order stands at the broker. `state`: OPEN (still working: a paper order waiting for the
    next session's open, or an IBKR order not final when the wait ran out), FILLED, or CANCELLED (final;
    `filled` may hold a partial fill). `filled` is cumulative: every share filled so far, at its
    average price, with all commission paid."""

    state: str
    filled: BrokerFill | None = None
    message: str = ""


class Broker(Protocol):
    name: str

    def submit(self, order: BrokerOrder) -> BrokerReport:
        """Send (or look up, if already sent) an order; where it stands now."""


class PaperBroker:
    """Trades like the backtest: an order decided at the close of D works until the open of the next
    session, where the daily run of that session fills it through the engine's own fill code
    (`stages.trading.book.settle_paper_orders`: same slippage, commission, lots, cash and
    suspension rules). Submitting only leaves the order working, so a rerun never trades twice."""

    name = "paper"

    def __init__(self, store: ExecutionStore, config: TrendflowConfig):
        if config.execution.fill_price != "next_open":
            raise ConfigError("the paper broker fills at the next session's open, as the backtest does with "
                              "execution.fill_price=next_open; with 'close' the model filled these orders at the close "
                              "they were decided at, which has passed: set execution.fill_price=next_open to paper-trade")
        self.store = store
        self.config = config

    def submit(self, order: BrokerOrder) -> BrokerReport:
        done = self.store.conn.execute("SELECT * FROM paper_executions WHERE client_order_id=?", (order.client_order_id,)).fetchone()
        if done is not None:  # settled already: report it, never trade again
            return BrokerReport("FILLED", BrokerFill(order.client_order_id, int(done["shares"]), float(done["price"]),
                                                     float(done["commission"])))
        return BrokerReport("OPEN", None, "works until the next session's open")

    def executions(self) -> int:
        return int(self.store.conn.execute("SELECT COUNT(*) FROM paper_executions").fetchone()[0])


# --------------------------------------------------------------------------- Interactive Brokers
# Symbol suffix -> (IB exchange, currency). CN A-shares and ETFs trade through Stock Connect
# (Shanghai: SEHKNTL, Shenzhen: SEHKSZSE) in CNH; never through SMART in USD.
SUFFIX_ROUTES: dict[str, tuple[str, str]] = {
    "SH": ("SEHKNTL", "CNH"),
    "SZ": ("SEHKSZSE", "CNH"),
    "US": ("SMART", "USD"),
}
ROUTES_ENV = "TRENDFLOW_IB_ROUTES"


@dataclass(frozen=True)
class IBKRSettings:
    host: str
    port: int
    client_id: int
    account: str | None
    exchange: str
    currency: str
    routes: tuple[tuple[str, str, str], ...] = ()
    wait: float = 30.0  # seconds an order is followed when sent (after the close it stays OPEN: the next sync reads its fills)

    @classmethod
    def from_env(cls) -> "IBKRSettings":
        """TRENDFLOW_IB_HOST/PORT/CLIENT_ID/ACCOUNT/EXCHANGE/CURRENCY/WAIT; port 7497 = TWS paper trading.
        EXCHANGE/CURRENCY route symbols without a suffix; TRENDFLOW_IB_ROUTES adds or overrides suffix
        routes, e.g. `HK=SEHK/HKD,SH=SEHKNTL/CNH`."""
        try:
            port = int(os.environ.get("TRENDFLOW_IB_PORT", "7497"))
            client_id = int(os.environ.get("TRENDFLOW_IB_CLIENT_ID", "17"))
        except ValueError as exc:
            raise ConfigError(f"TRENDFLOW_IB_PORT / TRENDFLOW_IB_CLIENT_ID must be integers: {exc}") from None
        try:
            wait = float(os.environ.get("TRENDFLOW_IB_WAIT", "30"))
        except ValueError:
            wait = float("nan")
        if not 0 <= wait < float("inf"):
            raise ConfigError(f"TRENDFLOW_IB_WAIT={os.environ.get('TRENDFLOW_IB_WAIT')!r}: seconds to follow each order, "
                              "a number >= 0")
        routes = []
        for item in filter(None, (x.strip() for x in os.environ.get(ROUTES_ENV, "").split(","))):
            suffix, _, target = item.partition("=")
            exchange, _, currency = target.partition("/")
            if not (suffix and exchange and currency):
                raise ConfigError(f"{ROUTES_ENV}: {item!r} is not SUFFIX=EXCHANGE/CURRENCY (e.g. HK=SEHK/HKD)")
            routes.append((suffix.upper(), exchange, currency))
        return cls(host=os.environ.get("TRENDFLOW_IB_HOST", "127.0.0.1"), port=port, client_id=client_id,
                   account=os.environ.get("TRENDFLOW_IB_ACCOUNT"), exchange=os.environ.get("TRENDFLOW_IB_EXCHANGE", "SMART"),
                   currency=os.environ.get("TRENDFLOW_IB_CURRENCY", "USD"), routes=tuple(routes), wait=wait)


BROKERS = ("paper", "ibkr")


def check_broker(name: str) -> IBKRSettings | None:
    """Before anything runs: `name` is a broker we have, and for IBKR the TRENDFLOW_IB_* settings parse
    and the optional extra is installed (a ConfigError, exit 2, otherwise). Connects to nothing."""
    if name not in BROKERS:
        raise ConfigError(f"--execute {name!r}: no such broker (choose {' or '.join(BROKERS)})")
    if name != "ibkr":
        return None
    import importlib.util

    settings = IBKRSettings.from_env()
    if importlib.util.find_spec("ib_async") is None:
        raise ConfigError("the IBKR broker needs the optional extra: pip install 'trendflow[ibkr]'")
    return settings


def open_ibkr(settings: IBKRSettings | None = None, notifier=None, **options) -> "IBKRBroker":
    """Connect to TWS/IB Gateway; a failure is a BrokerConnectionError (exit 3, retried by the flow as
    transient) and, with a `notifier`, one CRITICAL alert (a flow run alerts once, from its failure hook)."""
    try:
        return IBKRBroker(settings, **options)
    except BrokerConnectionError as exc:
        if notifier is not None:
            notifier.critical(f"broker connection failed: {exc}")
        raise


def ib_route(symbol: str, settings: IBKRSettings) -> tuple[str, str, str]:
    """Our symbol -> (IB symbol, exchange, currency): by its suffix (.SH, .SZ, .US, or a configured
    one), the settings' exchange/currency when it has none. A suffix with no route is refused
    (ConfigError) rather than sent somewhere it does not trade."""
    code, dot, suffix = symbol.rpartition(".")
    if not dot:
        return symbol, settings.exchange, settings.currency
    routes = {**SUFFIX_ROUTES, **{s: (e, c) for s, e, c in settings.routes}}
    if suffix.upper() not in routes:
        raise ConfigError(f"symbol {symbol}: no IB route for the suffix .{suffix} (known: {', '.join(sorted(routes))}); "
                          f"add one with {ROUTES_ENV}={suffix.upper()}=EXCHANGE/CURRENCY")
    exchange, currency = routes[suffix.upper()]
    return code, exchange, currency


def to_ib_contract(symbol: str, settings: IBKRSettings):
    """Our symbol -> an ib_async Stock contract on the route of `ib_route`."""
    from ib_async import Stock

    return Stock(*ib_route(symbol, settings))


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


def report_of(client_order_id: str, trade) -> BrokerReport:
    """An ib_async Trade -> where it stands: FILLED, CANCELLED (final, maybe partly filled) or OPEN."""
    status = trade.orderStatus.status
    filled = from_ib_fills(client_order_id, trade.fills)
    if status == "Filled":
        return BrokerReport("FILLED", filled, status)
    if trade.isDone():
        return BrokerReport("CANCELLED", filled, status)
    return BrokerReport("OPEN", filled, f"{status or 'not acknowledged'}: still working at the broker")


@dataclass(frozen=True)
class BrokerBook:
    positions: dict[str, tuple[int, float]]
    cash: float
    open_refs: set[str]
    fills: dict[str, BrokerFill | None]


class BrokerConnectionError(TransientIOError):
    """The broker cannot be reached (exit 3; the command sends a CRITICAL alert)."""


class IBKRBroker:
    """Interactive Brokers through ib_async (optional extra `trendflow[ibkr]`); paper port by default.
    Before placing, trades with the same orderRef are looked up, so a rerun does not resend. An order
    is followed until a final state at the broker or until `timeout` seconds pass; then it is
    reported OPEN (still working there), with the fills so far (`timeout`: the settings' `wait` unless given)."""

    name = "ibkr"

    def __init__(self, settings: IBKRSettings | None = None, timeout: float | None = None, connect_timeout: float = 10.0,
                 ib=None):
        try:
            from ib_async import IB
        except ImportError:
            raise ConfigError("the IBKR broker needs the optional extra: pip install 'trendflow[ibkr]'") from None
        self.settings = settings or IBKRSettings.from_env()
        self.timeout = self.settings.wait if timeout is None else timeout
        self.ib = ib if ib is not None else IB()
        where = f"TWS/IB Gateway at {self.settings.host}:{self.settings.port}"
        ib_log = logging.getLogger("ib_async")
        level = ib_log.level
        ib_log.setLevel(logging.CRITICAL)  # a failed connect is reported once, as our own error line
        try:
            self.ib.connect(self.settings.host, self.settings.port, clientId=self.settings.client_id, timeout=connect_timeout)
        except (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError) as exc:
            raise BrokerConnectionError(f"cannot connect to {where} (client id {self.settings.client_id}): "
                                        f"{type(exc).__name__}: {exc or 'no answer'}; is it running with the API enabled?") from None
        finally:
            ib_log.setLevel(level)
        if not self.ib.isConnected():
            raise BrokerConnectionError(f"cannot connect to {where}: the connection closed during the handshake")

    def submit(self, order: BrokerOrder) -> BrokerReport:
        if not self.ib.isConnected():
            raise BrokerConnectionError(f"lost the connection to TWS/IB Gateway at {self.settings.host}:{self.settings.port}")
        existing = [t for t in self.ib.trades() if t.order.orderRef == order.client_order_id]
        trade = existing[0] if existing else self.ib.placeOrder(to_ib_contract(order.symbol, self.settings),
                                                                 to_ib_order(order, self.settings))
        deadline = time.monotonic() + self.timeout
        while not trade.isDone() and time.monotonic() < deadline:
            self.ib.waitOnUpdate(timeout=max(deadline - time.monotonic(), 0.01))
        return report_of(order.client_order_id, trade)

    def book(self) -> "BrokerBook":
        """The broker's own book: positions (our symbol -> (shares, cost)), cash (TotalCashValue in the
        account's base currency), the orderRefs of orders still open, and the executions it reports
        (this session's, synced at connect) aggregated per orderRef."""
        routes = {**SUFFIX_ROUTES, **{s: (e, c) for s, e, c in self.settings.routes}}
        reverse = {(e, c): s for s, (e, c) in routes.items()}
        positions = {}
        for p in self.ib.positions(self.settings.account or ""):
            suffix = reverse.get((p.contract.primaryExchange or p.contract.exchange, p.contract.currency))
            symbol = f"{p.contract.symbol}.{suffix}" if suffix and suffix != "US" else p.contract.symbol
            positions[symbol] = (int(p.position), float(p.position * p.avgCost))
        cash = sum(float(v.value) for v in self.ib.accountValues(self.settings.account or "")
                   if v.tag == "TotalCashValue" and v.currency == "BASE")
        by_ref: dict[str, list] = {}
        for fill in self.ib.fills():
            by_ref.setdefault(fill.execution.orderRef, []).append(fill)
        fills = {ref: from_ib_fills(ref, group) for ref, group in by_ref.items() if ref}
        return BrokerBook(positions, cash, {t.order.orderRef for t in self.ib.openTrades()}, fills)

    def close(self) -> None:
        self.ib.disconnect()
