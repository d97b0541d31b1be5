"""One engine: `step` advances a portfolio by one trading day; the backtest folds it over history and
the daily run calls it once from a saved snapshot, so the two cannot disagree.

A day t in `next_open` mode: fill the orders decided at close t-1 at today's open (sells first,
so buys can use their cash) -> mark holdings to today's close -> risk exits -> on rebalance days
select and size targets -> orders decided at close t, filled on t+1. In `close` mode the orders
decided at close t are filled at that close. A symbol with no price row today (suspended) gets
no fill and is valued at its last close.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.trading.market import Market
from stages.trading.rules import (
    Position,
    atr_stop_hit,
    commission,
    lot_shares,
    ranked_with_inertia,
    select_targets,
    sell_signal_exit,
    slipped_price,
    target_weights,
    time_stop_hit,
    trailing_stop_level,
)


@dataclass
class Order:
    symbol: int
    side: str
    shares: int
    reason: str
    signal_strength: float
    momentum_score: float
    target_weight: float
    reference_price: float


@dataclass
class PortfolioState:
    cash: float
    holdings: dict[int, Position] = field(default_factory=dict)
    pending: list[Order] = field(default_factory=list)
    day_index: int = 0
    peak_equity: float = 0.0

    def equity(self) -> float:
        return self.cash + sum(p.shares * p.last_close for p in self.holdings.values())


@dataclass
class Fill:
    symbol: int
    side: str
    quantity: int
    price: float
    commission: float
    slippage: float
    reason: str


@dataclass
class DayRecord:
    """What happened on one day: fills at its session, orders decided at its close, its close values."""

    t: int
    fills: list[Fill]
    orders: list[Order]
    equity: float
    cash: float
    positions_value: float
    traded_value: float
    costs: float
    breaker_on: bool
    unfilled: list[Order]


def fresh_state(config: TrendflowConfig) -> PortfolioState:
    cash = config.execution.initial_cash
    return PortfolioState(cash=cash, peak_equity=cash)


def step(state: PortfolioState, market: Market, t: int, config: TrendflowConfig, *,
         weights_mode: bool = False, target_weights_today: dict[int, float] | None = None) -> DayRecord:
    """Advance `state` (after close t-1) through day t. In external weights mode the signal rules
    are replaced by trading to `target_weights_today` (None: not a rebalance date, no orders)."""
    fills: list[Fill] = []
    unfilled: list[Order] = []
    fill_at_open = config.execution.fill_price == "next_open"
    if fill_at_open:
        fills, unfilled = _execute(state, state.pending, market, t, market.open[t], config)
        state.pending = []

    _mark_to_close(state, market, t)
    if weights_mode:
        orders = [] if target_weights_today is None else _orders_to_targets(state, market, t, target_weights_today, config)
    else:
        orders = decide_orders(state, market, t, config)
    if fill_at_open:
        state.pending = orders
    else:
        more, unfilled = _execute(state, orders, market, t, market.close[t], config)
        fills += more
        _mark_to_close(state, market, t)

    positions_value = sum(p.shares * p.last_close for p in state.holdings.values())
    equity = state.cash + positions_value
    state.peak_equity = max(state.peak_equity, equity)
    state.day_index += 1
    return DayRecord(
        t=t, fills=fills, orders=orders, equity=equity, cash=state.cash, positions_value=positions_value,
        traded_value=sum(f.quantity * f.price for f in fills), costs=sum(f.commission + f.slippage for f in fills),
        breaker_on=bool(market.breaker_on[t]), unfilled=unfilled,
    )


def _mark_to_close(state: PortfolioState, market: Market, t: int) -> None:
    """Holdings take today's close where they traded; the highest close since entry follows."""
    for idx, pos in state.holdings.items():
        close = market.close[t, idx]
        if math.isfinite(close):
            pos.last_close = float(close)
            pos.highest_close = max(pos.highest_close, float(close))


def decide_orders(state: PortfolioState, market: Market, t: int, config: TrendflowConfig) -> list[Order]:
    """The decision at close t: risk exits every day, then selection and sizing on rebalance days."""
    orders: list[Order] = []
    exiting: set[int] = set()
    for idx in sorted(state.holdings):
        pos = state.holdings[idx]
        if not market.tradable[t, idx]:
            continue
        pos.days_held += 1
        pos.stop_level = trailing_stop_level(pos, market.atr[t, idx], config.risk.atr_multiplier)
        close = pos.last_close
        reason = None
        if atr_stop_hit(pos, close):
            reason = "atr_stop"
        elif time_stop_hit(pos, close, config):
            reason = "time_stop"
        elif sell_signal_exit(market.trend_signal[t, idx], config):
            reason = "sell_signal"
        if reason:
            exiting.add(idx)
            orders.append(_order(market, t, idx, "SELL", pos.shares, reason, 0.0))

    if state.day_index % config.scoring.rebalance_frequency != 0:
        return orders

    held_mask = np.zeros(len(market.symbols), dtype=bool)
    survivors = [i for i in state.holdings if i not in exiting]
    held_mask[survivors] = True
    score = np.where(market.tradable[t], market.momentum_score[t], np.nan)
    if exiting:
        score[sorted(exiting)] = np.nan
    order, ranks = ranked_with_inertia(score, held_mask, config.scoring.inertia_bonus)
    selection = select_targets(order, ranks, set(survivors), market.trend_signal[t], market.cluster[t],
                               market.tradable[t], bool(market.breaker_on[t]), config)
    for idx in sorted(selection.sell):
        if market.tradable[t, idx]:
            orders.append(_order(market, t, idx, "SELL", state.holdings[idx].shares, selection.sell[idx], 0.0))
    targets = selection.keep + selection.buy
    weights = target_weights(targets, market.volatility[t], market.cluster[t], config)
    equity = state.equity()
    threshold = config.position_sizing.rebalance_threshold
    buys: list[Order] = []
    for idx in targets:
        if not market.tradable[t, idx]:
            continue
        price = float(market.close[t, idx])
        want = lot_shares(weights[idx] * equity, price, config.execution.lot_size)
        have = state.holdings[idx].shares if idx in state.holdings else 0
        if have == 0:
            if want > 0:
                buys.append(_order(market, t, idx, "BUY", want, "new_entry", weights[idx]))
            continue
        if abs(want - have) * price / equity <= threshold or want == have:
            continue
        side = "BUY" if want > have else "SELL"
        order_ = _order(market, t, idx, side, abs(want - have), "rebalance", weights[idx])
        (buys if side == "BUY" else orders).append(order_)
    return orders + buys  # sells before buys


def _orders_to_targets(state: PortfolioState, market: Market, t: int, weights: dict[int, float],
                       config: TrendflowConfig) -> list[Order]:
    """External weights mode: trade every symbol towards its given target weight (lots, costs as usual)."""
    equity = state.equity()
    sells, buys = [], []
    for idx in sorted(set(weights) | set(state.holdings)):
        if not market.tradable[t, idx]:
            continue
        price = float(market.close[t, idx])
        weight = weights.get(idx, 0.0)
        want = lot_shares(weight * equity, price, config.execution.lot_size)
        have = state.holdings[idx].shares if idx in state.holdings else 0
        if want == have:
            continue
        side = "BUY" if want > have else "SELL"
        (buys if side == "BUY" else sells).append(_order(market, t, idx, side, abs(want - have), "target_weight", weight))
    return sells + buys


def _order(market: Market, t: int, idx: int, side: str, shares: int, reason: str, weight: float) -> Order:
    return Order(
        symbol=idx, side=side, shares=int(shares), reason=reason,
        signal_strength=float(market.signal_strength[t, idx]), momentum_score=float(market.momentum_score[t, idx]),
        target_weight=float(weight), reference_price=float(market.close[t, idx]),
    )


def _execute(state: PortfolioState, orders: list[Order], market: Market, t: int, prices: np.ndarray,
             config: TrendflowConfig) -> tuple[list[Fill], list[Order]]:
    """Fill orders at `prices` (sells first). No price -> no fill. A buy shrinks to what cash allows
    (whole lots, commission included), so cash never goes negative."""
    fills: list[Fill] = []
    unfilled: list[Order] = []
    day = market.dates[t].date()
    for order in sorted(orders, key=lambda o: o.side != "SELL"):
        ref = prices[order.symbol]
        if not (math.isfinite(ref) and ref > 0) or not market.tradable[t, order.symbol]:
            unfilled.append(order)
            continue
        price = slipped_price(float(ref), order.side, config)
        if order.side == "SELL":
            pos = state.holdings.get(order.symbol)
            quantity = min(order.shares, pos.shares) if pos else 0
            if quantity <= 0:
                unfilled.append(order)
                continue
            value = quantity * price
            fee = commission(value, config)
            state.cash += value - fee
            pos.shares -= quantity
            if pos.shares == 0:
                del state.holdings[order.symbol]
        else:
            quantity = affordable_shares(order.shares, price, state.cash, config)
            if quantity <= 0:
                unfilled.append(order)
                continue
            value = quantity * price
            fee = commission(value, config)
            state.cash -= value + fee
            pos = state.holdings.get(order.symbol)
            close = float(market.close[t, order.symbol])
            if pos is None:
                state.holdings[order.symbol] = Position(
                    shares=quantity, entry_date=day, entry_price=price, highest_close=close, stop_level=0.0,
                    last_close=close, days_held=0, cluster=int(np.nan_to_num(market.cluster[t, order.symbol], nan=-1)),
                )
            else:
                pos.shares += quantity
        fills.append(Fill(order.symbol, order.side, quantity, price, fee, abs(price - float(ref)) * quantity, order.reason))
    return fills, unfilled


def affordable_shares(wanted: int, price: float, cash: float, config: TrendflowConfig) -> int:
    """The largest whole-lot quantity <= wanted whose cost plus commission fits in `cash`."""
    lot = config.execution.lot_size
    quantity = min(wanted, lot_shares(cash / (1.0 + config.execution.commission_rate), price, lot))
    while quantity > 0 and quantity * price + commission(quantity * price, config) > cash:
        quantity -= lot
    return max(quantity, 0)
