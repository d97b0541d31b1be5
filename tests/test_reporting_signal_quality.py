"""Signal quality: ranks, rank IC on constructed series with known IC, forward-return alignment,
quintiles, buy-signal hit rate, Newey-West t-statistic."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from stages.reporting.signal_quality import (
    buy_signal_outcomes,
    forward_returns,
    ic_statistics,
    new_buy_signals,
    newey_west_t,
    paired_ranks,
    quantile_returns,
    rank_ic,
    row_ranks,
    signal_quality,
)


def test_row_ranks_equal_scipy_rankdata_with_ties_and_gaps():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 6, (40, 15)).astype(float)  # many ties
    values[rng.random(values.shape) < 0.25] = np.nan
    expected = scipy.stats.rankdata(values, axis=1, nan_policy="omit")
    np.testing.assert_allclose(row_ranks(values), expected, equal_nan=True)
    continuous = rng.normal(size=(40, 15))
    np.testing.assert_allclose(row_ranks(continuous), scipy.stats.rankdata(continuous, axis=1))


def test_row_ranks_equal_scipy_with_infinities_empty_rows_and_no_gaps():
    """The fast path sorts NaN as +inf (and keeps NaN when a real +inf is present); ties are averaged
    only where they occur. Every case must still be scipy's 'average' rank."""
    rng = np.random.default_rng(11)
    for case in range(60):
        rows, cols = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        values = rng.integers(-3, 4, (rows, cols)).astype(float) if case % 2 else rng.normal(size=(rows, cols))
        values[rng.random(values.shape) < [0.0, 0.3, 0.7][case % 3]] = np.nan
        if case % 4 == 1:
            values[rng.random(values.shape) < 0.2] = np.inf
        if case % 5 == 2:
            values[rng.random(values.shape) < 0.2] = -np.inf
        if case % 7 == 3:
            values[0] = np.nan  # a row without any value
        expected = scipy.stats.rankdata(values, axis=1, nan_policy="omit")
        np.testing.assert_array_equal(row_ranks(values), expected, err_msg=f"case {case}")
    assert row_ranks(np.empty((0, 4))).shape == (0, 4) and row_ranks(np.empty((3, 0))).shape == (3, 0)


def test_rank_ic_and_quintiles_equal_a_per_date_reference():
    """The vectorised IC and quintile means against a plain per-date computation (scipy Spearman,
    pandas groupby), with gaps, ties and a date with too few symbols."""
    rng = np.random.default_rng(8)
    days, symbols = 30, 23
    score = rng.normal(size=(days, symbols)).round(1)  # ties
    fwd = (0.3 * score + rng.normal(size=(days, symbols))).round(2)
    score[rng.random(score.shape) < 0.15] = np.nan
    fwd[rng.random(fwd.shape) < 0.15] = np.nan
    fwd[4, 4:] = np.nan  # fewer than MIN_SYMBOLS pairs on date 4
    score_ranks, fwd_ranks = paired_ranks(score, fwd)
    ic = rank_ic(score_ranks, fwd_ranks)
    daily = []
    for t in range(days):
        both = ~np.isnan(score[t]) & ~np.isnan(fwd[t])
        if both.sum() < 5:
            assert math.isnan(ic[t])
            continue
        assert ic[t] == pytest.approx(scipy.stats.spearmanr(score[t, both], fwd[t, both]).statistic, abs=1e-12)
        ranks = scipy.stats.rankdata(score[t, both])
        quintile = np.clip(np.ceil(ranks / both.sum() * 5), 1, 5)
        daily.append(pd.Series(fwd[t, both]).groupby(quintile).mean().reindex([1.0, 2.0, 3.0, 4.0, 5.0]))
    expected = pd.concat(daily, axis=1).mean(axis=1).to_numpy()
    np.testing.assert_allclose(quantile_returns(score_ranks, fwd), expected, rtol=0, atol=1e-12)


def test_rank_ic_of_a_hand_case_is_spearman():
    score = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    fwd = np.array([[0.02, 0.01, 0.04, 0.03, 0.05]])  # ranks 2 1 4 3 5: sum d^2 = 4 -> 1 - 6*4/(5*24) = 0.8
    assert rank_ic(*paired_ranks(score, fwd))[0] == pytest.approx(0.8)
    assert rank_ic(*paired_ranks(score, fwd))[0] == pytest.approx(scipy.stats.spearmanr(score[0], fwd[0]).statistic)


def test_rank_ic_is_one_for_a_monotone_forward_return_and_minus_one_reversed():
    rng = np.random.default_rng(0)
    score = rng.standard_normal((100, 30))
    assert np.allclose(rank_ic(*paired_ranks(score, np.exp(score))), 1.0)
    assert np.allclose(rank_ic(*paired_ranks(score, -score**3)), -1.0)


def test_rank_ic_recovers_a_known_population_ic():
    """score and forward return bivariate normal with correlation rho: Spearman's rho is (6/pi) asin(rho/2)."""
    rng = np.random.default_rng(42)
    rho, days, symbols = 0.3, 400, 200
    score = rng.standard_normal((days, symbols))
    fwd = rho * score + math.sqrt(1 - rho**2) * rng.standard_normal((days, symbols))
    ic = rank_ic(*paired_ranks(score, fwd))
    known = 6 / math.pi * math.asin(rho / 2)  # 0.2876
    assert ic.mean() == pytest.approx(known, abs=0.006)  # standard error ~0.0034
    stats = ic_statistics(ic, 1)
    assert stats["ic_days"] == days and stats["ic_positive_share"] == 1.0
    assert stats["ic_t_stat"] == pytest.approx(ic.mean() / ic.std(ddof=1) * math.sqrt(days))
    noise = rank_ic(*paired_ranks(score, rng.standard_normal((days, symbols))))
    assert abs(noise.mean()) < 0.01


def test_rank_ic_skips_dates_with_too_few_symbols_and_ignores_missing_ones():
    score = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, np.nan, np.nan, np.nan]])
    fwd = np.array([[1.0, 2.0, 3.0, 4.0, np.nan, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    ic = rank_ic(*paired_ranks(score, fwd))
    assert ic[0] == pytest.approx(1.0) and math.isnan(ic[1])


def test_forward_returns_look_h_sessions_ahead():
    close = np.array([[10.0], [11.0], [12.1], [np.nan], [13.0]])
    fwd = forward_returns(close, 2)
    assert fwd[0, 0] == pytest.approx(0.21) and math.isnan(fwd[1, 0]) and fwd[2, 0] == pytest.approx(13.0 / 12.1 - 1)
    assert np.isnan(fwd[3:, 0]).all()


def _signals(close: np.ndarray, score: np.ndarray, trend: np.ndarray | None = None) -> pd.DataFrame:
    days, symbols = close.shape
    dates = pd.bdate_range("2021-01-04", periods=days)
    names = [f"S{j:02d}" for j in range(symbols)]
    frame = pd.DataFrame({"date": np.repeat(dates, symbols), "symbol": np.tile(names, days), "close": close.ravel(),
                          "momentum_score": score.ravel(),
                          "trend_signal": (trend if trend is not None else np.zeros_like(close)).ravel().astype(int)})
    return frame.dropna(subset=["close"]).reset_index(drop=True)


def test_signal_quality_pairs_the_score_at_t_with_the_return_after_t():
    """A score that is exactly the next-5-session return has IC 1 at 5 sessions; an off-by-one in the
    alignment would break that (and a score of the past return would not be 1)."""
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (300, 25)), axis=0))
    score = forward_returns(close, 5)
    summary, ic = signal_quality(_signals(close, score), horizons=[5, 20])
    five, twenty = summary["horizons"]
    assert five["ic_mean"] == pytest.approx(1.0) and five["ic_days"] == 300 - 5
    assert twenty["ic_mean"] < 0.7
    assert summary["symbols"] == 25 and summary["dates"] == 300
    assert five["quintile_returns"] == sorted(five["quintile_returns"]) and five["top_minus_bottom"] > 0
    assert set(ic) == {5, 20} and ic[5].notna().sum() == 295
    past = np.vstack([np.full((5, 25), np.nan), close[5:] / close[:-5] - 1])
    summary, _ = signal_quality(_signals(close, past), horizons=[5])
    assert abs(summary["horizons"][0]["ic_mean"]) < 0.1


def test_horizons_computed_side_by_side_come_back_in_the_order_asked():
    """Horizons run on threads: each must equal its own single-horizon run, listed in the given order."""
    rng = np.random.default_rng(9)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (120, 15)), axis=0))
    signals = _signals(close, rng.normal(size=close.shape), rng.integers(-1, 2, close.shape))
    summary, ic = signal_quality(signals, horizons=[20, 1, 5])
    assert [h["horizon_days"] for h in summary["horizons"]] == [20, 1, 5] and list(ic) == [20, 1, 5]
    for figures in summary["horizons"]:
        alone, alone_ic = signal_quality(signals, horizons=[figures["horizon_days"]])
        assert _same_figures(alone["horizons"][0], figures)
        assert alone_ic[figures["horizon_days"]].equals(ic[figures["horizon_days"]])


def _same_figures(a: dict, b: dict) -> bool:
    """Equal, NaN equal to NaN."""
    def same(x, y):
        if isinstance(x, list):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def test_quintile_returns_by_hand():
    score = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
    fwd = np.array([[0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    fwd[1] = fwd[0][::-1] + 0.1  # day 2: the highest score again has the highest return
    q = quantile_returns(paired_ranks(score, fwd)[0], fwd)
    # two symbols per quintile each day; quintile j averages (day1, day2) = (0.1 j, 0.1 j + 0.1)
    np.testing.assert_allclose(q, [0.15, 0.25, 0.35, 0.45, 0.55])


def test_new_buy_signals_start_when_the_trend_turns_to_one():
    trend = np.array([[1, 0], [1, 1], [0, 1], [1, np.nan], [1, 1], [-1, 0]], dtype=float)
    starts = new_buy_signals(trend)
    # column 1: the NaN day (no row) does not break the run that continues after it
    assert starts[:, 0].tolist() == [True, False, False, True, False, False]
    assert starts[:, 1].tolist() == [False, True, False, False, False, False]


def test_buy_hit_rate_and_excess_by_hand():
    trend = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=float)
    fwd = np.array([[0.05, 0.01, -0.03], [0.02, -0.01, 0.02], [0.01, 0.03, -0.04], [np.nan, np.nan, np.nan]])
    out = buy_signal_outcomes(trend, fwd)
    # new buys: (0,0) +0.05 [mean 0.01], (1,1) -0.01 [mean 0.01], (2,2) -0.04 [mean 0.0]
    assert out["buy_signals"] == 3
    assert out["buy_hit_rate"] == pytest.approx(1 / 3)
    assert out["buy_excess_hit_rate"] == pytest.approx(1 / 3)
    assert out["buy_mean_return"] == pytest.approx(0.0)
    assert out["buy_mean_excess_return"] == pytest.approx((0.04 - 0.02 - 0.04) / 3)
    assert buy_signal_outcomes(np.zeros((3, 2)), np.zeros((3, 2)))["buy_signals"] == 0


def test_newey_west_t_by_hand_and_its_relation_to_the_plain_t():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # g0 = 1.25, g1 = 0.3125; S = 1.25 + 2 (1/2) 0.3125 = 1.5625; t = 2.5 / sqrt(1.5625 / 4) = 4
    assert newey_west_t(x, 1) == pytest.approx(4.0)
    rng = np.random.default_rng(3)
    iid = rng.normal(0.1, 1.0, 500)
    n = len(iid)
    plain = iid.mean() / iid.std(ddof=1) * math.sqrt(n)
    assert newey_west_t(iid, 0) == pytest.approx(plain * math.sqrt(n / (n - 1)))
    overlapping = np.convolve(rng.normal(0.05, 1.0, 520), np.ones(20), "valid")  # like 20-day forward windows
    stats = ic_statistics(overlapping, 20)
    assert stats["ic_t_stat_nw"] < stats["ic_t_stat"] / 2  # overlap inflates the plain t-stat


def test_too_little_history_gives_undefined_figures_not_errors():
    close = np.array([[10.0, 11, 12, 13, 14, 15]])
    summary, _ = signal_quality(_signals(close, close / 10), horizons=[5])
    h = summary["horizons"][0]
    assert h["ic_days"] == 0 and math.isnan(h["ic_mean"]) and all(math.isnan(v) for v in h["quintile_returns"])
    assert h["buy_signals"] == 0 and math.isnan(h["buy_hit_rate"])
