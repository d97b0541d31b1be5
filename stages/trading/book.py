"""The executed book is the book: a daily run resumes from what was really filled, not from what the
model intended, and says where the two part (reconcile_{D}.csv).

When the output folder has an execution database (`execution/trendflow.db`, made by `trendflow
execute --init`), the daily run for session D, before its engine step:
  1. settles the paper broker: the orders still working at the paper broker (approved at an earlier
     close, maybe resized by the risk profile) fill at D's open through the engine's own
     `fill_orders` -- the backtest's slippage, commission, lots, cash and suspension rules -- on the
     executed book (the database's positions and cash); fills and expiries are recorded in the
     database in one transaction, with a settlement record that makes a rerun of D reproduce it.
     A real broker's fills (recorded by `trendflow execute`, the book loaded with `trendflow
     reconcile --sync ibkr`) are already in the database: they are taken as that open's fills;
  2. fills the model's own pending orders the same way on the model's book (what the backtest
     would have done), to compare;
  3. steps from the executed book: holdings and cash from the database, each holding's stop and
     entry data from the snapshot (a holding the model does not know is an error until accepted
     with `trendflow reconcile --accept`).
The reconciliation lists, symbol by symbol, intended vs filled quantity, price vs the model's fill
price, slippage in bp against the open, the share and cash drift, and why they differ.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.common.errors import ConfigError, TrendflowError, UnknownPositionError
from stages.trading.engine import Fill, Order, PortfolioState, apply_corporate_actions, empty_state, fill_orders
from stages.trading.execution.store import ExecutionStore
from stages.trading.market import Day, Market

log = logging.getLogger(__name__)
DB_NAME = Path("execution") / "trendflow.db"
MATCH = "match"
RECONCILE_COLUMNS = ["date", "decision_date", "symbol", "side", "model_qty", "sent_qty", "filled_qty", "model_price",
                     "fill_price", "slippage_bp", "model_shares", "executed_shares", "share_drift", "drift_value",
                     "cash_difference", "reason"]


def execution_db(folder: Path) -> Path:
    return Path(folder) / DB_NAME


@dataclass
class Settlement:
    """What session D's open did to the executed book (`before` -> `executed`), and to the model's
    book for comparison (`intended`: the snapshot after the model's own fills)."""

    executed: PortfolioState
    before: PortfolioState
    intended: PortfolioState
    fills: list[Fill]
    model_fills: list[Fill]
    reconcile: pd.DataFrame
    drift: float


# --------------------------------------------------------------------------- paper fills
def _order_specs(store: ExecutionStore, model_pending: list[Order], symbols: np.ndarray,
                 decided: str | None) -> tuple[list[dict], list[str]]:
    """The paper broker's working orders decided at the close `decided` (any, when None) as fill
    requests, in the model's order sequence (sells first, buys in rank order, as the engine fills
    them); working orders the model did not decide (e.g. a risk-profile stop loss) after their side's
    model orders. Also the client ids of working orders decided earlier: they missed their session."""
    rows = store.working_orders("paper")
    missed = [r["client_order_id"] for r in rows if decided is not None and r["as_of_date"] < decided]
    working = {(r["symbol"], r["side"]): r for r in rows if decided is None or r["as_of_date"] == decided}
    specs: list[dict] = []

    def spec(r) -> dict:
        return {"client_order_id": r["client_order_id"], "symbol": r["symbol"], "side": r["side"], "reason": r["reason"],
                "decision_date": r["as_of_date"],
                "shares": int(r["approved_shares"]) - store.filled_shares(r["client_order_id"])}

    for side in ("SELL", "BUY"):
        for o in model_pending:
            key = (str(symbols[o.symbol]), o.side)
            if o.side == side and key in working:
                specs.append(spec(working.pop(key)))
        specs += [spec(r) for key, r in sorted(working.items()) if key[1] == side]
    return [s for s in specs if s["shares"] > 0], missed


def _paper_order(spec: dict, idx: int, state: PortfolioState, model: dict[tuple[int, str], Order], day: Day) -> Order:
    """A paper broker's working order as the engine's Order, for `spec`'s approved shares. When the model
    decided it, it is the model's order (its decision close as reference price, its signal, score and
    target weight), so a sell that cannot fill today is carried into orders_D.csv exactly as the
    backtest carries it. Otherwise (e.g. a risk profile's stop loss) the reference price is the
    holding's last close before the open -- never today's open, which a symbol without a price today
    (suspended, stale) does not have."""
    decided = model.get((idx, spec["side"]))
    if decided is not None:
        return replace(decided, shares=spec["shares"], reason=spec["reason"],
                       decided=pd.Timestamp(spec["decision_date"]), note="")
    last_close = float(state.last_close[idx])
    return Order(symbol=idx, side=spec["side"], shares=spec["shares"], reason=spec["reason"], signal_strength=np.nan,
                 momentum_score=np.nan, target_weight=0.0,
                 reference_price=last_close if np.isfinite(last_close) else float(day.open[idx]),
                 decided=pd.Timestamp(spec["decision_date"]))


def _fill(state: PortfolioState, specs: list[dict], day: Day, index: dict[str, int], config: TrendflowConfig,
          corporate_actions: bool, model_pending: list[Order]) -> tuple[list[Fill], list[Order], list[dict], list[str], dict]:
    """The session's open on the executed book, as the engine's day step does it: the corporate
    actions of the day first (dividends credited, splits scale holdings and the working orders), then
    the specs fill at the open with the engine's fill code. Returns the engine fills, the unfilled
    orders, the fills as database rows, the client ids that got no fill, and what the corporate
    actions did to the book (cash credited, new share counts)."""
    model = {(o.symbol, o.side): o for o in model_pending}
    state.pending = [_paper_order(s, index[s["symbol"]], state, model, day) for s in specs]
    cash, shares = state.cash, state.shares.copy()
    if corporate_actions:
        apply_corporate_actions(state, day, config)
    changed = np.flatnonzero(state.shares != shares)
    actions = {"cash": state.cash - cash, "shares": {str(i): int(state.shares[i]) for i in changed}}
    orders, state.pending = state.pending, []
    fills, unfilled = fill_orders(state, orders, day.open, day, config)
    spec_of = {(index[s["symbol"]], s["side"]): s for s in specs}
    order_of = {(o.symbol, o.side): o for o in orders}
    rows = []
    for f in fills:
        s, o = spec_of[(f.symbol, f.side)], order_of[(f.symbol, f.side)]
        rows.append({"client_order_id": s["client_order_id"], "symbol": s["symbol"], "side": f.side, "shares": f.quantity,
                     "price": f.price, "commission": f.commission,
                     "status": "FILLED" if f.quantity >= o.shares else "PARTIALLY_FILLED"})
    filled = {r["client_order_id"] for r in rows}
    expired = [s["client_order_id"] for s in specs if s["client_order_id"] not in filled]
    return fills, unfilled, rows, expired, actions


def book_before(store: ExecutionStore, session: str) -> dict:
    """The executed book at the open of `session`, before its paper fills: the recorded one once the
    session is settled (a rerun starts from where the first run did), else the database's now."""
    record = store.settlement(session)
    return record["book_before"] if record is not None else {"cash": store.cash(), "positions": store.positions()}


def settle_paper_orders(store: ExecutionStore, state: PortfolioState, market: Market, t: int, config: TrendflowConfig,
                        model_pending: list[Order] | None = None, commit: bool = True,
                        corporate_actions: bool = True) -> tuple[list[Fill], list[Order]]:
    """Settle the paper broker's working orders at the open of session t on `state` (the executed
    book as `book_before` gives it, changed in place; the day's corporate actions applied first, as
    in the engine's step, unless `corporate_actions` is off), once: a rerun of the session replays
    the recorded settlement. Returns the fills and the orders left unfilled; `commit=False` (a dry
    run) records nothing."""
    day = market.day(t)
    session = str(day.date.date())
    index = market.symbol_index()
    record = store.settlement(session)
    book = book_before(store, session)
    decided = str(market.dates[t - 1].date()) if t > 0 else None
    specs, missed = (record["orders"], []) if record is not None else _order_specs(store, model_pending or [], market.symbols, decided)
    unknown = sorted({s["symbol"] for s in specs} - set(index))
    if unknown:
        raise TrendflowError(f"paper orders for symbols not in prices.parquet: {unknown}")
    fills, unfilled, rows, expired, actions = _fill(state, specs, day, index, config, corporate_actions,
                                                  model_pending or [])
    actions["shares"] = {str(market.symbols[int(i)]): n for i, n in actions["shares"].items()}
    if missed:
        log.warning("%d paper order(s) decided before %s missed their session and expire (was the daily run skipped?)",
                    len(missed), decided)
    expired += missed
    if record is None and commit:
        store.settle(session, {"session": session, "book_before": book, "orders": specs, "fills": rows, "expired": expired,
                               "corporate_actions": actions}, rows, expired, actions)
    for f in fills:
        log.info("paper fill %s: %s %d %s at %.4f (commission %.2f)", session, f.side, f.quantity, market.symbols[f.symbol],
                 f.price, f.commission)
    return fills, unfilled


def settle_at_open(store: ExecutionStore, config: TrendflowConfig, session: str, opens: dict[str, float]) -> list[Fill]:
    """Settle the paper broker's working orders at the given opens of `session`, on the database's own
    book (no model snapshot): for a folder run without daily runs, and for tests."""
    book = book_before(store, session)
    record = store.settlement(session)
    ordered = [o["symbol"] for o in record["orders"]] if record is not None else [r["symbol"] for r in store.working_orders("paper")]
    symbols = np.array(sorted({*book["positions"], *ordered, *opens}))
    price = np.array([opens.get(s, np.nan) for s in symbols], dtype=float)
    n = len(symbols)
    nan = np.full(n, np.nan)
    market = Market(dates=pd.DatetimeIndex([pd.Timestamp(session)]), symbols=symbols, open=price[None], close=price[None],
                    tradable=np.isfinite(price)[None], trend_signal=nan[None], signal_strength=nan[None], atr=nan[None],
                    volatility=nan[None], momentum_score=nan[None], cluster=np.full((1, n), -1.0),
                    breaker_on=np.zeros(1, dtype=bool), market_drawdown=np.zeros(1))
    state = empty_state(n, book["cash"])
    _apply_book(state, book, market, 0, set(book["positions"]))
    return settle_paper_orders(store, state, market, 0, config)[0]


# --------------------------------------------------------------------------- the executed book
def _apply_book(state: PortfolioState, book: dict, market: Market, t: int, accepted: set[str]) -> list[str]:
    """Make `state` hold the book's positions and cash, keeping the model's entry and stop data for
    holdings both know. A holding only the book has is opened at the last close when accepted;
    returns the ones that are not."""
    index = market.symbol_index()
    positions = {s: int(n) for s, n in book["positions"].items() if int(n) > 0}
    foreign = sorted(set(positions) - set(index))
    if foreign:
        raise UnknownPositionError(f"the executed book holds {foreign}, which prices.parquet does not know: add their "
                                   "prices to the data, or close the positions at the broker")
    unknown = []
    want = np.zeros(len(state.shares), dtype=np.int64)
    for s, n in positions.items():
        want[index[s]] = n
    for i in np.flatnonzero(want != state.shares).tolist():
        if want[i] == 0:
            state.close_position(i)
        elif state.shares[i] > 0:
            state.shares[i] = want[i]
        elif market.symbols[i] in accepted:
            close = market.close[:max(t, 1), i]  # the last close before session t's open
            last = float(close[np.isfinite(close)][-1]) if np.isfinite(close).any() else np.nan
            state.open_position(i, int(want[i]), last, market.day(max(t - 1, 0)), last)
        else:
            unknown.append(str(market.symbols[i]))
    state.cash = float(book["cash"])
    return unknown


def settle_and_adopt(store: ExecutionStore, model: PortfolioState, market: Market, t: int,
                     config: TrendflowConfig, commit: bool = True) -> Settlement:
    """Session t's open for both books: the paper broker's working orders fill on the executed book,
    the model's pending orders on the model's book. Returns the executed book (its pending = sells
    left unfilled, which the day step carries like the backtest) and the reconciliation."""
    day = market.day(t)
    session = str(day.date.date())
    broker_fills = _broker_fills(store, market, t, config)
    book = _without(book_before(store, session), broker_fills, market.symbols)
    intended = copy.deepcopy(model)
    apply_corporate_actions(intended, day, config)  # as the day step does, before the open
    model_fills, _ = fill_orders(intended, intended.pending, day.open, day, config)
    executed = copy.deepcopy(model)
    executed.pending = []
    unknown = _apply_book(executed, book, market, t, set(store.accepted()))
    if unknown:
        raise UnknownPositionError(
            f"the executed book holds {unknown}, which the model does not (portfolio snapshot of the day before "
            f"{session}): check the broker, then accept with `trendflow reconcile --accept SYMBOL --by NAME --out DIR`")
    before = copy.deepcopy(executed)
    for f in broker_fills:
        _apply_fill(executed, f, day)
    # a real broker's book already holds the day's corporate actions (limitation: per-share stop and
    # entry levels are then not rescaled for a split on that day)
    fills, unfilled = settle_paper_orders(store, executed, market, t, config, model.pending, commit,
                                          corporate_actions=not broker_fills)
    fills = broker_fills + fills
    carried = [o for o in unfilled if o.side == "SELL" and executed.shares[o.symbol] > 0]
    waiting = {o.symbol for o in carried}  # + the model's sells a real broker could not fill today (no trading)
    carried += [o for o in model.pending if o.side == "SELL" and not day.tradable[o.symbol] and executed.shares[o.symbol] > 0
                and o.symbol not in waiting]
    executed.pending = carried
    frame = reconcile_frame(day, market, model, intended, model_fills, before, executed, fills, store)
    drift = book_drift(frame)
    return Settlement(executed, before, intended, fills, model_fills, frame, drift)


def _broker_fills(store: ExecutionStore, market: Market, t: int, config: TrendflowConfig) -> list[Fill]:
    """Fills a real broker (not the paper one) made for the orders decided at the close before session
    t, as recorded by `trendflow execute` (one per order, at its average price): the database's book
    already holds them, so the executed book before the open is the book without them."""
    if t == 0:
        return []
    decided = market.dates[t - 1]
    index = market.symbol_index()
    rows = store.conn.execute(
        "SELECT o.symbol, o.side, o.reason, SUM(f.shares) n, SUM(f.shares * f.price) v, SUM(f.commission) c "
        "FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id WHERE o.broker != 'paper' AND o.as_of_date = ? "
        "GROUP BY o.client_order_id ORDER BY o.side DESC, MIN(f.id)", (str(decided.date()),))
    fills = []
    for r in rows:
        if r["symbol"] not in index:
            raise UnknownPositionError(f"broker fills for {r['symbol']}, which prices.parquet does not know")
        i, n = index[r["symbol"]], int(r["n"])
        price = float(r["v"]) / n
        reference = float(market.open[t, i]) if np.isfinite(market.open[t, i]) else price
        fills.append(Fill(i, r["side"], n, price, float(r["c"]), abs(price - reference) * n, r["reason"], decided))
    return fills


def _without(book: dict, fills: list[Fill], symbols: np.ndarray) -> dict:
    """The book as it was before `fills`."""
    positions = dict(book["positions"])
    cash = float(book["cash"])
    for f in fills:
        sym = str(symbols[f.symbol])
        sign = 1 if f.side == "BUY" else -1
        positions[sym] = positions.get(sym, 0) - sign * f.quantity
        cash += sign * f.quantity * f.price + f.commission
    return {"cash": cash, "positions": {s: n for s, n in positions.items() if n > 0}}


def _apply_fill(state: PortfolioState, f: Fill, day: Day) -> None:
    """A broker's fill on the engine state, as the engine books its own (fill_orders)."""
    i = f.symbol
    if f.side == "SELL":
        state.cash += f.quantity * f.price - f.commission
        state.shares[i] -= f.quantity
        if state.shares[i] <= 0:
            state.close_position(i)
        return
    state.cash -= f.quantity * f.price + f.commission
    if state.shares[i] == 0:
        state.open_position(i, f.quantity, f.price, day, float(day.close[i]))
    else:
        state.add_to_position(i, f.quantity, f.price)


def record_step_fills(store: ExecutionStore, fills: list[Fill], market: Market, t: int) -> None:
    """The fills the day step made on the executed book at the close (data_ended sales) go to the
    paper book too, so the database and the next snapshot hold the same."""
    from stages.trading.execution.executor import client_order_id

    day = market.dates[t].date()
    store.record_engine_fills(str(day), [{
        "client_order_id": client_order_id(day, str(market.symbols[f.symbol]), f.side, f"engine-{f.reason}"),
        "symbol": str(market.symbols[f.symbol]), "side": f.side, "shares": f.quantity, "price": f.price,
        "commission": f.commission, "reason": f.reason} for f in fills])


# --------------------------------------------------------------------------- a real broker's book
def sync_broker_book(store: ExecutionStore, broker: str = "ibkr", *, notifier=None, say=print) -> dict:
    """The broker's own book into the execution database, as `trendflow reconcile --sync ibkr` and an
    IBKR daily run (before its stages) do: connect and read first (a broker that cannot be reached
    changes nothing: BrokerConnectionError, exit 3, a CRITICAL alert when `notifier` is given), then our
    orders still OPEN in the database as the broker has them now (fills since, recorded; a final state
    for those no longer open there), then its positions and cash replace the database's. Returns what
    was loaded (cash, positions, open orders)."""
    from stages.trading.execution.brokers import open_ibkr
    from stages.trading.execution.store import now

    connection = open_ibkr(notifier=notifier)
    try:
        book = connection.book()
    finally:
        connection.close()
    _sync_orders(store, book, broker, now, say)
    positions = {s: n for s, (n, _) in book.positions.items()}
    store.set_book(book.positions, book.cash, broker=broker, audit={
        "event": "book_synced", "broker": broker, "cash": book.cash, "timestamp": now(), "positions": positions,
        "open_orders": sorted(book.open_refs)})
    say(f"book loaded from {broker}: cash {book.cash:,.2f}, {len(book.positions)} positions, "
        f"{len(book.open_refs)} open orders")
    return {"broker": broker, "cash": book.cash, "positions": positions, "open_orders": len(book.open_refs)}


def sync_folder_book(folder: Path, config: TrendflowConfig, broker: str = "ibkr", *, notifier=None, say=print,
                     wait: bool = False) -> dict:
    """`sync_broker_book` on the execution database of an artifact folder, holding its write lock;
    the audit records go to audit.jsonl."""
    from stages.common.folder_lock import writing
    from stages.trading.execution.notify import AuditLog

    db = execution_db(folder)
    if not db.is_file():  # checked before the lock, which would create the folder
        raise ConfigError(f"no execution database at {db}: create the account once with "
                             f"`trendflow execute --init --out {folder}`")
    with writing(db.parent, wait=wait):
        store = ExecutionStore(db, config.execution.initial_cash, create=False)
        try:
            loaded = sync_broker_book(store, broker, notifier=notifier, say=say)
            AuditLog(db.parent / "audit.jsonl").export(store)
        finally:
            store.close()
    return loaded


def _sync_orders(store: ExecutionStore, book, broker: str, now, say) -> None:
    """Our orders still OPEN in the database, as the broker's book has them now: fills it reports
    since (recorded, leaving positions and cash to the broker's book that replaces them next: a
    database that missed a trade never refuses the sync), and a final state for those no longer open
    there (FILLED, PARTIALLY_FILLED with the rest cancelled, or FAILED when nothing filled)."""
    from stages.trading.execution.brokers import BrokerReport
    from stages.trading.execution.executor import record_report

    for order in store.working_orders(broker):
        coid, shares = order["client_order_id"], int(order["approved_shares"])
        state = "OPEN" if coid in book.open_refs else "CANCELLED"
        report = BrokerReport(state, book.fills.get(coid), "no longer open at the broker" if state != "OPEN" else "open")
        status, _ = record_report(store, coid, order["side"], order["symbol"], shares, report,
                                  lambda st: {"event": "order_synced", "order_id": coid, "status": st, "timestamp": now()},
                                  book=False)
        say(f"  {order['side']} {order['symbol']} ({coid}): {status}, {store.filled_shares(coid)} of {shares} filled")


# --------------------------------------------------------------------------- reconciliation
def reconcile_frame(day: Day, market: Market, model: PortfolioState, intended: PortfolioState, model_fills: list[Fill],
                    before: PortfolioState, executed: PortfolioState, fills: list[Fill], store: ExecutionStore) -> pd.DataFrame:
    """One row per symbol with an order (model or broker) or a holding that differs, and a CASH row."""
    symbols = market.symbols
    decided = {(str(symbols[o.symbol]), o.side): o for o in model.pending}
    sent = _sent_orders(store, {str(o.decided.date()) for o in model.pending} | {str(f.decided.date()) for f in fills})
    mfill = {(int(f.symbol), f.side): f for f in model_fills}
    xfill = {(int(f.symbol), f.side): f for f in fills}
    keys = {(int(o.symbol), o.side) for o in model.pending} | set(xfill) | set(mfill)
    keys |= {(int(i), "HOLD") for i in np.flatnonzero((intended.shares != executed.shares) | (model.shares != before.shares))}
    rows = []
    for i, side in sorted(keys, key=lambda k: (str(symbols[k[0]]), k[1])):
        sym = str(symbols[i])
        if side == "HOLD" and any((i, s) in keys for s in ("BUY", "SELL")):
            continue
        m, x = mfill.get((i, side)), xfill.get((i, side))
        order = decided.get((sym, side))
        broker_order = sent.get((sym, side))
        open_price = float(day.open[i])
        slippage = np.nan
        if x is not None and open_price > 0:
            slippage = (x.price / open_price - 1.0) * 1e4 * (1 if side == "BUY" else -1)
        flow = lambda f: 0.0 if f is None else (-(f.quantity * f.price + f.commission) if f.side == "BUY"  # noqa: E731
                                                else f.quantity * f.price - f.commission)
        share_drift = int(executed.shares[i]) - int(intended.shares[i])
        close = float(day.close[i]) if np.isfinite(day.close[i]) else float(np.nan_to_num(executed.last_close[i]))
        rows.append({
            "date": day.date, "decision_date": (order.decided if order is not None else
                                                pd.Timestamp(broker_order["as_of_date"]) if broker_order is not None else pd.NaT),
            "symbol": sym, "side": side, "model_qty": m.quantity if m else 0,
            "sent_qty": int(broker_order["approved_shares"] or 0) if broker_order is not None else 0,
            "filled_qty": x.quantity if x else 0, "model_price": m.price if m else np.nan, "fill_price": x.price if x else np.nan,
            "slippage_bp": slippage, "model_shares": int(intended.shares[i]), "executed_shares": int(executed.shares[i]),
            "share_drift": share_drift, "drift_value": share_drift * close, "cash_difference": flow(x) - flow(m),
            "reason": _why(side, order, broker_order, m, x, int(model.shares[i]), int(before.shares[i]), bool(day.tradable[i])),
        })
    cash_diff = executed.cash - intended.cash
    rows.append({"date": day.date, "decision_date": pd.NaT, "symbol": "CASH", "side": "CASH", "model_qty": 0, "sent_qty": 0,
                 "filled_qty": 0, "model_price": np.nan, "fill_price": np.nan, "slippage_bp": np.nan, "model_shares": 0,
                 "executed_shares": 0, "share_drift": 0, "drift_value": cash_diff, "cash_difference": cash_diff,
                 "reason": MATCH if abs(cash_diff) < 0.005 else
                 f"model cash {intended.cash:,.2f}, executed {executed.cash:,.2f} after the open"})
    return pd.DataFrame(rows, columns=RECONCILE_COLUMNS)


def book_drift(frame: pd.DataFrame) -> float:
    """How far apart the books are, in currency: the value of the holdings that differ (at the close)
    plus the difference in equity. A buy the profile cut counts once (the shares not bought), not
    again as the cash left over."""
    held = frame[frame["side"] != "CASH"]["drift_value"]
    equity_gap = float(frame.loc[frame["side"] == "CASH", "cash_difference"].sum() + held.sum())
    return float(held.abs().sum()) + abs(equity_gap)


def _sent_orders(store: ExecutionStore, decision_dates: set[str]) -> dict[tuple[str, str], dict]:
    """The broker-side order for each (symbol, side) decided on those dates (the latest run's)."""
    out: dict[tuple[str, str], dict] = {}
    for day in sorted(decision_dates):
        for r in store.conn.execute("SELECT * FROM orders WHERE as_of_date=? ORDER BY created_at, client_order_id", (day,)):
            out[(r["symbol"], r["side"])] = dict(r)
    return out


def _why(side: str, order: Order | None, broker_order: dict | None, m: Fill | None, x: Fill | None,
         model_before: int, book_before: int, tradable: bool) -> str:
    """Why the executed book differs from the model's on this symbol (MATCH when it does not)."""
    reasons = []
    if model_before != book_before:
        reasons.append(f"book differed before the open: model held {model_before}, executed {book_before}")
    if side in ("BUY", "SELL"):
        if order is not None and broker_order is None:
            reasons.append("not sent to the broker")
        elif broker_order is not None:
            status, note = broker_order["status"], broker_order["rejection_reason"]
            if status == "REJECTED":
                reasons.append(f"rejected by the risk profile: {note}")
            elif note and str(note).startswith("resized"):
                reasons.append(f"{note} by the risk profile ({broker_order['requested_shares']} -> {broker_order['approved_shares']})")
            sent, filled = int(broker_order["approved_shares"] or 0), x.quantity if x is not None else 0
            if broker_order["broker"] != "paper" and status != "REJECTED" and filled < sent:  # a real broker's own doing
                reasons.append(f"{broker_order['broker']} filled {filled} of {sent} ({status}"
                               + (f": {note})" if status == "FAILED" and note else ")"))
            if order is None:
                reasons.append(f"broker order without a model order ({broker_order['reason']})")
        if m is None and x is None and order is not None:
            reasons.append("filled in neither book: " + ("no price at the open" if not tradable else "not enough cash"))
        elif m is not None and x is not None and m.quantity != x.quantity and not reasons:
            reasons.append("cash at the open differed (buy shrunk to what cash allows)")
    return "; ".join(reasons) or MATCH
