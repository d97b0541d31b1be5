"""Trading rules, one small function each, bt-style: the docstring says what the rule reads
(`Requires`) and what it decides (`Decides`). Every parameter comes from the config.

The day step (engine.py) calls them in this order at the close of each day:
  risk exits (trailing ATR stop, time stop, optional sell signal)  -- every day
  rebalance day? -> inertia ranking -> buffer zone / cluster cap / position limit / breaker
  -> inverse-volatility target weights with caps -> whole-lot orders, sells before buys
and at the next session's open (or at the same close) the fills (engine.fill_orders) use lots,
fees by side and slippage, and -- with a market preset (`market.preset`) -- the market rules:
price limits, the volume cap and T+1 settlement.
Rules take numpy arrays -- over the universe for ranking, over the positions checked for exits --
never a Python loop over symbols (only the short walk down the ranking on rebalance days).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.config import TrendflowConfig


# --------------------------------------------------------------------------- risk exits
# Each takes arrays over the positions being checked (held, priced today, no sell pending).
def trailing_stop_levels(stop_level: np.ndarray, highest_close: np.ndarray, atr: np.ndarray,
                         multiplier: float) -> np.ndarray:
    """Requires: the previous stop levels, highest close since entry, today's ATR. Decides: the new
    stop = max(previous stop, highest close - atr_multiplier x ATR) (a Chandelier exit): the level
    never decreases, and stays where it was on a day without an ATR."""
    return np.fmax(stop_level, highest_close - multiplier * atr)


def atr_stop_hits(close: np.ndarray, stop_level: np.ndarray) -> np.ndarray:
    """Requires: today's close, the trailing stop level. Decides: exit where the close is below the stop."""
    return close < stop_level


def time_stop_hits(close: np.ndarray, entry_price: np.ndarray, days_held: np.ndarray, config: TrendflowConfig) -> np.ndarray:
    """Requires: close, entry price, days held. Decides: exit a position held at least
    `risk.time_stop_days` closes whose return since entry is below `risk.time_stop_threshold`
    (a trend that never came)."""
    risk = config.risk
    return (days_held >= risk.time_stop_days) & (close / entry_price - 1.0 < risk.time_stop_threshold)


def sell_signal_hits(trend_signal: np.ndarray, config: TrendflowConfig) -> np.ndarray:
    """Requires: today's trend signal. Decides (only with `risk.exit_on_sell_signal`): exit on -1."""
    return (trend_signal == -1) & config.risk.exit_on_sell_signal


def data_ended_hits(sessions_without_price: np.ndarray, config: TrendflowConfig) -> np.ndarray:
    """Requires: sessions since each position's last price while the panel goes on. Decides: its data
    has ended once that reaches `risk.data_ended_sessions` -- sell at the last close (data_ended),
    rather than carry a frozen mark into every later metric."""
    return sessions_without_price >= config.risk.data_ended_sessions


def risk_exit_reason(atr_stop: bool, time_stop: bool) -> str:
    """Decides the reason of a risk exit, the first that applies: atr_stop, time_stop, sell_signal."""
    return "atr_stop" if atr_stop else "time_stop" if time_stop else "sell_signal"


def reentry_blocked(exit_day: np.ndarray, day_index: int, config: TrendflowConfig) -> np.ndarray:
    """Requires: the day_index of each symbol's last risk exit, today's day_index. Decides: which
    symbols may not be bought today -- those exited by a risk rule today or within the last
    `risk.reentry_cooldown_days` trading days (0: re-entry from the next decision on). A risk exit is
    never undone by a buy in the same decision, whatever the ranking."""
    return day_index - exit_day <= config.risk.reentry_cooldown_days


# --------------------------------------------------------------------------- selection
def is_rebalance_day(day_index: int, config: TrendflowConfig) -> bool:
    """Requires: trading days since the portfolio started. Decides: rebalance on day 0 and every
    `scoring.rebalance_frequency` days after it (risk exits run every day regardless)."""
    return day_index % config.scoring.rebalance_frequency == 0


def inertia_ranking(score: np.ndarray, held: np.ndarray, bonus: float) -> np.ndarray:
    """Requires: today's momentum scores (NaN = not rankable), which symbols are held. Decides: the
    ranking, best first, after ADDING `scoring.inertia_bonus` to held symbols' scores. Additive, so
    a held symbol with a negative score is lifted like any other (a multiplicative bonus would push
    it further down). Ties go to the symbol listed first."""
    adjusted = np.where(held, score + bonus, score)
    rankable = np.flatnonzero(np.isfinite(adjusted))
    return rankable[np.argsort(-adjusted[rankable], kind="stable")]


def buy_candidates(day_trend_signal: np.ndarray, tradable: np.ndarray, breaker_on: bool) -> np.ndarray:
    """Requires: trend signal, tradable mask, circuit breaker. Decides: which symbols may be bought
    today: trend signal 1, a price today, and the market circuit breaker off (it stops buys only)."""
    if breaker_on:
        return np.zeros_like(tradable)
    return tradable & (day_trend_signal == 1)


@dataclass
class Selection:
    """The rebalance decision: symbols kept and bought (in priority order), and sells with reasons."""

    keep: list[int]
    buy: list[int]
    sell: dict[int, str]


def select_targets(ranking: np.ndarray, held: np.ndarray, unranked_held: np.ndarray, buyable: np.ndarray,
                   cluster: np.ndarray, config: TrendflowConfig) -> Selection:
    """Buffer zone + cluster cap + position limit in one walk down the ranking.

    Requires: the inertia ranking, held symbols, held symbols without a score today (suspended or
    no longer eligible: kept as they are, counted first), buy candidates, clusters (-1 = no cap).
    Decides, walking from the best symbol:
    - a symbol whose cluster already has `clustering.max_positions_per_cluster` picks is skipped and
      takes no rank (a held one is sold, reason cluster_cap);
    - the others get consecutive admissible ranks r = 1, 2, ...;
    - held: kept while r <= `scoring.hold_until_rank` (buffer zone) and fewer than
      `position_sizing.max_positions` are picked; else sold (rank_out_of_buffer / position_limit);
    - not held: bought when r <= `scoring.buy_top_n`, a buy candidate, and a slot is free.
    A better-ranked new symbol therefore takes a cluster slot or position slot before a weaker
    holding, and a holding is never displaced by a symbol that cannot be bought today.
    """
    s = config.scoring
    cap = config.clustering.max_positions_per_cluster
    max_positions = config.position_sizing.max_positions
    keep = [int(i) for i in np.flatnonzero(unranked_held)]
    per_cluster: dict[int, int] = {}
    for idx in keep:
        per_cluster[int(cluster[idx])] = per_cluster.get(int(cluster[idx]), 0) + 1
    buy: list[int] = []
    sell: dict[int, str] = {}
    rank = 0
    for idx in ranking.tolist():
        if rank >= s.hold_until_rank:
            break
        c = int(cluster[idx])
        if c >= 0 and per_cluster.get(c, 0) >= cap:
            if held[idx]:
                sell[idx] = "cluster_cap"
            continue
        rank += 1
        slot_free = len(keep) + len(buy) < max_positions
        if held[idx]:
            if not slot_free:
                sell[idx] = "position_limit"
                continue
            keep.append(idx)
        elif rank <= s.buy_top_n and slot_free and buyable[idx]:
            buy.append(idx)
        else:
            continue
        per_cluster[c] = per_cluster.get(c, 0) + 1
    for idx in np.flatnonzero(held & ~unranked_held).tolist():
        if idx not in sell and idx not in keep:
            sell[idx] = "rank_out_of_buffer"
    return Selection(keep=keep, buy=buy, sell=sell)


# --------------------------------------------------------------------------- sizing
def target_weights(volatility: np.ndarray, cluster: np.ndarray, config: TrendflowConfig) -> np.ndarray:
    """Requires: the target symbols' annualised volatility and clusters. Decides: their weights.

    Proportional to 1 / volatility and summing to `position_sizing.max_total_exposure` -- the only
    place exposure is applied (target value = weight x equity). Each weight is capped at
    `max_position_size` and each cluster's total (-1 = unclustered, no cap) at `max_cluster_size`;
    what a cap removes is handed to the still-uncapped names in proportion to their inverse
    volatility (water-filling), and stays in cash once every name is capped. A missing volatility
    counts as the median of the others.
    """
    ps = config.position_sizing
    n = len(volatility)
    weights = np.zeros(n)
    if n == 0:
        return weights
    vol = np.asarray(volatility, dtype=float)
    known = np.isfinite(vol) & (vol > 0)
    inverse = 1.0 / np.where(known, vol, np.median(vol[known]) if known.any() else 1.0)
    cluster = np.asarray(cluster, dtype=np.int64)
    capped_cluster = cluster >= 0
    codes = np.where(capped_cluster, cluster, 0)
    free = np.ones(n, dtype=bool)
    for _ in range(n + 1):  # every pass fixes at least one name, or ends
        budget = ps.max_total_exposure - weights[~free].sum()
        if budget <= 1e-15 or not free.any():
            break
        weights[free] = budget * inverse[free] / inverse[free].sum()
        over = free & (weights > ps.max_position_size)
        if over.any():
            weights[over] = ps.max_position_size
            free &= ~over
            continue
        totals = np.bincount(codes[capped_cluster], weights=weights[capped_cluster], minlength=codes.max() + 1)
        full = capped_cluster & (totals[codes] > ps.max_cluster_size * (1 + 1e-12))
        if not full.any():
            break
        weights[full] *= ps.max_cluster_size / totals[codes[full]]
        free &= ~(capped_cluster & np.isin(codes, codes[full]))
    return weights


def resize_needed(target: float, current: float, config: TrendflowConfig) -> bool:
    """Requires: a kept holding's target and current weight. Decides: trade it back to target only
    when they differ by more than `position_sizing.rebalance_threshold` (saves small trades' costs)."""
    return abs(target - current) > config.position_sizing.rebalance_threshold


# --------------------------------------------------------------------------- orders and fills
def lot_shares(value, price, lot_size: int):
    """Shares worth at most `value` at `price`, rounded DOWN to whole lots (0 when not even one lot).
    Scalars give an int; arrays an int64 array."""
    value, price = np.broadcast_arrays(np.asarray(value, dtype=float), np.asarray(price, dtype=float))
    lots = np.zeros(value.shape)
    np.divide(value, price * lot_size, out=lots, where=price > 0)  # NaN price (no trade): 0 shares
    lots = np.floor(lots + 1e-9)
    shares = np.where(np.isfinite(lots) & (lots > 0), lots, 0).astype(np.int64) * lot_size
    return int(shares) if shares.ndim == 0 else shares


def commission(value, config: TrendflowConfig, side: str = "BUY"):
    """Commission of an order: max(rate x traded value, `commission_minimum`); the rate is
    `commission_rate`, or on sells `sell_commission_rate` when set."""
    ex = config.execution
    rate = ex.sell_commission_rate if side == "SELL" and ex.sell_commission_rate is not None else ex.commission_rate
    return np.maximum(rate * value, ex.commission_minimum)


def trade_fees(value, side: str, config: TrendflowConfig):
    """Requires: an order's traded value and side. Decides: everything it pays (the trade log's
    `commission` column): the side's commission, stamp duty on sells (`stamp_duty_rate`), and the
    transfer fee on both sides (`transfer_fee_rate`). With the defaults: the commission alone."""
    ex = config.execution
    stamp = (ex.stamp_duty_rate or 0.0) if side == "SELL" else 0.0
    extra = stamp + (ex.transfer_fee_rate or 0.0)
    fee = commission(value, config, side)
    return fee + extra * value if extra else fee


# --------------------------------------------------------------------------- market rules (presets)
# Each reads one symbol's facts for the session being filled; none applies unless switched on.
def board_price_limit(code: str) -> float:
    """Requires: an exchange code. Decides: the daily price band of its board -- 20% for ChiNext
    (300/301) and STAR (688, and 689 depositary receipts) shares and STAR ETFs (588), 10% otherwise.
    ETFs tracking ChiNext or STAR indices on other codes (159915...) are listed in config/cn_symbols.csv."""
    return 0.20 if code.startswith(("300", "301", "688", "689", "588")) else 0.10


def settlement_class(code: str, default: str) -> str:
    """Requires: an exchange code and `market.settlement`. Decides: T+0 for Shanghai cross-border
    (513), bond and money-market (511) and gold (518) ETFs; otherwise the market's default
    (other T+0 ETFs on Shenzhen codes are listed in config/cn_symbols.csv)."""
    return "T+0" if code.startswith(("511", "513", "518")) else default


def limit_prices(prev_close: float, band: float, decimals: int) -> tuple[float, float]:
    """Requires: the previous close and the band. Decides: (limit-down, limit-up) = previous close
    x (1 -/+ band), rounded half-up to the exchange's tick (`market.price_decimals`)."""
    scale = 10.0 ** decimals
    return (np.floor(prev_close * (1.0 - band) * scale + 0.5 + 1e-9) / scale,
            np.floor(prev_close * (1.0 + band) * scale + 0.5 + 1e-9) / scale)


def price_limit_block(side: str, price: float, prev_close: float, band: float, decimals: int) -> str:
    """Requires: the side, the session's fill reference price (the open for next_open fills, the
    close for close fills), the previous close and the band. Decides: "limit_up" for a buy at or
    above limit-up, "limit_down" for a sell at or below limit-down, else "" (no block; also when the
    band or previous close is unknown). A session that opens at the limit blocks the open fill --
    daily bars cannot tell whether the limit opened later in the day, so the engine does not guess."""
    if not (np.isfinite(band) and np.isfinite(prev_close) and prev_close > 0):
        return ""
    down, up = limit_prices(prev_close, band, decimals)
    tick = 0.5 / 10.0 ** decimals
    if side == "BUY" and price >= up - tick:
        return "limit_up"
    if side == "SELL" and price <= down + tick:
        return "limit_down"
    return ""


def volume_cap_shares(volume: float, config: TrendflowConfig) -> int | None:
    """Requires: the session's volume in shares. Decides: the most a fill may take, whole lots of
    `execution.max_volume_share` x volume (None = no cap: the cap is off or the volume unknown)."""
    share = config.execution.max_volume_share
    if share is None or not np.isfinite(volume):
        return None
    return lot_shares(share * volume, 1.0, config.execution.lot_size)


def sellable_shares(held: int, bought_this_session: int, t_plus_one: bool) -> int:
    """Requires: shares held, shares bought in this session, the symbol's settlement. Decides: how
    many may be sold now -- under T+1 not the ones bought in this session (cash from a sale is
    usable at once, so sell-A-buy-B rotations still work)."""
    return int(held) - int(bought_this_session) if t_plus_one else int(held)


def split_shares(shares: int, ratio: float, lot_size: int) -> tuple[int, float]:
    """Requires: shares held at the ex-date and the split ratio. Decides: the shares after the split,
    whole lots, and the fraction of (post-split) shares paid in cash (a reverse split's odd lot)."""
    exact = shares * ratio
    whole = lot_shares(exact, 1.0, lot_size)
    return whole, exact - whole


def slipped_price(price, side: str, config: TrendflowConfig):
    """Fill price: buys pay, sells receive, `execution.slippage_bps` worse than the reference price."""
    move = config.execution.slippage_bps / 10_000.0
    return price * (1.0 + move) if side == "BUY" else price * (1.0 - move)


def affordable_shares(wanted: int, price: float, cash: float, config: TrendflowConfig) -> int:
    """Requires: the wanted quantity, fill price, cash on hand. Decides: the largest whole-lot
    quantity <= wanted whose value plus fees fits in cash -- so cash never goes negative.
    cost(v) = v(1 + f) + max(rate v, minimum) <= cash  <=>  v <= cash / (1 + f + rate) and
    v <= (cash - minimum) / (1 + f), with f the transfer fee rate."""
    ex = config.execution
    fee = ex.transfer_fee_rate or 0.0
    most = min(cash / (1.0 + fee + ex.commission_rate), (cash - ex.commission_minimum) / (1.0 + fee))
    quantity = min(int(wanted), lot_shares(most, price, ex.lot_size)) if most > 0 else 0
    while quantity > 0 and quantity * price + float(trade_fees(quantity * price, "BUY", config)) > cash:
        quantity -= ex.lot_size
    return max(quantity, 0)
