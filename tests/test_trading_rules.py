"""Each trading rule on small hand-made cases with known answers (REFERENCE.md cases included).

`hand_market` builds the engine's market straight from small arrays; `hand_frames` builds
PricesSchema/SignalsSchema frames for the public `run_backtest`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from schemas.prices import PricesSchema
from schemas.signals import SignalsSchema
from stages.common.artifacts import validate_frame
from stages.common.config import load_config
from stages.common.errors import DataError
from stages.trading import run_backtest
from stages.trading.engine import Order, PortfolioState, empty_state, fresh_state, step
from stages.trading.market import Market, build_market, market_drawdown
from stages.trading.rules import (
    affordable_shares,
    commission,
    inertia_ranking,
    lot_shares,
    select_targets,
    slipped_price,
    target_weights,
    time_stop_hits,
    trailing_stop_levels,
)

SYMBOLS = list("ABCDEFGH")


def cfg(*overrides: str):
    return load_config(None, list(overrides))


def frictionless(*overrides: str):
    """No commission, no slippage, lots of 1 share: the numbers of a case stay round."""
    return cfg("execution.commission_minimum=0", "execution.commission_rate=0", "execution.slippage_bps=0",
               "execution.lot_size=1", *overrides)


def hand_market(close, *, open_=None, score=None, signal=None, cluster=None, atr=None, vol=None, breaker=None) -> Market:
    """A market of len(close) days x len(close[0]) symbols named A, B, ...; NaN close = suspended."""
    close = np.asarray(close, dtype=float)
    n, m = close.shape

    def grid(x, default):
        return np.broadcast_to(np.asarray(default if x is None else x, dtype=float), (n, m)).copy()

    tradable = ~np.isnan(close)
    signal_grid = lambda x, d: np.where(tradable, grid(x, d), np.nan)  # noqa: E731
    return Market(
        dates=pd.bdate_range("2024-01-01", periods=n), symbols=np.array(SYMBOLS[:m]),
        open=grid(open_, 0) if open_ is not None else close.copy(), close=close, tradable=tradable,
        trend_signal=signal_grid(signal, 1), signal_strength=signal_grid(None, 0.5), atr=signal_grid(atr, 0.01),
        volatility=signal_grid(vol, 0.2), momentum_score=signal_grid(score, 1.0),
        cluster=np.where(tradable, grid(cluster, -1), -1),
        breaker_on=np.zeros(n, dtype=bool) if breaker is None else np.asarray(breaker, dtype=bool),
        market_drawdown=np.zeros(n),
    )


def hold(state: PortfolioState, idx: int, shares: int, entry_price: float, *, highest: float | None = None,
         stop: float = 0.0, last: float | None = None, days: int = 1, cluster: int = -1) -> None:
    state.shares[idx] = shares
    state.entry_date[idx] = np.datetime64("2023-12-01", "D")
    state.entry_price[idx] = entry_price
    state.highest_close[idx] = highest if highest is not None else entry_price
    state.stop_level[idx] = stop
    state.last_close[idx] = last if last is not None else entry_price
    state.days_held[idx] = days
    state.cluster[idx] = cluster


def sells(record) -> list[tuple[str, str]]:
    return [(SYMBOLS[o.symbol], o.reason) for o in record.orders if o.side == "SELL"]


def buys(record) -> list[tuple[str, str]]:
    return [(SYMBOLS[o.symbol], o.reason) for o in record.orders if o.side == "BUY"]


def select(scores, held=(), *, n, m, clusters=None, cap=99, max_positions=99, signal=None, breaker=False, bonus=0.0):
    config = cfg(f"scoring.buy_top_n={n}", f"scoring.hold_until_rank={m}", f"clustering.max_positions_per_cluster={cap}",
                 f"position_sizing.max_positions={max_positions}")
    score = np.asarray(scores, dtype=float)
    k = len(score)
    held_mask = np.isin(np.arange(k), [SYMBOLS.index(h) for h in held])
    ranking = inertia_ranking(score, held_mask, bonus)
    buyable = (np.ones(k) if signal is None else np.asarray(signal)) == 1
    if breaker:
        buyable[:] = False
    cluster = np.full(k, -1) if clusters is None else np.asarray(clusters)
    sel = select_targets(ranking, held_mask, held_mask & ~np.isfinite(score), buyable, cluster, config)
    name = lambda ids: sorted(SYMBOLS[i] for i in ids)  # noqa: E731
    return name(sel.keep), name(sel.buy), {SYMBOLS[i]: r for i, r in sel.sell.items()}


# --------------------------------------------------------------------------- selection: REFERENCE.md cases
def test_buffer_zone_buys_top_two_holds_rank_three_and_sells_rank_four():
    # holdings {C, D}, ranks A > B > C > D, buy_top_n=2, hold_until_rank=3 -> buy A, B; hold C; sell D
    assert select([4, 3, 2, 1], held="CD", n=2, m=3) == (["C"], ["A", "B"], {"D": "rank_out_of_buffer"})


def test_buffer_zone_through_the_engine_step():
    market = hand_market([[10.0] * 4], score=[[4, 3, 2, 1]])
    config = frictionless("scoring.buy_top_n=2", "scoring.hold_until_rank=3", "scoring.inertia_bonus=0",
                          "position_sizing.rebalance_threshold=1")
    state = fresh_state(4, config)
    hold(state, 2, 1000, 10.0)
    hold(state, 3, 1000, 10.0)
    record = step(state, market.day(0), config)
    assert sells(record) == [("D", "rank_out_of_buffer")]
    assert buys(record) == [("A", "new_entry"), ("B", "new_entry")]
    assert "C" not in [s for s, _ in sells(record)]


def test_stop_overrides_rank():
    # holdings {A, B, C}, B's stop is hit, N=3, M=4 -> sell B (reason atr_stop), hold A and C
    market = hand_market([[10.0, 10.0, 10.0], [10.1, 8.0, 10.2]], score=[[3, 2, 1]] * 2, atr=0.1)
    config = frictionless("scoring.buy_top_n=3", "scoring.hold_until_rank=4", "scoring.rebalance_frequency=1",
                          "position_sizing.rebalance_threshold=1")
    state = fresh_state(3, config)
    for i in range(3):
        hold(state, i, 100, 10.0, stop=9.5)
    record = step(state, market.day(1), config)
    assert sells(record) == [("B", "atr_stop")] and buys(record) == []


def test_a_risk_exit_is_not_bought_back_in_the_same_decision_at_default_settings():
    # the reference case at the default rebalance_threshold (0.02), default costs and lots: holdings
    # {A, B, C}, B's stop is hit, N=3, M=4 -> sell B in full, hold A and C (topped up to target), no buy of B
    # (B still ranks 2nd with trend 1; it used to get a `rebalance` BUY of target - old holding)
    market = hand_market([[10.0, 10.0, 10.0], [10.1, 8.0, 10.2], [10.1, 8.1, 10.2]], score=[[3, 2, 1]] * 3, atr=0.1)
    config = cfg("scoring.buy_top_n=3", "scoring.hold_until_rank=4", "scoring.rebalance_frequency=1")
    assert config.position_sizing.rebalance_threshold == 0.02 and config.risk.reentry_cooldown_days == 0
    state = fresh_state(3, config)
    for i in range(3):
        hold(state, i, 1000, 10.0, stop=9.5)
    record = step(state, market.day(1), config)
    assert sells(record) == [("B", "atr_stop")]
    assert [o for o in record.orders if o.side == "SELL"][0].shares == 1000
    assert buys(record) == [("A", "rebalance"), ("C", "rebalance")]
    filled = step(state, market.day(2), config)  # the orders of day 1 fill at day 2's open
    assert [(SYMBOLS[f.symbol], f.side) for f in filled.fills] == [("B", "SELL"), ("A", "BUY"), ("C", "BUY")]
    assert state.shares[1] == 0
    # re-entry needs a later decision: day 2's decision may buy B again (cooldown 0)
    assert ("B", "new_entry") in buys(filled)


@pytest.mark.parametrize("exit_rule", ["time_stop", "sell_signal"])
def test_time_stop_and_sell_signal_exits_are_not_bought_back_either(exit_rule):
    signal = [[1, 1, 1], [1, -1 if exit_rule == "sell_signal" else 1, 1]]
    market = hand_market([[10.0] * 3, [10.0, 9.0, 10.0]], score=[[3, 2, 1]] * 2, signal=signal, atr=1.0)
    config = cfg("scoring.buy_top_n=3", "scoring.hold_until_rank=4", "scoring.rebalance_frequency=1",
                 "risk.exit_on_sell_signal=true")
    state = fresh_state(3, config)
    for i in range(3):
        hold(state, i, 1000, 10.0, days=100 if exit_rule == "time_stop" else 1)
    if exit_rule == "time_stop":
        state.days_held[[0, 2]] = 1
    record = step(state, market.day(1), config)
    assert sells(record) == [("B", exit_rule)] and "B" not in [s for s, _ in buys(record)]


def test_reentry_cooldown_days_blocks_buys_for_that_many_trading_days_after_a_risk_exit():
    close = [[10.0, 10.0], [10.0, 8.0]] + [[10.0, 10.0]] * 4
    market = hand_market(close, score=[[2, 1]] * 6, atr=0.1)

    def b_entries(cooldown: int) -> list[int]:
        config = frictionless("scoring.buy_top_n=2", "scoring.hold_until_rank=2", "scoring.rebalance_frequency=1",
                              f"risk.reentry_cooldown_days={cooldown}")
        state = fresh_state(2, config)
        hold(state, 0, 1000, 10.0)
        hold(state, 1, 1000, 10.0, stop=9.5)
        state.cash = 100_000.0
        days = []
        for t in range(1, 6):
            if ("B", "new_entry") in buys(step(state, market.day(t), config)):
                days.append(t)
        return days

    assert b_entries(0)[0] == 2  # exited at the close of day 1, bought again at the next decision
    assert b_entries(2)[0] == 4  # days 2 and 3 are within the cooldown
    assert b_entries(10) == []


def test_cluster_cap_keeps_the_better_ranked_member_and_fills_from_another_cluster():
    # A (2.0, c0), B (1.0, c0, held), C (0.5, c1); one per cluster, N=2, M=3, max 2 -> {A, C}; B sold
    assert select([2.0, 1.0, 0.5], held="B", n=2, m=3, clusters=[0, 0, 1], cap=1, max_positions=2, bonus=0.05) == (
        [], ["A", "C"], {"B": "cluster_cap"})
    market = hand_market([[10.0] * 3], score=[[2.0, 1.0, 0.5]], cluster=[[0, 0, 1]])
    config = frictionless("scoring.buy_top_n=2", "scoring.hold_until_rank=3", "clustering.max_positions_per_cluster=1",
                          "position_sizing.max_positions=2")
    state = fresh_state(3, config)
    hold(state, 1, 1000, 10.0, cluster=0)
    record = step(state, market.day(0), config)
    assert sells(record) == [("B", "cluster_cap")] and buys(record) == [("A", "new_entry"), ("C", "new_entry")]


# --------------------------------------------------------------------------- selection: more cases
def test_additive_inertia_lifts_a_held_symbol_with_a_negative_score():
    score = np.array([-0.50, -0.52, -0.40])
    held = np.array([False, True, False])
    ranking = inertia_ranking(score, held, 0.05)
    assert [SYMBOLS[i] for i in ranking] == ["C", "B", "A"]  # -0.52 + 0.05 = -0.47 beats -0.50
    # so B survives a buffer of 2 (a multiplicative bonus, -0.52 x 1.05 = -0.546, would drop it to last)
    assert select([-0.50, -0.52, -0.40], held="B", n=1, m=2, bonus=0.05)[0] == ["B"]
    assert select([-0.50, -0.52, -0.40], held="B", n=1, m=2, bonus=0.0)[2] == {"B": "rank_out_of_buffer"}


def test_a_candidate_without_trend_signal_is_not_bought_but_keeps_its_rank():
    keep, buy, _ = select([3, 2, 1], n=2, m=3, signal=[0, 1, 1])
    assert buy == ["B"]  # A has no buy signal; C is rank 3 > buy_top_n


def test_position_limit_lets_better_new_symbols_displace_a_buffer_holding():
    assert select([3, 2, 1], held="C", n=2, m=3, max_positions=2) == ([], ["A", "B"], {"C": "position_limit"})


def test_a_holding_is_never_displaced_by_a_symbol_that_cannot_be_bought():
    assert select([3, 2, 1], held="C", n=2, m=3, max_positions=2, signal=[0, 0, 1]) == (["C"], [], {})
    assert select([3, 2, 1], held="C", n=2, m=3, max_positions=2, breaker=True) == (["C"], [], {})


def test_cluster_cap_allows_two_per_cluster_and_unclustered_symbols_are_uncapped():
    keep, buy, _ = select([5, 4, 3, 2, 1], n=5, m=5, clusters=[0, 0, 0, -1, -1], cap=2)
    assert buy == ["A", "B", "D", "E"]


def test_a_holding_without_a_score_today_is_kept_and_fills_its_cluster():
    # B is held but suspended (no score): kept untouched, and it takes cluster 0's only slot
    keep, buy, sell = select([3.0, np.nan, 1.0], held="B", n=2, m=3, clusters=[0, 0, 1], cap=1)
    assert keep == ["B"] and buy == ["C"] and sell == {}


def test_rank_sells_and_buys_only_on_rebalance_days_risk_exits_every_day():
    close = [[10.0, 10.0], [10.0, 10.0], [10.0, 5.0], [10.0, 5.0]]
    market = hand_market(close, score=[[1, 2], [2, 1], [2, 1], [2, 1]], atr=0.1)
    config = frictionless("scoring.buy_top_n=1", "scoring.hold_until_rank=1", "scoring.rebalance_frequency=3",
                          "scoring.inertia_bonus=0", "position_sizing.rebalance_threshold=1")
    state = fresh_state(2, config)
    hold(state, 1, 100, 10.0)
    assert step(state, market.day(0), config).orders == []  # rebalance day: B ranks first and is kept
    assert step(state, market.day(1), config).orders == []  # A now ranks first, but no rebalance on day 1
    day2 = step(state, market.day(2), config)  # B's stop is hit: risk exits run every day
    assert sells(day2) == [("B", "atr_stop")] and buys(day2) == []
    assert buys(step(state, market.day(3), config)) == [("A", "new_entry")]  # day 3: the next rebalance


# --------------------------------------------------------------------------- circuit breaker
def test_breaker_blocks_every_buy_but_exits_and_rank_sells_still_run():
    close = [[10.0, 10.0, 10.0, 10.0]]
    market = hand_market(close, score=[[4, 3, 2, 1]], atr=0.1, breaker=[True])
    config = frictionless("scoring.buy_top_n=2", "scoring.hold_until_rank=2", "scoring.inertia_bonus=0",
                          "position_sizing.rebalance_threshold=0")
    state = fresh_state(4, config)
    hold(state, 1, 10, 10.0)  # B: kept, far under its target weight -- a top-up would be a buy
    hold(state, 2, 1000, 10.0, stop=10.5)  # C: stop hit
    hold(state, 3, 1000, 10.0)  # D: rank 4 > hold_until_rank
    record = step(state, market.day(0), config)
    assert buys(record) == []
    assert sells(record) == [("C", "atr_stop"), ("D", "rank_out_of_buffer")]
    assert record.breaker_on and state.breaker_on


def test_market_drawdown_from_the_equal_weight_universe_and_from_an_index_symbol():
    a = np.array([100, 110, 120, 100, 90, 95], dtype=float)
    close = np.column_stack([a, np.full(6, 50.0)])
    config = cfg("risk.circuit_breaker_lookback=3", "risk.circuit_breaker_threshold=-0.1")
    # equal weight: returns are (A + 0) / 2 -> level 1, 1.05, 1.0977, 1.0062, 0.9609, 0.9876
    level = np.cumprod(np.r_[1.0, 1 + (a[1:] / a[:-1] - 1) / 2])
    peak = pd.Series(level).rolling(3, min_periods=1).max().to_numpy()
    np.testing.assert_allclose(market_drawdown(close, np.array(["A", "B"]), config), level / peak - 1)
    by_index = market_drawdown(close, np.array(["A", "B"]), cfg("data.market_index_symbol=\"A\"",
                                                                "risk.circuit_breaker_lookback=3"))
    np.testing.assert_allclose(by_index, [0, 0, 0, 100 / 120 - 1, 90 / 120 - 1, 95 / 100 - 1])
    # the peak is only looked for inside the lookback: on day 5 the 120 of day 2 has left the window
    with pytest.raises(DataError, match="data.market_index_symbol"):
        market_drawdown(close, np.array(["A", "B"]), cfg("data.market_index_symbol=\"ZZZ\""))


def test_breaker_series_uses_only_closes_up_to_each_day():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (300, 5)), axis=0))
    close[rng.random(close.shape) < 0.05] = np.nan
    config = cfg("risk.circuit_breaker_lookback=20")
    full = market_drawdown(close, np.array(SYMBOLS[:5]), config)
    for t in (30, 120, 299):
        assert market_drawdown(close[: t + 1], np.array(SYMBOLS[:5]), config)[-1] == full[t]


# --------------------------------------------------------------------------- risk exits
def test_trailing_stop_level_never_decreases():
    stop = trailing_stop_levels(np.array([0.0]), np.array([12.0]), np.array([0.5]), 2.0)
    assert stop[0] == 11.0
    stop = trailing_stop_levels(stop, np.array([12.0]), np.array([2.0]), 2.0)  # ATR jumps: 12 - 4 = 8
    assert stop[0] == 11.0
    stop = trailing_stop_levels(stop, np.array([12.0]), np.array([np.nan]), 2.0)  # no ATR today
    assert stop[0] == 11.0
    stop = trailing_stop_levels(stop, np.array([14.0]), np.array([0.5]), 2.0)  # a new high lifts it
    assert stop[0] == 13.0


def test_atr_stop_trails_the_highest_close_since_entry_and_its_level_only_rises():
    close = [[10.0], [12.0], [11.5], [11.0], [10.9]]
    market = hand_market(close, atr=[[0.5], [0.5], [0.2], [1.0], [0.5]])
    config = frictionless("scoring.rebalance_frequency=1000", "risk.atr_multiplier=2")
    state = fresh_state(1, config)
    hold(state, 0, 100, 10.0, highest=10.0)
    state.day_index = 1
    levels = []
    for t in range(5):
        record = step(state, market.day(t), config)
        levels.append(float(state.stop_level[0]))
        if sells(record):
            break
    # day 0: 10 - 1 = 9; day 1: 12 - 1 = 11; day 2: max(11, 12 - 0.4) = 11.6 and 11.5 < 11.6 -> exit
    assert levels == pytest.approx([9.0, 11.0, 11.6], abs=1e-12) and sells(record) == [("A", "atr_stop")]


def test_time_stop_needs_both_the_holding_period_and_a_loss_below_the_threshold():
    config = cfg("risk.time_stop_days=60", "risk.time_stop_threshold=-0.05")
    close = np.array([9.4, 9.6, 9.4, 9.4])
    days = np.array([60, 60, 59, 75])
    hits = time_stop_hits(close, np.full(4, 10.0), days, config)
    assert hits.tolist() == [True, False, False, True]


def test_time_stop_through_the_engine():
    market = hand_market([[9.4, 9.4]], atr=10.0)  # a stop far away: only the time stop can fire
    config = frictionless("risk.time_stop_days=3", "risk.time_stop_threshold=-0.05", "scoring.rebalance_frequency=1000")
    state = fresh_state(2, config)
    state.day_index = 1
    hold(state, 0, 100, 10.0, days=2)  # the mark makes it 3 closes held
    hold(state, 1, 100, 10.0, days=1)
    assert sells(step(state, market.day(0), config)) == [("A", "time_stop")]


def test_sell_signal_exit_only_when_switched_on_and_sized_by_the_held_quantity():
    market = hand_market([[10.0]], signal=[[-1]])
    for on, expected in ((False, []), (True, [("A", "sell_signal")])):
        config = frictionless(f"risk.exit_on_sell_signal={str(on).lower()}", "scoring.rebalance_frequency=1000")
        state = fresh_state(1, config)
        state.day_index = 1
        hold(state, 0, 1234, 10.0)
        record = step(state, market.day(0), config)
        assert sells(record) == expected
        assert all(o.shares == 1234 for o in record.orders)


# --------------------------------------------------------------------------- sizing
def test_inverse_volatility_weights_sum_to_max_total_exposure_applied_once():
    config = cfg("position_sizing.max_position_size=1", "position_sizing.max_cluster_size=1",
                 "position_sizing.max_total_exposure=0.9")
    w = target_weights(np.array([0.1, 0.2, 0.4]), np.full(3, -1), config)
    np.testing.assert_allclose(w, 0.9 * np.array([4, 2, 1]) / 7)
    # and the orders are weight x equity -- exposure is not applied a second time to the capital
    market = hand_market([[10.0, 10.0, 10.0]], vol=[[0.1, 0.2, 0.4]])
    cfg_lots = frictionless("position_sizing.max_position_size=1", "position_sizing.max_cluster_size=1",
                            "position_sizing.max_total_exposure=0.9", "scoring.buy_top_n=3", "execution.initial_cash=700000")
    record = step(fresh_state(3, cfg_lots), market.day(0), cfg_lots)
    assert [o.shares for o in record.orders] == [36000, 18000, 9000]


def test_position_cap_hands_the_excess_to_the_uncapped_names():
    config = cfg("position_sizing.max_position_size=0.5", "position_sizing.max_cluster_size=1",
                 "position_sizing.max_total_exposure=0.9")
    w = target_weights(np.array([0.1, 0.2]), np.full(2, -1), config)
    np.testing.assert_allclose(w, [0.5, 0.4])  # 0.6 capped to 0.5, the 0.1 goes to the other name


def test_cluster_cap_scales_the_cluster_down_and_redistributes():
    config = cfg("position_sizing.max_position_size=1", "position_sizing.max_cluster_size=0.3",
                 "position_sizing.max_total_exposure=0.9")
    w = target_weights(np.full(4, 0.2), np.array([0, 0, 1, -1]), config)
    np.testing.assert_allclose(w, [0.15, 0.15, 0.3, 0.3])
    assert w.sum() == pytest.approx(0.9)


def test_when_every_name_is_capped_the_rest_stays_in_cash():
    config = cfg("position_sizing.max_position_size=0.15", "position_sizing.max_total_exposure=0.95")
    w = target_weights(np.array([0.1, 0.3]), np.full(2, -1), config)
    np.testing.assert_allclose(w, [0.15, 0.15])


def test_missing_volatility_counts_as_the_median_of_the_others():
    config = cfg("position_sizing.max_position_size=1", "position_sizing.max_cluster_size=1",
                 "position_sizing.max_total_exposure=1")
    w = target_weights(np.array([0.1, np.nan, 0.3]), np.full(3, -1), config)
    np.testing.assert_allclose(w, np.array([10, 5, 10 / 3]) / (10 + 5 + 10 / 3))


@pytest.mark.parametrize("seed", range(20))
def test_weights_respect_every_cap(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 25))
    caps = dict(pos=float(rng.uniform(0.05, 0.5)), cluster=float(rng.uniform(0.1, 0.6)), total=float(rng.uniform(0.5, 1)))
    config = cfg(f"position_sizing.max_position_size={caps['pos']}", f"position_sizing.max_cluster_size={caps['cluster']}",
                 f"position_sizing.max_total_exposure={caps['total']}")
    cluster = rng.integers(-1, 4, k)
    w = target_weights(rng.uniform(0.05, 0.8, k), cluster, config)
    assert (w >= 0).all() and (w <= caps["pos"] + 1e-12).all() and w.sum() <= caps["total"] + 1e-12
    for c in range(4):
        assert w[cluster == c].sum() <= caps["cluster"] + 1e-12
    uncapped = (w < caps["pos"] - 1e-12) & ~np.isin(cluster, [c for c in range(4) if w[cluster == c].sum() >= caps["cluster"] - 1e-12])
    if uncapped.any():  # while some name could still take weight, the budget is used in full
        assert w.sum() == pytest.approx(caps["total"])


# --------------------------------------------------------------------------- lots, costs, cash
def test_lot_rounding_is_always_down():
    assert lot_shares(10_550, 10.0, 100) == 1000
    assert lot_shares(999, 10.0, 100) == 0
    assert lot_shares(1000, 10.0, 100) == 100  # exactly one lot despite float division
    assert lot_shares(0.3 * 1000, 0.1, 1) == 3000
    np.testing.assert_array_equal(lot_shares(np.array([0, 2500, np.nan]), np.array([10.0, 10.0, 10.0]), 100), [0, 200, 0])


def test_commission_is_rate_times_value_with_a_minimum_per_order():
    config = cfg("execution.commission_rate=0.0003", "execution.commission_minimum=5")
    assert commission(1_000, config) == 5.0  # 0.3 -> the minimum
    assert commission(100_000, config) == pytest.approx(30.0)


def test_slippage_makes_buys_dearer_and_sells_cheaper():
    config = cfg("execution.slippage_bps=5")
    assert slipped_price(10.0, "BUY", config) == pytest.approx(10.005)
    assert slipped_price(10.0, "SELL", config) == pytest.approx(9.995)


def test_affordable_shares_never_overspend():
    config = cfg()  # 0.03%, minimum 5, lots of 100
    assert affordable_shares(10_000, 10.0, 50_000.0, config) == 4900
    assert affordable_shares(100, 10.0, 1_004.99, config) == 0  # 1,000 + minimum commission 5 > cash
    assert affordable_shares(100, 10.0, 1_005.0, config) == 100
    rng = np.random.default_rng(0)
    for _ in range(500):
        price, cash, wanted = rng.uniform(0.5, 200), rng.uniform(0, 1e6), int(rng.integers(0, 100)) * 100
        q = affordable_shares(wanted, price, cash, config)
        cost = lambda s: s * price + commission(s * price, config)  # noqa: E731
        assert 0 <= q <= wanted and q % 100 == 0 and (q == 0 or cost(q) <= cash)
        assert q == wanted or cost(q + 100) > cash


def test_buys_shrink_to_the_cash_left_after_sells_and_cash_never_goes_negative():
    market = hand_market([[10.0, 10.0, 10.0], [10.0, 10.0, 10.0]], open_=[[10.0] * 3, [10.0, 12.0, 10.0]])
    config = cfg("scoring.rebalance_frequency=1000")
    state = fresh_state(3, config)
    state.day_index = 1
    state.cash = 1_000.0
    hold(state, 0, 1000, 10.0)
    day0 = market.day(0)
    state.pending = [Order(1, "BUY", 2000, "new_entry", 0.5, 1.0, 0.5, 10.0, day0.date),
                     Order(2, "BUY", 2000, "new_entry", 0.5, 1.0, 0.5, 10.0, day0.date),
                     Order(0, "SELL", 1000, "atr_stop", 0.5, 1.0, 0.0, 10.0, day0.date)]
    record = step(state, market.day(1), config)
    # the sell comes first: 1,000 x 9.995 - 5 -> cash 10,990; B at 12.006 gets the 900 shares that fit
    # (10,805.40 + 5 commission); the 179.60 left cannot pay for one lot of C
    assert [(SYMBOLS[f.symbol], f.side, f.quantity) for f in record.fills] == [("A", "SELL", 1000), ("B", "BUY", 900)]
    assert [(SYMBOLS[o.symbol], o.side) for o in record.unfilled] == [("C", "BUY")]
    assert state.cash == pytest.approx(10_990 - 900 * 12.006 - 5) and state.cash >= 0


def test_a_fresh_all_cash_portfolio_opens_positions_on_its_first_rebalance():
    market = hand_market([[10.0] * 5, [10.0] * 5], score=[[5, 4, 3, 2, 1]] * 2, vol=0.2)
    config = cfg("scoring.buy_top_n=5", "scoring.hold_until_rank=5")  # default costs, lots and caps
    state = fresh_state(5, config)
    step(state, market.day(0), config)
    record = step(state, market.day(1), config)
    assert [f.side for f in record.fills] == ["BUY"] * 5
    assert state.held.sum() == 5 and state.cash > 0
    assert state.positions_value() / state.equity() == pytest.approx(0.75, abs=0.01)  # 5 x max_position_size 0.15


# --------------------------------------------------------------------------- fills and suspensions
def test_orders_decided_at_a_close_fill_at_the_next_open_with_slippage():
    market = hand_market([[10.0], [11.0]], open_=[[9.0], [10.5]])
    config = cfg("execution.slippage_bps=10", "scoring.buy_top_n=1", "execution.initial_cash=100000")
    state = fresh_state(1, config)
    day0 = step(state, market.day(0), config)
    assert day0.fills == [] and [o.side for o in day0.orders] == ["BUY"] and state.pending
    day1 = step(state, market.day(1), config)
    fill = day1.fills[0]
    assert fill.price == pytest.approx(10.5 * 1.001) and fill.decided == market.dates[0]
    assert state.entry_price[0] == pytest.approx(10.5 * 1.001) and state.highest_close[0] == 11.0


def test_fill_price_close_fills_at_the_same_close():
    market = hand_market([[10.0]], open_=[[9.0]])
    config = cfg("execution.fill_price=\"close\"", "execution.slippage_bps=0", "scoring.buy_top_n=1")
    state = fresh_state(1, config)
    record = step(state, market.day(0), config)
    assert record.fills[0].price == 10.0 and state.pending == [] and state.held[0]


def test_suspended_symbol_gets_no_fill_keeps_its_last_close_and_its_sell_waits_until_it_trades():
    close = [[10.0, 5.0], [np.nan, 5.0], [np.nan, 5.0], [8.0, 5.0]]
    market = hand_market(close, open_=[[10.0, 5.0], [np.nan, 5.0], [np.nan, 5.0], [8.5, 5.0]])
    config = frictionless("scoring.rebalance_frequency=1000")
    state = fresh_state(2, config)
    state.day_index = 1
    state.cash = 0.0
    hold(state, 0, 100, 10.0)
    state.pending = [Order(0, "SELL", 100, "atr_stop", 0.5, 1.0, 0.0, 10.0, market.dates[0])]
    for t in (1, 2):
        record = step(state, market.day(t), config)
        assert record.fills == [] and record.equity == pytest.approx(1000.0)  # valued at the last close, 10
        assert [(o.symbol, o.reason, o.decided) for o in record.orders] == [(0, "atr_stop", market.dates[0])]
    record = step(state, market.day(3), config)
    assert [(f.side, f.quantity, f.price) for f in record.fills] == [("SELL", 100, 8.5)] and state.cash == 850.0


def test_a_holding_whose_data_ended_is_sold_at_its_last_close_after_the_configured_sessions():
    # A stops after day 1 while B goes on; a pending stop-sell of A waits, then the series counts as ended
    close = [[10.0, 5.0], [9.0, 5.0], [np.nan, 5.0], [np.nan, 5.0], [np.nan, 5.0], [np.nan, 5.0]]
    market = hand_market(close)
    config = frictionless("scoring.rebalance_frequency=1000", "risk.data_ended_sessions=3")
    state = fresh_state(2, config)
    state.day_index, state.cash = 2, 0.0
    hold(state, 0, 100, 10.0, last=9.0)  # after the close of day 1, with a stop-sell decided there
    state.pending = [Order(0, "SELL", 100, "atr_stop", 0.5, 1.0, 0.0, 9.0, market.dates[1])]
    for t in (2, 3):  # a suspension so far: the sell waits, the mark stays 9.0
        record = step(state, market.day(t), config)
        assert record.fills == [] and record.equity == pytest.approx(900.0)
    record = step(state, market.day(4), config)  # the 3rd session without a price: ended
    assert [(f.side, f.quantity, f.price, f.reason) for f in record.fills] == [("SELL", 100, 9.0, "data_ended")]
    assert not state.held.any() and state.cash == 900.0 and record.orders == []
    assert step(state, market.day(5), config).fills == []


def test_data_ended_sells_after_ten_sessions_by_default():
    close = [[10.0, 5.0]] + [[np.nan, 5.0]] * 11
    market = hand_market(close)
    config = frictionless("scoring.rebalance_frequency=1000")
    state = fresh_state(2, config)
    state.day_index = 1
    hold(state, 0, 100, 10.0)
    sold = [t for t in range(1, 12) if step(state, market.day(t), config).fills]
    assert sold == [10]


def test_a_pending_buy_of_a_suspended_symbol_is_dropped():
    market = hand_market([[10.0], [np.nan]], open_=[[10.0], [np.nan]])
    config = frictionless("scoring.rebalance_frequency=1000")
    state = fresh_state(1, config)
    state.day_index = 1
    state.pending = [Order(0, "BUY", 100, "new_entry", 0.5, 1.0, 0.1, 10.0, market.dates[0])]
    record = step(state, market.day(1), config)
    assert record.fills == [] and record.orders == [] and len(record.unfilled) == 1 and not state.held.any()


def test_rebalance_threshold_skips_small_resizes_and_a_top_up_averages_the_entry_price():
    market = hand_market([[10.0], [10.0]], open_=[[10.0], [12.0]], vol=0.2)
    config = frictionless("scoring.buy_top_n=1", "position_sizing.max_position_size=0.5",
                          "position_sizing.rebalance_threshold=0.02", "scoring.rebalance_frequency=1")
    state = fresh_state(1, config)
    hold(state, 0, 48_500, 10.0)  # weight 0.485 vs target 0.5: inside the threshold
    state.cash = 1_000_000 - 485_000
    assert step(state, market.day(0), config).orders == []
    state.shares[0] = 30_000  # weight 0.3: resize up by rebalance
    state.cash = 1_000_000 - 300_000
    orders = step(state, market.day(0), config).orders
    assert [(o.side, o.shares, o.reason) for o in orders] == [("BUY", 20_000, "rebalance")]
    step(state, market.day(1), config)
    assert state.entry_price[0] == pytest.approx((30_000 * 10 + 20_000 * 12) / 50_000)


# --------------------------------------------------------------------------- hand-made signal frames, public API
def hand_frames(close, *, score, signal=1, cluster=-1, atr=0.1, vol=0.2):
    """PricesSchema + SignalsSchema frames for a small universe (rows only where close is not NaN)."""
    close = np.asarray(close, dtype=float)
    n, m = close.shape
    dates = pd.bdate_range("2024-01-01", periods=n)
    full = lambda x: np.broadcast_to(np.asarray(x, dtype=float), (n, m))  # noqa: E731
    rows, cols = np.nonzero(~np.isnan(close))
    c = close[rows, cols]
    prices = pd.DataFrame({"date": dates[rows], "symbol": np.array(SYMBOLS)[cols], "open": c, "high": c, "low": c,
                           "close": c, "volume": 1000.0}).sort_values(["symbol", "date"]).reset_index(drop=True)
    score_g = full(score)[rows, cols]
    signals = pd.DataFrame({
        "date": dates[rows], "symbol": np.array(SYMBOLS)[cols], "close": c, "trend_signal": full(signal)[rows, cols].astype(int),
        "signal_strength": 0.5, "macd": np.nan, "macd_signal": np.nan, "macd_hist": np.nan, "kama": np.nan,
        "kama_slope": np.nan, "adx": np.nan, "volume_ratio": np.nan, "atr": full(atr)[rows, cols],
        "volatility": full(vol)[rows, cols], "momentum_score": score_g,
        "rank": pd.Series(score_g).groupby(rows).rank(ascending=False).to_numpy(),
        "cluster": full(cluster)[rows, cols].astype(int), "eligible": ~np.isnan(score_g),
    })
    return validate_frame(prices, PricesSchema, "prices"), validate_frame(signals, SignalsSchema, "signals")


def test_run_backtest_on_hand_made_signal_frames():
    close = np.array([[10.0, 20.0, 30.0]] * 6)
    close[3:, 0] = [9.0, 8.0, 7.0]  # A falls through its stop
    prices, signals = hand_frames(close, score=[3, 2, 1], atr=0.2)
    config = frictionless("scoring.buy_top_n=2", "scoring.hold_until_rank=2", "scoring.rebalance_frequency=100",
                          "position_sizing.max_position_size=0.4")
    result = run_backtest(signals, prices, config)
    log = result.trade_log
    assert log[["symbol", "side", "reason"]].values.tolist() == [["A", "BUY", "new_entry"], ["B", "BUY", "new_entry"],
                                                                 ["A", "SELL", "atr_stop"]]
    assert log["date"].tolist() == [result.market.dates[1]] * 2 + [result.market.dates[4]]
    assert log["decision_date"].tolist() == [result.market.dates[0]] * 2 + [result.market.dates[3]]


def test_signals_from_another_run_are_refused():
    prices, signals = hand_frames(np.full((3, 2), 10.0), score=1.0)
    signals.loc[0, "close"] = 11.0
    with pytest.raises(DataError, match="different runs"):
        build_market(prices, signals, cfg())
    prices, signals = hand_frames(np.full((3, 2), 10.0), score=1.0)
    with pytest.raises(DataError, match="no price"):
        build_market(prices[prices["symbol"] == "A"], signals, cfg())


def test_empty_state_is_flat():
    state = empty_state(3, 100.0)
    assert state.equity() == 100.0 and not state.held.any()
