"""One engine: `step` advances a portfolio by one trading day. The backtest folds it over history
and the daily run calls it once from a saved snapshot, so the two cannot disagree.

Day t, in this order (fill_price = next_open, the default):
  1. fill the orders decided at the close of t-1 at today's open: sells first, then buys, each
     buy shrunk to what cash allows (so cash never goes negative); a symbol with no price row
     today (suspended) gets no fill -- its sell stays pending, its buy is dropped;
  2. mark holdings to today's close (a suspended one keeps its last close);
  3. decide at the close: risk exits every day, selection and sizing on rebalance days
     (rules.py), or trade to the external target weights of the day (weights mode);
  4. the orders decided at the close of t are pending, to be filled at the open of t+1.
With fill_price = close, step 1 is skipped and the orders of step 3 are filled at the close of t.

The portfolio is held in arrays over the universe's symbols; only the handful of orders of a day
are Python objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.trading.market import Day
from stages.trading.rules import (
    affordable_shares,
    atr_stop_hits,
    buy_candidates,
    data_ended_hits,
    inertia_ranking,
    is_rebalance_day,
    lot_shares,
    price_limit_block,
    reentry_blocked,
    resize_needed,
    risk_exit_reason,
    select_targets,
    sell_signal_hits,
    sellable_shares,
    slipped_price,
    split_shares,
    target_weights,
    time_stop_hits,
    trade_fees,
    trailing_stop_levels,
    volume_cap_shares,
)

NOT_HELD = np.datetime64("NaT", "D")
NO_EXIT = -(2**62)  # exit_day of a symbol never exited by a risk rule


@dataclass
class Order:
    """An order decided at the close of `decided`, filled at the next session (or that close)."""

    symbol: int
    side: str
    shares: int
    reason: str
    signal_strength: float
    momentum_score: float
    target_weight: float
    reference_price: float
    decided: pd.Timestamp
    note: str = ""  # why it was not filled, or not in full (suspended, limit_up, volume_cap, ...)


@dataclass
class Fill:
    symbol: int
    side: str
    quantity: int
    price: float
    commission: float
    slippage: float
    reason: str
    decided: pd.Timestamp


@dataclass
class PortfolioState:
    """Cash, holdings as arrays over the universe (shares 0 = not held), orders waiting for the next
    session, and the counters the rules need. What a snapshot saves, exactly. `exit_day` is the
    day_index of each symbol's last risk exit (NO_EXIT if none), for the re-entry cooldown."""

    cash: float
    shares: np.ndarray
    entry_date: np.ndarray
    entry_price: np.ndarray
    highest_close: np.ndarray
    stop_level: np.ndarray
    last_close: np.ndarray
    days_held: np.ndarray
    cluster: np.ndarray
    exit_day: np.ndarray
    pending: list[Order] = field(default_factory=list)
    session: object = None  # date of the session fills last happened in (T+1 bookkeeping)
    session_bought: dict[int, int] = field(default_factory=dict)  # shares bought in that session (T+1)
    session_traded: dict[int, int] = field(default_factory=dict)  # shares filled in that session (volume cap)
    day_index: int = 0
    peak_equity: float = 0.0
    breaker_on: bool = False
    market_drawdown: float = 0.0

    @property
    def held(self) -> np.ndarray:
        return self.shares > 0

    def positions_value(self) -> float:
        held = np.flatnonzero(self.shares)
        return float(self.shares[held] @ self.last_close[held])

    def equity(self) -> float:
        return self.cash + self.positions_value()

    def open_position(self, idx: int, shares: int, price: float, day: Day, close: float) -> None:
        self.shares[idx] = shares
        self.entry_date[idx] = np.datetime64(day.date.date(), "D")
        self.entry_price[idx] = price
        self.highest_close[idx] = close
        self.stop_level[idx] = 0.0
        self.last_close[idx] = close
        self.days_held[idx] = 0
        cluster = day.cluster[idx]
        self.cluster[idx] = int(cluster) if np.isfinite(cluster) else -1

    def add_to_position(self, idx: int, quantity: int, price: float) -> None:
        """A top-up: the entry price becomes the average fill price of the shares held."""
        total = int(self.shares[idx]) + quantity
        self.entry_price[idx] = (self.shares[idx] * self.entry_price[idx] + quantity * price) / total
        self.shares[idx] = total

    def close_position(self, idx: int) -> None:
        self.shares[idx] = 0
        self.entry_date[idx] = NOT_HELD
        for name in ("entry_price", "highest_close", "stop_level", "last_close"):
            getattr(self, name)[idx] = np.nan
        self.days_held[idx] = 0
        self.cluster[idx] = -1


def empty_state(n_symbols: int, cash: float) -> PortfolioState:
    nan = lambda: np.full(n_symbols, np.nan)  # noqa: E731
    return PortfolioState(
        cash=float(cash), shares=np.zeros(n_symbols, dtype=np.int64), entry_date=np.full(n_symbols, NOT_HELD),
        entry_price=nan(), highest_close=nan(), stop_level=nan(), last_close=nan(),
        days_held=np.zeros(n_symbols, dtype=np.int64), cluster=np.full(n_symbols, -1, dtype=np.int64),
        exit_day=np.full(n_symbols, NO_EXIT, dtype=np.int64), peak_equity=float(cash),
    )


def fresh_state(n_symbols: int, config: TrendflowConfig) -> PortfolioState:
    """All cash (`execution.initial_cash`), nothing held, day 0 (a rebalance day)."""
    return empty_state(n_symbols, config.execution.initial_cash)


@dataclass
class DayRecord:
    """One day: fills at its session, the orders standing at its close (to fill next session, or
    filled at that close), unfilled orders, and its closing values."""

    t: int
    date: pd.Timestamp
    fills: list[Fill]
    orders: list[Order]
    unfilled: list[Order]     # not filled in full and dropped (buys; sells of shares no longer held)
    waiting: list[Order]      # sells not filled in full that stay pending for the next session
    blocked: dict[str, int]   # orders not filled in full by reason (note), dropped or waiting
    equity: float
    cash: float
    positions_value: float
    traded_value: float
    costs: float
    breaker_on: bool
    market_drawdown: float


Decide = Callable[[PortfolioState, Day, TrendflowConfig, np.ndarray], list[Order]]


def step(state: PortfolioState, day: Day, config: TrendflowConfig, decide: Decide | None = None) -> DayRecord:
    """Advance `state` (after the close of the previous day) through `day`. `decide` makes the
    day's orders (default: the signal rules, `decide_by_signals`)."""
    decide = decide or decide_by_signals
    apply_corporate_actions(state, day, config)
    fills: list[Fill] = []
    unfilled: list[Order] = []
    next_open = config.execution.fill_price == "next_open"
    if next_open:
        fills, unfilled = fill_orders(state, state.pending, day.open, day, config)
        carried = [o for o in unfilled if o.side == "SELL" and state.shares[o.symbol] > 0]
    else:  # sells that could not fill at an earlier close (price limit, volume cap) try again at this one
        carried = [o for o in state.pending if o.side == "SELL" and state.shares[o.symbol] > 0]
    state.pending = []
    mark_to_close(state, day)
    fills += sell_ended_series(state, day, config)
    carried = [o for o in carried if state.shares[o.symbol] > 0]
    state.breaker_on, state.market_drawdown = day.breaker_on, day.market_drawdown
    busy = np.zeros(len(state.shares), dtype=bool)
    busy[[o.symbol for o in carried]] = True
    orders = carried + decide(state, day, config, busy)
    if next_open:
        state.pending = orders
    else:
        more, at_close = fill_orders(state, orders, day.close, day, config)
        fills += more
        unfilled += at_close
        state.pending = [o for o in at_close if o.side == "SELL" and state.shares[o.symbol] > 0]
    waiting = {id(o) for o in (carried if next_open else state.pending)}
    blocked: dict[str, int] = {}
    for order in unfilled:
        blocked[order.note] = blocked.get(order.note, 0) + 1
    positions_value = state.positions_value()
    equity = state.cash + positions_value
    state.peak_equity = max(state.peak_equity, equity)
    state.day_index += 1
    return DayRecord(
        t=day.t, date=day.date, fills=fills, orders=orders, unfilled=[o for o in unfilled if id(o) not in waiting],
        waiting=[o for o in unfilled if id(o) in waiting], blocked=blocked, equity=equity, cash=state.cash, positions_value=positions_value,
        traded_value=sum(f.quantity * f.price for f in fills), costs=sum(f.commission + f.slippage for f in fills),
        breaker_on=day.breaker_on, market_drawdown=day.market_drawdown,
    )


def apply_corporate_actions(state: PortfolioState, day: Day, config: TrendflowConfig) -> None:
    """Before the session (raw prices only): a cash dividend per share held at the previous close is
    credited on its ex-date; a split multiplies the shares held (whole lots; a reverse split's odd
    shares are paid in cash at the previous close / ratio) and divides every per-share level --
    entry price, highest close, stop level, last close -- so no stop fires on a split. Pending
    orders of a split symbol are rescaled the same way."""
    if day.dividend is not None:
        paid = np.flatnonzero(state.shares * day.dividend)
        state.cash += float(state.shares[paid] @ day.dividend[paid])
    if day.split is None:
        return
    for idx in np.flatnonzero(day.split != 1.0).tolist():
        ratio = float(day.split[idx])
        state.pending = [replace(o, shares=split_shares(o.shares, ratio, config.execution.lot_size)[0],
                                 reference_price=o.reference_price / ratio) if o.symbol == idx else o
                         for o in state.pending]  # new orders: the day's record keeps the ones decided
        if state.shares[idx] == 0:
            continue
        for name in ("entry_price", "highest_close", "stop_level", "last_close"):
            getattr(state, name)[idx] /= ratio
        shares, odd = split_shares(int(state.shares[idx]), ratio, config.execution.lot_size)
        state.cash += odd * float(state.last_close[idx])
        if shares == 0:
            state.close_position(idx)
        else:
            state.shares[idx] = shares
    state.pending = [o for o in state.pending if o.shares > 0]


def mark_to_close(state: PortfolioState, day: Day) -> None:
    """Holdings that traded take today's close (and cluster); the highest close since entry follows
    it; every holding has been held one more day (suspended ones keep their last close)."""
    held = np.flatnonzero(state.shares)
    priced = held[day.tradable[held]]
    state.last_close[priced] = day.close[priced]
    state.highest_close[priced] = np.fmax(state.highest_close[priced], day.close[priced])
    state.cluster[priced] = day.cluster[priced]
    state.days_held[held] += 1


def sell_ended_series(state: PortfolioState, day: Day, config: TrendflowConfig) -> list[Fill]:
    """Holdings whose data has ended (rules.data_ended_hits) are sold today at their last close,
    through the normal fill (slippage, commission), reason data_ended."""
    ended = np.flatnonzero(state.held & data_ended_hits(day.sessions_without_price, config))
    if not len(ended):
        return []
    orders = [Order(int(i), "SELL", int(state.shares[i]), "data_ended", np.nan, np.nan, 0.0, float(state.last_close[i]), day.date)
              for i in ended]
    priced = day.tradable.copy()
    priced[ended] = True
    fills, _ = fill_orders(state, orders, state.last_close.copy(), replace(day, tradable=priced), config)
    return fills


def decide_by_signals(state: PortfolioState, day: Day, config: TrendflowConfig, busy: np.ndarray) -> list[Order]:
    """The decision at the close: risk exits every day, then (rebalance days) selection and sizing.
    `busy` symbols already have a pending sell and are left alone."""
    held = state.held
    idx = np.flatnonzero(held & day.tradable & ~busy)
    state.stop_level[idx] = trailing_stop_levels(state.stop_level[idx], state.highest_close[idx], day.atr[idx],
                                                 config.risk.atr_multiplier)
    close = day.close[idx]
    atr_stop = atr_stop_hits(close, state.stop_level[idx])
    time_stop = time_stop_hits(close, state.entry_price[idx], state.days_held[idx], config)
    exiting = atr_stop | time_stop | sell_signal_hits(day.trend_signal[idx], config)
    orders = [make_order(day, i, "SELL", int(state.shares[i]), risk_exit_reason(a, b), 0.0)
              for i, a, b in zip(idx[exiting].tolist(), atr_stop[exiting].tolist(), time_stop[exiting].tolist())]
    state.exit_day[idx[exiting]] = state.day_index
    if not is_rebalance_day(state.day_index, config):
        return orders
    active = held & ~busy
    active[idx[exiting]] = False
    blocked = busy | reentry_blocked(state.exit_day, state.day_index, config)
    return orders + rebalance(state, day, config, active, blocked)


def rebalance(state: PortfolioState, day: Day, config: TrendflowConfig, active: np.ndarray,
              blocked: np.ndarray) -> list[Order]:
    """Selection (buffer zone, cluster cap, position limit, breaker) -> target weights -> orders:
    sells of dropped holdings, resizes of kept ones, new entries; sells before buys, buys in rank order.
    `active` = holdings taking part (not exiting, no sell pending); `blocked` symbols (a sell pending,
    or a risk exit within the re-entry cooldown) keep their rank but are not bought."""
    score = np.where(day.tradable, day.momentum_score, np.nan)
    ranking = inertia_ranking(score, active, config.scoring.inertia_bonus)
    cluster = np.where(active & ~np.isfinite(score), state.cluster, day.cluster).astype(np.int64)
    unranked_held = active & ~np.isfinite(score)
    buyable = buy_candidates(day.trend_signal, day.tradable, day.breaker_on) & ~blocked
    selection = select_targets(ranking, active, unranked_held, buyable, cluster, config)

    sells = [make_order(day, i, "SELL", int(state.shares[i]), selection.sell[i], 0.0) for i in sorted(selection.sell)]
    members = np.array(selection.keep + selection.buy, dtype=np.int64)
    weights = target_weights(day.volatility[members], cluster[members], config)
    equity = state.equity()
    want = lot_shares(weights * equity, day.close[members], config.execution.lot_size)
    have = np.where(active[members], state.shares[members], 0)  # an exiting holding is sized as not held
    priority = np.full(len(state.shares), -1)  # buys go in rank order (unranked holdings first)
    priority[ranking] = np.arange(len(ranking))
    resize_sells: list[Order] = []
    buys: list[tuple[int, Order]] = []
    for k in np.flatnonzero(day.tradable[members] & (want != have)).tolist():
        idx, weight = int(members[k]), float(weights[k])
        if have[k] == 0:
            buys.append((priority[idx], make_order(day, idx, "BUY", int(want[k]), "new_entry", weight)))
        elif not resize_needed(weight, have[k] * day.close[idx] / equity, config):
            continue
        elif want[k] < have[k]:
            resize_sells.append(make_order(day, idx, "SELL", int(have[k] - want[k]), "rebalance", weight))
        elif not day.breaker_on:
            buys.append((priority[idx], make_order(day, idx, "BUY", int(want[k] - have[k]), "rebalance", weight)))
    return sells + resize_sells + [order for _, order in sorted(buys, key=lambda pair: pair[0])]


def decide_by_weights(weights: np.ndarray | None) -> Decide:
    """External weights mode: on a date with a row of target weights, trade every symbol to its
    target (whole lots, same costs); symbols absent from the row target 0. No rule of the signal
    mode applies -- the weights are the decision. Days without a row: no orders."""

    def decide(state: PortfolioState, day: Day, config: TrendflowConfig, busy: np.ndarray) -> list[Order]:
        if weights is None:
            return []
        equity = state.equity()
        want = lot_shares(weights * equity, day.close, config.execution.lot_size)
        trade = day.tradable & ~busy & (want != state.shares)
        sells = [make_order(day, i, "SELL", int(state.shares[i] - want[i]), "target_weight", float(weights[i]))
                 for i in np.flatnonzero(trade & (want < state.shares))]
        buys = [make_order(day, i, "BUY", int(want[i] - state.shares[i]), "target_weight", float(weights[i]))
                for i in np.flatnonzero(trade & (want > state.shares))]
        return sells + buys

    return decide


def make_order(day: Day, idx: int, side: str, shares: int, reason: str, weight: float) -> Order:
    return Order(
        symbol=int(idx), side=side, shares=int(shares), reason=reason, signal_strength=float(day.signal_strength[idx]),
        momentum_score=float(day.momentum_score[idx]), target_weight=float(weight),
        reference_price=float(day.close[idx]), decided=day.date,
    )


def fill_orders(state: PortfolioState, orders: list[Order], prices: np.ndarray, day: Day,
                config: TrendflowConfig) -> tuple[list[Fill], list[Order]]:
    """The one place orders become fills (backtest, daily run and paper broker alike).

    Fills `orders` at `prices` (the session's open, or its close) with slippage and fees, updating
    `state` as it goes: all sells first (sized by the shares actually held), then buys in order,
    each shrunk to whole lots that cash (after the earlier fills) can pay for. Returns the fills
    and the orders not filled in full, each with `note` saying why: `suspended` (no price),
    `limit_up` / `limit_down` (price limits), `t_plus_one` (shares bought this session),
    `volume_cap` (the rest above the session's volume cap, which counts every batch filled in the
    session), `cash` (not even one lot affordable).
    An unfilled sell carries its unfilled shares; the caller keeps it pending (next_open) or retries
    it at the next close."""
    if state.session != day.date:
        state.session, state.session_bought, state.session_traded = day.date, {}, {}
    fills: list[Fill] = []
    unfilled: list[Order] = []
    for order in [o for o in orders if o.side == "SELL"] + [o for o in orders if o.side == "BUY"]:
        idx = order.symbol
        ref = float(prices[idx])
        if not (day.tradable[idx] and ref > 0):
            unfilled.append(replace(order, note="suspended"))
            continue
        if day.price_band is not None and day.prev_close is not None:
            limit = price_limit_block(order.side, ref, float(day.prev_close[idx]), float(day.price_band[idx]),
                                      config.market.price_decimals if config.market.price_decimals is not None else 3)
            if limit:
                unfilled.append(replace(order, note=limit))
                continue
        cap = volume_cap_shares(float(day.volume[idx]), config) if day.volume is not None else None
        if cap is not None:  # the cap is per session: earlier batches of this session used part of it
            cap = max(cap - state.session_traded.get(idx, 0), 0)
        price = float(slipped_price(ref, order.side, config))
        if order.side == "SELL":
            t1 = day.t_plus_one is not None and bool(day.t_plus_one[idx])
            wanted = min(order.shares, int(state.shares[idx]))
            sellable = sellable_shares(int(state.shares[idx]), state.session_bought.get(idx, 0), t1)
            quantity = min(wanted, sellable, wanted if cap is None else cap)
            if wanted <= 0:
                unfilled.append(replace(order, note="not_held"))
                continue
            if quantity < wanted:
                note = "t_plus_one" if sellable == quantity else "volume_cap"
                unfilled.append(replace(order, shares=wanted - quantity, note=note))
            if quantity <= 0:
                continue
            fee = float(trade_fees(quantity * price, "SELL", config))
            state.cash += quantity * price - fee
            state.shares[idx] -= quantity
            if state.shares[idx] == 0:
                state.close_position(idx)
        else:
            wanted = order.shares if cap is None else min(order.shares, cap)
            quantity = affordable_shares(wanted, price, state.cash, config)
            if wanted < order.shares:
                unfilled.append(replace(order, shares=order.shares - wanted, note="volume_cap"))
            if quantity <= 0:
                if wanted > 0:
                    unfilled.append(replace(order, note="cash"))
                continue
            fee = float(trade_fees(quantity * price, "BUY", config))
            state.cash -= quantity * price + fee
            state.session_bought[idx] = state.session_bought.get(idx, 0) + quantity
            if state.shares[idx] == 0:
                state.open_position(idx, quantity, price, day, float(day.close[idx]))
            else:
                state.add_to_position(idx, quantity, price)
        state.session_traded[idx] = state.session_traded.get(idx, 0) + quantity
        fills.append(Fill(idx, order.side, quantity, price, fee, abs(price - ref) * quantity, order.reason, order.decided))
    return fills, unfilled
