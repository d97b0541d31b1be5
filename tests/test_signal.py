"""Signal stage: TA-Lib parity, strategies on hand-made series, momentum, clusters, no lookahead, artifacts."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

talib = pytest.importorskip("talib")

from schemas.signals import DailyScoresSchema, DailySignalsSchema, SignalsSchema, SignalWeightsSchema  # noqa: E402
from stages.common.artifacts import read_artifact  # noqa: E402
from stages.common.config import load_config  # noqa: E402
from stages.common.demo import DemoSpec, generate_demo_prices  # noqa: E402
from stages.common.errors import ConfigError, DataError  # noqa: E402
from stages.common.market_data import load_market_data  # noqa: E402
from stages.common.panel import to_panel  # noqa: E402
from stages.signal import compute_signals, indicators as ind, run_signal_stage  # noqa: E402
from stages.signal.clustering import correlation_distance, rolling_clusters  # noqa: E402
from stages.signal.momentum import momentum_score, rank_by_date, window_momentum  # noqa: E402
from stages.signal.strategies import STRATEGIES, Indicators, trend_signal  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402


def _assert_talib_parity(prices: pd.DataFrame) -> int:
    panel = to_panel(prices)
    packing = ind.packing_for(panel.tradable)
    high, low, close = (ind.pack(getattr(panel, f), packing) for f in ("high", "low", "close"))
    ours = {"macd": ind.macd(close), "kama": ind.kama(close, 10), "atr": ind.atr(high, low, close, 14),
            "adx": ind.adx(high, low, close, 14)}
    checked = 0
    for j in range(close.shape[1]):
        n = packing.counts[j]
        if n < 60:
            continue
        c, h, l_ = close[:n, j], high[:n, j], low[:n, j]
        m, s, hist = talib.MACD(c, 12, 26, 9)
        refs = {"macd": (m, s, hist), "kama": (talib.KAMA(c, 10),), "atr": (talib.ATR(h, l_, c, 14),),
                "adx": (talib.ADX(h, l_, c, 14),)}
        for name, ref_tuple in refs.items():
            got_tuple = ours[name] if isinstance(ours[name], tuple) else (ours[name],)
            for got, ref in zip(got_tuple, ref_tuple):
                got = got[:n, j]
                assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{name} warm-up differs for column {j}"
                ok = ~np.isnan(ref)
                np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9, err_msg=f"{name} column {j}")
        checked += 1
    return checked


def test_indicators_equal_talib_on_demo_universe():
    prices = generate_demo_prices(DemoSpec(n_symbols=15, years=4, seed=5))
    assert _assert_talib_parity(prices) == 15


def test_indicators_equal_talib_on_real_etfs():
    prices = load_market_data(shared_data_dir("cn_etf")).prices
    assert _assert_talib_parity(prices) > 50


def test_suspension_does_not_break_the_recursion():
    """A missing day is skipped, not NaN-propagated: the series equals TA-Lib on the traded days."""
    prices = generate_demo_prices(DemoSpec(n_symbols=2, years=1, seed=2))
    holes = prices.drop(index=prices.index[[50, 51, 120]])
    panel = to_panel(holes)
    packing = ind.packing_for(panel.tradable)
    close = ind.pack(panel.close, packing)
    got = ind.unpack(ind.kama(close, 10), packing)
    traded = panel.tradable[:, 0]
    assert np.isnan(got[~traded, 0]).all() and np.isfinite(got[traded, 0][10:]).all()
    reference = talib.KAMA(panel.close[traded, 0], 10)
    np.testing.assert_allclose(got[traded, 0][10:], reference[10:], rtol=1e-12)


def _indicators(**arrays) -> Indicators:
    n = len(next(iter(arrays.values())))
    base = {f: np.full((n, 1), np.nan) for f in Indicators.__dataclass_fields__}
    base.update({k: np.asarray(v, dtype=float).reshape(n, 1) for k, v in arrays.items()})
    base.setdefault("atr", np.ones((n, 1)))
    return Indicators(**base)


def test_macd_cross_gives_buy_then_sell():
    cfg = load_config(None, ["strategy.name=macd"]).strategy
    hist = [np.nan, -0.2, -0.1, 0.1, 0.3, -0.05]
    signal, strength = trend_signal(_indicators(macd_hist=hist, atr=[1] * 6), cfg)
    assert signal[:, 0].tolist() == [0, -1, -1, 1, 1, -1]
    assert strength[3, 0] == pytest.approx(0.1)


def test_kama_and_combo_modes():
    close = [10, 11, 12, 9, 8]
    kama = [10.5, 10.6, 10.8, 10.2, 9.5]
    slope = [0.01, 0.01, 0.02, -0.01, -0.02]
    hist = [0.1, -0.1, 0.2, -0.3, 0.1]
    ind_ = _indicators(close=close, kama=kama, kama_slope=slope, macd_hist=hist)
    kama_sig, _ = STRATEGIES["kama"](ind_, load_config().strategy)
    assert kama_sig[:, 0].tolist() == [0, 1, 1, -1, -1]
    both, _ = trend_signal(ind_, load_config(None, ["strategy.combo_mode=both"]).strategy)
    either, _ = trend_signal(ind_, load_config(None, ["strategy.combo_mode=either"]).strategy)
    assert both[:, 0].tolist() == [0, 0, 1, -1, 0]
    assert either[:, 0].tolist() == [1, 0, 1, -1, 0]


def test_filters_veto_buys_but_never_sells():
    cfg = load_config(None, ["strategy.name=macd", "strategy.filters.adx_enabled=true", "strategy.filters.adx_threshold=25"]).strategy
    signal, _ = trend_signal(_indicators(macd_hist=[0.1, 0.1, -0.1], adx=[30, 10, 10]), cfg)
    assert signal[:, 0].tolist() == [1, 0, -1]


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="strategy.name"):
        trend_signal(_indicators(macd_hist=[0.1]), load_config(None, ["strategy.name=nope"]).strategy)


def test_momentum_score_by_hand():
    close = np.array([100, 102, 101, 104, 103, 106.0])[:, None]
    log_ret = ind.log_returns(close)
    got = window_momentum(close, log_ret, 3)[-1, 0]
    r = np.log(close[3:, 0] / close[2:-1, 0])
    expected = (106 / 101 - 1) / (np.std(r, ddof=1) * np.sqrt(3))
    assert got == pytest.approx(expected, rel=1e-12)
    score = momentum_score(close, log_ret, {2: 0.25, 3: 0.75})
    assert score[-1, 0] == pytest.approx(0.25 * window_momentum(close, log_ret, 2)[-1, 0] + 0.75 * expected)
    assert np.isnan(score[2, 0])  # the 3-day window is not full yet: not eligible


def test_rank_is_one_for_the_best_and_skips_ineligible():
    ranks = rank_by_date(np.array([[0.5, np.nan, 2.0, -1.0]]))
    assert ranks[0].tolist()[0] == 2 and np.isnan(ranks[0, 1]) and ranks[0, 2] == 1 and ranks[0, 3] == 3


def test_correlation_distance_reference_values():
    assert correlation_distance(np.array([0.5, 0.0, -1.0])) == pytest.approx([1.0, np.sqrt(2), 2.0])


def test_clusters_recover_correlation_blocks():
    rng = np.random.default_rng(0)
    days, blocks, per_block = 200, 3, 4
    factors = rng.standard_normal((days, blocks))
    returns = np.repeat(factors, per_block, axis=1) + 0.3 * rng.standard_normal((days, blocks * per_block))
    ids = rolling_clusters(returns * 0.01, window=60, update_frequency=20, threshold=0.8)
    assert (ids[:59] == -1).all()
    last = ids[-1]
    for b in range(blocks):
        assert len(set(last[b * per_block:(b + 1) * per_block])) == 1
    assert len(set(last)) == blocks
    # constant between refreshes, ids stable across refreshes
    assert (ids[59:79] == ids[59]).all()
    assert (ids[59] == ids[-1]).all()


def test_no_lookahead_every_row_up_to_t_is_unchanged():
    config = load_config(None, ["clustering.update_frequency=7", "clustering.correlation_window=30"])
    prices = generate_demo_prices(DemoSpec(n_symbols=10, years=2, seed=11))
    cut = prices["date"].sort_values().unique()[300]
    changed = prices.copy()
    later = changed["date"] > cut
    rng = np.random.default_rng(1)
    factor = np.exp(rng.normal(0, 0.05, later.sum()))
    for col in ("open", "high", "low", "close"):
        changed.loc[later, col] *= factor
    changed.loc[later, "volume"] *= 3
    a = compute_signals(prices, config)
    b = compute_signals(changed, config)
    pd.testing.assert_frame_equal(a[a["date"] <= cut].reset_index(drop=True), b[b["date"] <= cut].reset_index(drop=True))
    assert not a[a["date"] > cut].reset_index(drop=True).equals(b[b["date"] > cut].reset_index(drop=True))


def test_stage_writes_validated_artifacts_and_daily_files(small_demo_dir, tmp_path):
    config = load_config()
    full = run_signal_stage(config, small_demo_dir, tmp_path / "full")
    signals = read_artifact(tmp_path / "full" / "signals_output.parquet", SignalsSchema)
    twin = read_artifact(tmp_path / "full" / "signals_output.csv", SignalWeightsSchema)  # wide target weights
    assert list(twin["date"]) == sorted(signals["date"].unique())[::config.scoring.rebalance_frequency]
    assert full.rows["signals_output"] == len(signals)
    day = sorted(signals["date"].unique())[-10]
    as_of = pd.Timestamp(day).date()
    run_signal_stage(config, small_demo_dir, tmp_path / "daily", as_of_date=as_of)
    # a daily run refreshes the Parquet only: the whole-history CSV twin of an earlier run would be stale
    run_signal_stage(config, small_demo_dir, tmp_path / "full", as_of_date=as_of)
    assert not (tmp_path / "full" / "signals_output.csv").exists()
    assert not (tmp_path / "daily" / "signals_output.csv").exists()
    daily_sig = read_artifact(tmp_path / "daily" / f"signals_{as_of}.csv", DailySignalsSchema)
    scores = read_artifact(tmp_path / "daily" / f"scores_{as_of}.csv", DailyScoresSchema)
    expected = signals[signals["date"] == day]
    assert daily_sig["signal"].tolist() == expected["trend_signal"].tolist()
    assert scores["cluster"].tolist() == expected["cluster"].tolist()
    daily_full = read_artifact(tmp_path / "daily" / "signals_output.parquet", SignalsSchema)
    pd.testing.assert_frame_equal(daily_full, signals[signals["date"] <= day].reset_index(drop=True))
    with pytest.raises(DataError, match="no prices on that date"):
        run_signal_stage(config, small_demo_dir, tmp_path / "bad", as_of_date=date(2016, 1, 2))  # a Saturday


def test_readable_twin_is_v4_wide_weights_the_engine_gives_an_empty_portfolio(small_demo_dir, tmp_path):
    """signals_output.csv: `date,SYM,...` target weights on rebalance days; on the first day with any
    weight the backtest (still holding nothing) orders exactly those weights; it trades as --weights."""
    from stages.trading import run_backtest, run_trading_stage

    config = load_config()
    run_signal_stage(config, small_demo_dir, tmp_path)
    text = (tmp_path / "signals_output.csv").read_text()
    assert text.startswith("date,") and '"' not in text.splitlines()[0]
    twin = read_artifact(tmp_path / "signals_output.csv", SignalWeightsSchema)
    signals = read_artifact(tmp_path / "signals_output.parquet", SignalsSchema)
    prices = pd.read_parquet(tmp_path / "prices.parquet")
    weights = twin.set_index("date")
    assert (weights > 0).any().all()  # only symbols that are ever weighted have a column
    sizing = config.position_sizing
    assert (weights.to_numpy() <= sizing.max_position_size + 1e-12).all()
    assert (weights.sum(axis=1) <= sizing.max_total_exposure + 1e-9).all()
    assert ((weights > 0).sum(axis=1) <= config.scoring.buy_top_n).all()
    held = signals.set_index(["date", "symbol"])["trend_signal"]
    for day, row in weights.iterrows():
        assert (held.loc[[(day, s) for s in row[row > 0].index]] == 1).all()

    first = weights.index[(weights > 0).any(axis=1)][0]
    bt = run_backtest(signals, prices, config)
    orders = bt.orders[bt.orders["date"] == first]
    assert set(orders["action"]) == {"BUY"}
    expected = weights.loc[first]
    expected = expected[expected > 0]
    assert dict(zip(orders["symbol"], orders["target_weight"])) == pytest.approx(expected.to_dict(), abs=1e-15)

    result = run_trading_stage(config, tmp_path, tmp_path / "traded", weights=tmp_path / "signals_output.csv")
    assert result.summary["mode"] == "weights" and result.summary["fills"] > 0


def test_signal_command_line(small_demo_dir, tmp_path, capsys):
    from flows.cli import main

    assert main(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path), "--set", "strategy.name=kama"]) == 0
    assert (tmp_path / "signals_output.csv").exists()
    assert main(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path), "--set", "risk.atr_multiplier=x"]) == 2
    assert "risk.atr_multiplier" in capsys.readouterr().err
