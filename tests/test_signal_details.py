"""Signal stage details: cluster id stability rules, momentum/volatility against independent
references, eligibility of young symbols, daily-run errors, logs and byte-identical reruns."""
from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from schemas.signals import SignalsSchema
from stages.common.artifacts import read_artifact
from stages.common.config import load_config
from stages.common.demo import DemoSpec, generate_demo_prices
from stages.common.errors import DataError
from stages.signal import compute_signals, indicators as ind, run_signal_stage
from stages.signal.clustering import correlation_matrix, rolling_clusters, stable_ids
from stages.signal.momentum import momentum_score


# --------------------------------------------------------------------------- cluster ids
def test_stable_ids_follow_membership_not_raw_labels():
    previous = np.array([0, 0, 0, 1, 1, 2])
    members = np.arange(6)
    # scipy numbered the same groups differently this time: ids must not move
    assert stable_ids(np.array([3, 3, 3, 1, 1, 2]), members, previous).tolist() == [0, 0, 0, 1, 1, 2]
    # symbol 5 joins cluster 1; old id 2 disappears and is free again
    assert stable_ids(np.array([3, 3, 3, 1, 1, 1]), members, previous).tolist() == [0, 0, 0, 1, 1, 1]
    # cluster 0 splits: the larger part keeps id 0, the smaller part takes the smallest free id (3)
    got = stable_ids(np.array([1, 1, 4, 2, 2, 3]), members, previous)
    assert got.tolist() == [0, 0, 3, 1, 1, 2]


def test_stable_ids_first_clustering_numbers_by_first_member_and_skips_non_members():
    previous = np.full(5, -1)
    got = stable_ids(np.array([2, 1, 2]), np.array([1, 3, 4]), previous)
    assert got.tolist() == [-1, 0, -1, 1, 0]


def test_late_listing_is_unclustered_until_it_has_enough_window_days():
    rng = np.random.default_rng(4)
    returns = 0.01 * rng.standard_normal((140, 4))
    returns[:100, 3] = np.nan  # listed on day 100
    ids = rolling_clusters(returns, window=40, update_frequency=10, threshold=1.2)
    assert (ids[:39] == -1).all()
    assert (ids[39:, :3] >= 0).all()
    # needs 80% of a 40-day window: first refresh at or after day 100 + 32 - 1
    first = int(np.flatnonzero(ids[:, 3] >= 0)[0])
    assert 131 <= first <= 140 and (first - 39) % 10 == 0


def test_cluster_ids_change_only_on_refresh_days():
    rng = np.random.default_rng(7)
    f = rng.standard_normal((300, 2))
    noise = 0.3 * rng.standard_normal((300, 4))
    returns = np.column_stack([f[:, 0], f[:, 0], f[:, 1], f[:, 1]]) + noise
    returns[150:, 1] = f[150:, 1] + noise[150:, 1]  # symbol 1 switches block halfway
    ids = rolling_clusters(0.01 * returns, window=50, update_frequency=25, threshold=0.9)
    changes = np.flatnonzero((ids[1:] != ids[:-1]).any(axis=1)) + 1
    assert set(changes.tolist()) <= set(range(49, 300, 25))
    assert ids[-1, 1] == ids[-1, 2] != ids[-1, 0]
    assert ids[-1, 0] == ids[60, 0]  # the block that kept its members kept its id


def test_correlation_matrix_matches_numpy_and_treats_flat_series_as_uncorrelated():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 5))
    np.testing.assert_allclose(correlation_matrix(x), np.corrcoef(x, rowvar=False), atol=1e-12)
    x[:, 2] = 0.0
    rho = correlation_matrix(x)
    assert rho[2, 2] == 1.0 and (np.delete(rho[2], 2) == 0).all()


# --------------------------------------------------------------------------- momentum and volatility
def test_momentum_matches_pandas_rolling_reference_with_late_listing():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((400, 3)), axis=0))
    close[:250, 2] = np.nan  # young symbol: only 150 days
    panel_close = close.copy()
    packing = ind.packing_for(~np.isnan(panel_close))
    packed = ind.pack(panel_close, packing)
    score = ind.unpack(momentum_score(packed, ind.log_returns(packed), {20: 1.0, 60: 1.0, 120: 2.0}), packing)
    for j in range(3):
        s = pd.Series(close[:, j]).dropna()
        r = np.log(s / s.shift())
        expected = sum(
            wt * (s / s.shift(w) - 1) / (r.rolling(w).std(ddof=1) * np.sqrt(w)) for w, wt in ((20, 0.25), (60, 0.25), (120, 0.5))
        )
        got = pd.Series(score[s.index, j], index=s.index)
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, equal_nan=True)
        # eligible only once the longest window of returns is full: 120 returns after the first day
        assert got.first_valid_index() == s.index[120]


def test_volatility_columns_match_independent_references():
    prices = generate_demo_prices(DemoSpec(n_symbols=3, years=2, seed=9))
    for method in ("ewma", "std"):
        config = load_config(None, [f"position_sizing.volatility_method={method}", "position_sizing.volatility_window=15"])
        out = compute_signals(prices, config)
        for symbol, rows in out.groupby("symbol"):
            r = np.log(rows["close"] / rows["close"].shift()).to_numpy()
            if method == "std":
                ref = pd.Series(r).rolling(15).std(ddof=1).to_numpy() * np.sqrt(252)
            else:
                ref = np.full(len(r), np.nan)
                var = np.mean(r[1:16] ** 2)
                ref[15] = var
                for t in range(16, len(r)):
                    var = 0.94 * var + 0.06 * r[t] ** 2
                    ref[t] = var
                ref = np.sqrt(ref * 252)
            np.testing.assert_allclose(rows["volatility"].to_numpy(), ref, rtol=1e-10, equal_nan=True, err_msg=f"{method} {symbol}")


def test_young_symbol_is_ineligible_and_ranks_are_a_permutation_per_date():
    prices = generate_demo_prices(DemoSpec(n_symbols=6, years=2, seed=21))
    first = prices["date"].min()
    young = prices["symbol"].unique()[0]
    prices = prices[(prices["symbol"] != young) | (prices["date"] > first + timedelta(days=300))].reset_index(drop=True)
    out = compute_signals(prices, load_config())
    y = out[out["symbol"] == young].reset_index(drop=True)
    assert not y["eligible"].iloc[:120].any() and y["eligible"].iloc[121:].all()
    assert y["rank"].iloc[:120].isna().all()
    for _, day in out[out["eligible"]].groupby("date"):
        assert sorted(day["rank"].astype(int)) == list(range(1, len(day) + 1))
        best = day.loc[day["momentum_score"].idxmax()]
        assert best["rank"] == 1
    assert out.loc[~out["eligible"], "rank"].isna().all()


# --------------------------------------------------------------------------- stage behaviour
def test_as_of_date_after_the_data_is_an_error(small_demo_dir, tmp_path):
    config = load_config()
    with pytest.raises(DataError, match="last date with prices"):
        run_signal_stage(config, small_demo_dir, tmp_path, as_of_date=pd.Timestamp("2100-01-04").date())
    assert not (tmp_path / "signals_output.parquet").exists()


def test_stage_logs_scan_counts_and_clustering(small_demo_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        result = run_signal_stage(load_config(), small_demo_dir, tmp_path)
    text = caplog.text
    s = result.summary
    assert f"Signal scan complete: Buy={s['buy']}, Sell={s['sell']}, Hold={s['hold']}" in text
    assert "Clustering complete:" in text and "distribution: {" in text
    assert "signal timings: load" in text
    signals = read_artifact(tmp_path / "signals_output.parquet", SignalsSchema)
    last = signals[signals["date"] == signals["date"].max()]
    assert s["buy"] == int((last["trend_signal"] == 1).sum()) and s["sell"] == int((last["trend_signal"] == -1).sum())


def test_reruns_are_byte_identical(small_demo_dir, tmp_path):
    config = load_config()
    digests = []
    for name in ("a", "b"):
        run_signal_stage(config, small_demo_dir, tmp_path / name)
        digests.append({f: hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
                        for f in ("prices.parquet", "signals_output.parquet", "signals_output.csv")})
    assert digests[0] == digests[1]


# --------------------------------------------------------------------------- ADX on dead-flat sessions
def test_adx_filters_equal_the_day_by_day_recursion_and_talib_on_flat_stretches():
    """ADX runs as linear filters; a symbol whose TR or DI sum reaches zero (a price stuck flat,
    e.g. a money-market ETF at issue) must take the day-by-day path that leaves ADX unchanged."""
    talib = pytest.importorskip("talib")
    rng = np.random.default_rng(11)
    n, k = 700, 4
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, k)), axis=0))
    high, low = close * (1 + rng.uniform(0, 0.01, (n, k))), close * (1 - rng.uniform(0, 0.01, (n, k)))
    close[:60, 0] = high[:60, 0] = low[:60, 0] = 5.0          # flat from listing: DI sum is zero
    close[200:500, 1] = high[200:500, 1] = low[200:500, 1] = close[199, 1]  # TR sum decays below 1e-8: ADX freezes
    close[300:, 2] = high[300:, 2] = low[300:, 2] = np.nan     # packed tail of a shorter history
    got = ind.adx(high, low, close, 14)
    np.testing.assert_allclose(got, ind._adx_day_by_day(high, low, close, 14), rtol=1e-12, atol=1e-12)
    for j in range(k):
        traded = ~np.isnan(close[:, j])
        ref = talib.ADX(high[traded, j], low[traded, j], close[traded, j], 14)
        assert np.array_equal(np.isnan(got[traded, j]), np.isnan(ref))
        # where ADX freezes depends on the day a decaying sum crosses 1e-8, which rounding can move by a day
        tolerance = 1e-7 if j == 1 else 1e-9
        np.testing.assert_allclose(got[traded, j][~np.isnan(ref)], ref[~np.isnan(ref)], rtol=tolerance, atol=tolerance)
