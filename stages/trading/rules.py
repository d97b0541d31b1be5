"""Trading rules, each one small function that says what it reads and what it decides (bt-style).

The day step (engine.py) calls them in this order: fills -> marks -> risk exits -> (rebalance day)
selection -> sizing -> orders. All parameters come from the config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from schemas.config import TrendflowConfig


@dataclass
class Position:
    shares: int
    entry_date: object
    entry_price: float
    highest_close: float
    stop_level: float
    last_close: float
    days_held: int
    cluster: int


# --------------------------------------------------------------------------- risk exits
def trailing_stop_level(pos: Position, atr: float, multiplier: float) -> float:
    """Requires: highest close since entry, today's ATR. Sets: max(previous stop, highest - m x ATR).
    The stop only ever rises (Chandelier exit)."""
    if not math.isfinite(atr):
        return pos.stop_level
    return max(pos.stop_level, pos.highest_close - multiplier * atr)


def atr_stop_hit(pos: Position, close: float) -> bool:
    """Decides: exit when the close falls below the trailing stop level."""
    return close < pos.stop_level


def time_stop_hit(pos: Position, close: float, config: TrendflowConfig) -> bool:
    """Decides: exit a position held >= time_stop_days whose return since entry is below time_stop_threshold."""
    risk = config.risk
    return pos.days_held >= risk.time_stop_days and close / pos.entry_price - 1.0 < risk.time_stop_threshold


def sell_signal_exit(signal: float, config: TrendflowConfig) -> bool:
    """Decides (optional): exit on a -1 trend signal when risk.exit_on_sell_signal is on."""
    return config.risk.exit_on_sell_signal and signal == -1


# --------------------------------------------------------------------------- selection
def ranked_with_inertia(score: np.ndarray, held: np.ndarray, bonus: float) -> tuple[np.ndarray, np.ndarray]:
    """Requires: today's momentum scores (NaN = not eligible), held mask. Sets: symbols in rank
    order and their 1-based ranks after adding the ADDITIVE inertia bonus to held symbols' scores
    (additive, so a held symbol with a negative score is lifted, never pushed further down)."""
    adjusted = np.where(held, score + bonus, score)
    eligible = np.flatnonzero(~np.isnan(adjusted))
    order = eligible[np.lexsort((eligible, -adjusted[eligible]))]
    ranks = np.full(score.shape, np.nan)
    ranks[order] = np.arange(1, len(order) + 1)
    return order, ranks


@dataclass
class Selection:
    keep: list[int]
    buy: list[int]
    sell: dict[int, str]  # symbol index -> reason


def select_targets(
    order: np.ndarray,
    ranks: np.ndarray,
    held: set[int],
    signal: np.ndarray,
    cluster: np.ndarray,
    tradable: np.ndarray,
    breaker_on: bool,
    config: TrendflowConfig,
) -> Selection:
    """Buffer zone + cluster cap + position limit, walking the ranking from the top.

    - a symbol is admissible while its cluster holds fewer than max_positions_per_cluster picks
      (cluster -1 = unclustered, no cap) and fewer than max_positions are picked;
    - a held symbol is kept while admissible and rank <= hold_until_rank; else sold
      ("cluster_cap" when its cluster or the position limit is full, "rank_out_of_buffer" otherwise);
    - a new symbol is bought when admissible, among the first buy_top_n admissible symbols, with
      trend signal 1, tradable today, and the market circuit breaker off.
    Held symbols without a score today (suspended, no longer eligible) are kept untouched.
    """
    s, cl = config.scoring, config.clustering
    max_positions = config.position_sizing.max_positions
    per_cluster: dict[int, int] = {}

    def cluster_of(idx: int) -> int:
        return int(cluster[idx]) if math.isfinite(cluster[idx]) else -1

    keep = sorted(i for i in held if math.isnan(ranks[i]))  # no score today: hold as is
    for idx in keep:
        per_cluster[cluster_of(idx)] = per_cluster.get(cluster_of(idx), 0) + 1
    buy: list[int] = []
    sell: dict[int, str] = {}
    admissible_seen = 0
    for idx in order.tolist():
        if ranks[idx] > s.hold_until_rank and admissible_seen >= s.buy_top_n:
            break
        c = cluster_of(idx)
        cluster_full = c >= 0 and per_cluster.get(c, 0) >= cl.max_positions_per_cluster
        slots_full = len(keep) + len(buy) >= max_positions
        if idx in held:
            if ranks[idx] > s.hold_until_rank:
                sell[idx] = "rank_out_of_buffer"
                continue
            if cluster_full or slots_full:
                sell[idx] = "cluster_cap"
                continue
            keep.append(idx)
        else:
            if cluster_full or slots_full:
                continue
            if admissible_seen >= s.buy_top_n:
                continue
            if not (signal[idx] == 1 and tradable[idx] and not breaker_on):
                admissible_seen += 1
                continue
            buy.append(idx)
        admissible_seen += 1
        per_cluster[c] = per_cluster.get(c, 0) + 1
    for idx in held:
        if idx not in sell and idx not in keep:
            sell[idx] = "rank_out_of_buffer"
    return Selection(keep=keep, buy=buy, sell=sell)


# --------------------------------------------------------------------------- sizing and costs
def target_weights(
    members: list[int], volatility: np.ndarray, cluster: np.ndarray, config: TrendflowConfig
) -> dict[int, float]:
    """Requires: the target set, annualised volatility, clusters. Sets: weights proportional to
    1 / volatility summing to max_total_exposure (applied once, here), each capped at
    max_position_size, each cluster's total capped at max_cluster_size (scaled down pro rata).
    Capped-away weight stays in cash. A missing volatility uses the set's median."""
    if not members:
        return {}
    ps = config.position_sizing
    vols = np.array([volatility[i] for i in members], dtype=float)
    finite = np.isfinite(vols) & (vols > 0)
    fill = float(np.median(vols[finite])) if finite.any() else 1.0
    inverse = 1.0 / np.where(finite, vols, fill)
    weights = ps.max_total_exposure * inverse / inverse.sum()
    weights = np.minimum(weights, ps.max_position_size)
    clusters = np.array([int(cluster[i]) if math.isfinite(cluster[i]) else -1 for i in members])
    for c in np.unique(clusters[clusters >= 0]):
        in_c = clusters == c
        total = weights[in_c].sum()
        if total > ps.max_cluster_size:
            weights[in_c] *= ps.max_cluster_size / total
    return {idx: float(w) for idx, w in zip(members, weights)}


def lot_shares(value: float, price: float, lot_size: int) -> int:
    """Shares worth at most `value` at `price`, rounded down to whole lots."""
    if value <= 0 or not price > 0:
        return 0
    return int(math.floor(value / price / lot_size + 1e-9)) * lot_size


def commission(value: float, config: TrendflowConfig) -> float:
    """max(rate x traded value, minimum per order)."""
    ex = config.execution
    return max(ex.commission_rate * value, ex.commission_minimum)


def slipped_price(price: float, side: str, config: TrendflowConfig) -> float:
    """Buys pay, sells receive, `slippage_bps` worse than the reference price."""
    move = config.execution.slippage_bps / 10_000.0
    return price * (1.0 + move) if side == "BUY" else price * (1.0 - move)
