"""The daily run's shortcut: carrying signal_state.npz forward must give exactly (bit for bit) what
recomputing the whole history gives, and must refuse -- falling back to the full computation -- when
the state does not describe the prices, the config or the folder it is asked to continue."""
from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from schemas.signals import SignalsSchema
from stages.common.artifacts import stage_run
from stages.common.config import load_config
from stages.common.demo import DemoSpec, generate_demo_prices
from stages.common.errors import SchemaError
from stages.signal import run_signal_stage
from stages.signal.compute import compute_signals_and_state, step_signals, warm_rows
from stages.signal.state import STATE_NAME, SignalState, StateUnusable

CONFIGS = {
    "default": [],
    "kama + filters": ["strategy.name=kama", "strategy.filters.adx_enabled=true", "strategy.filters.volume_enabled=true",
                       "strategy.filters.slope_enabled=true"],
    "combo either, std volatility, fast clusters": [
        "strategy.name=combo", "strategy.combo_mode=either", "position_sizing.volatility_method=std",
        "clustering.update_frequency=3", "clustering.correlation_window=30"],
}


@pytest.fixture(scope="module")
def ragged_prices() -> pd.DataFrame:
    """A demo panel with random suspension days, one symbol listed late and dead flat for its first
    50 days (DI+ + DI- = 0 after the ADX warm-up: the day-by-day ADX path) and one that goes flat
    for the last 60 days."""
    prices = generate_demo_prices(DemoSpec(n_symbols=14, years=2, seed=5))
    rng = np.random.default_rng(3)
    prices = prices[rng.random(len(prices)) > 0.03].reset_index(drop=True)
    symbols = sorted(prices["symbol"].unique())
    dates = np.sort(prices["date"].unique())
    prices = prices[~((prices["symbol"] == symbols[1]) & (prices["date"] < dates[len(dates) - 200]))].reset_index(drop=True)
    for symbol, days in ((symbols[1], slice(len(dates) - 200, len(dates) - 150)), (symbols[2], slice(-60, None))):
        flat = (prices["symbol"] == symbol) & prices["date"].isin(dates[days])
        level = prices.loc[(prices["symbol"] == symbol) & ~flat, "close"].iloc[-1 if days.start < 0 else 0]
        prices.loc[flat, ["open", "high", "low", "close"]] = level
    return prices


def test_the_ragged_panel_takes_the_day_by_day_adx_path(ragged_prices, monkeypatch):
    from stages.signal import indicators as ind

    calls = []
    holding = ind._smooth_holding
    monkeypatch.setattr(ind, "_smooth_holding", lambda dx, *a: calls.append(dx.shape[1]) or holding(dx, *a))
    compute_signals_and_state(ragged_prices, load_config())
    assert calls == [1]


def _upto(prices: pd.DataFrame, day) -> pd.DataFrame:
    return prices[prices["date"] <= day].reset_index(drop=True)


def _assert_same_state(a: SignalState, b: SignalState) -> None:
    assert set(a.arrays) == set(b.arrays)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key], equal_nan=True), key
    assert (a.fingerprint, a.n_days, a.last_date, a.rows) == (b.fingerprint, b.n_days, b.last_date, b.rows)
    assert np.array_equal(a.counts, b.counts)


@pytest.mark.parametrize("sets", CONFIGS.values(), ids=CONFIGS.keys())
def test_steps_equal_a_full_recompute_bit_for_bit(ragged_prices, sets):
    """Steps of 1 and of 5 days over the last 25 days (cluster refreshes, suspensions, a late
    listing, flat prices): every new row and the state after equal a full run."""
    config = load_config(None, sets)
    dates = np.sort(ragged_prices["date"].unique())
    for step_days in (1, 5):
        start = len(dates) - 26
        _, state = compute_signals_and_state(_upto(ragged_prices, dates[start]), config)
        for i in range(start, len(dates) - step_days, step_days):
            now = _upto(ragged_prices, dates[i + step_days])
            rows, state = step_signals(now, config, state)
            full, full_state = compute_signals_and_state(now, config)
            expected = full[full["date"] > dates[i]].reset_index(drop=True)
            pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected, check_exact=True)
            _assert_same_state(state, full_state)


def test_state_round_trips_through_its_file(ragged_prices, tmp_path):
    _, state = compute_signals_and_state(ragged_prices, load_config())
    path = tmp_path / STATE_NAME
    path.write_bytes(state.to_bytes())
    _assert_same_state(SignalState.load(path), state)


@pytest.mark.parametrize("change, reason", [
    ("revise", "differ from those the state was made from"),
    ("config", "config changed"),
    ("same day", "no prices after"),
    ("new symbol", "symbols changed"),
])
def test_a_state_that_does_not_describe_the_run_is_refused(ragged_prices, change, reason):
    config = load_config()
    dates = np.sort(ragged_prices["date"].unique())
    _, state = compute_signals_and_state(_upto(ragged_prices, dates[-2]), config)
    now = _upto(ragged_prices, dates[-1])
    if change == "revise":  # e.g. a split adjustment rewrites the history
        now.loc[now["date"] == dates[10], ["open", "high", "low", "close"]] *= 1.001
    elif change == "config":
        config = load_config(None, ["strategy.kama.er_window=12"])
    elif change == "same day":
        now = _upto(ragged_prices, dates[-2])
    else:
        extra = now[now["symbol"] == now["symbol"].iloc[0]].assign(symbol="999999.SH")
        now = pd.concat([now, extra]).sort_values(["symbol", "date"], ignore_index=True)
    with pytest.raises(StateUnusable, match=reason):
        step_signals(now, config, state)


def test_a_symbol_too_young_to_continue_is_refused():
    prices = generate_demo_prices(DemoSpec(n_symbols=4, years=1, seed=2))
    dates = np.sort(prices["date"].unique())
    config = load_config()
    young = prices[(prices["symbol"] != prices["symbol"].iloc[0]) | (prices["date"] >= dates[-warm_rows(config)])]
    _, state = compute_signals_and_state(_upto(young, dates[-2]), config)
    with pytest.raises(StateUnusable, match="under"):
        step_signals(_upto(young, dates[-1]), config, state)


# --------------------------------------------------------------------------- the daily run in a folder
def _digests(folder, names):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


@pytest.fixture(scope="module")
def evening(small_demo_dir, tmp_path_factory):
    """A folder after the daily run of the second-to-last day, and the last day."""
    config = load_config()
    days = sorted(pd.read_csv(next(small_demo_dir.glob("*.csv")), parse_dates=["date"])["date"])
    folder = tmp_path_factory.mktemp("evening") / "yesterday"
    run_signal_stage(config, small_demo_dir, folder, as_of_date=days[-2].date())
    return config, folder, days[-1].date()


def test_the_evening_run_appends_the_same_bytes_a_full_run_writes(evening, small_demo_dir, tmp_path, caplog):
    config, yesterday, today = evening
    shutil.copytree(yesterday, tmp_path / "step")
    with caplog.at_level(logging.INFO, logger="stages.signal.stage"):
        result = run_signal_stage(config, small_demo_dir, tmp_path / "step", as_of_date=today)
    assert result.summary["computed"] == "from saved state"
    assert "carried forward: 1 new day(s)" in caplog.text
    fresh = run_signal_stage(config, small_demo_dir, tmp_path / "fresh", as_of_date=today)
    assert fresh.summary["computed"] == "whole history"
    names = ["prices.parquet", "signals_output.parquet", STATE_NAME, f"signals_{today}.csv", f"scores_{today}.csv"]
    assert _digests(tmp_path / "step", names) == _digests(tmp_path / "fresh", names)
    assert result.rows == fresh.rows
    # the shortcut's inputs are on record: the state and the signals it extended
    entry = json_manifest(tmp_path / "step")["artifacts"]["signals_output.parquet"]
    assert {STATE_NAME, "signals_output.parquet"} <= set(entry["inputs"])


def json_manifest(folder):
    import json

    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("damage", ["garbage state", "edited state", "edited signals", "state from another run"])
def test_a_damaged_or_foreign_state_means_a_full_recompute(evening, small_demo_dir, tmp_path, caplog, damage):
    config, yesterday, today = evening
    folder = tmp_path / "step"
    shutil.copytree(yesterday, folder)
    if damage == "garbage state":
        (folder / STATE_NAME).write_bytes(b"not a zip")
        manifest = json_manifest(folder)  # keep the manifest consistent so the reader itself must catch it
        manifest["artifacts"][STATE_NAME]["sha256"] = hashlib.sha256(b"not a zip").hexdigest()
        (folder / "manifest.json").write_text(__import__("json").dumps(manifest))
    elif damage == "edited state":
        data = bytearray((folder / STATE_NAME).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / STATE_NAME).write_bytes(bytes(data))
    elif damage == "edited signals":
        with open(folder / "signals_output.parquet", "ab") as fh:
            fh.write(b"\0")
    else:
        manifest = json_manifest(folder)
        manifest["artifacts"][STATE_NAME]["started_at"] = "2000-01-01T00:00:00.000+00:00"
        (folder / "manifest.json").write_text(__import__("json").dumps(manifest))
    with caplog.at_level(logging.INFO, logger="stages.signal.stage"):
        result = run_signal_stage(config, small_demo_dir, folder, as_of_date=today)
    assert result.summary["computed"] == "whole history"
    assert "signal state not used" in caplog.text
    if damage != "state from another run":
        assert any(r.levelno == logging.WARNING for r in caplog.records if "signal state not used" in r.message)
    fresh = tmp_path / "fresh"
    run_signal_stage(config, small_demo_dir, fresh, as_of_date=today)
    names = ["signals_output.parquet", STATE_NAME]
    assert _digests(folder, names) == _digests(fresh, names)


def test_write_extended_validates_the_new_rows_and_the_seam(evening, tmp_path):
    import pyarrow.parquet as pq

    _, yesterday, _ = evening
    previous = pq.read_table(yesterday / "signals_output.parquet")
    last = previous.slice(previous.num_rows - 1).to_pandas()
    before = (yesterday / "signals_output.parquet").read_bytes()
    bad_value = last.assign(date=last["date"] + pd.Timedelta(days=1), close=-1.0)
    backwards = last.assign(date=last["date"] - pd.Timedelta(days=1))
    for rows, message in ((bad_value, "close"), (backwards, "sorted")):
        with pytest.raises(SchemaError, match=message):
            with stage_run("signal", yesterday) as run:
                run.write_extended(previous, rows, "signals_output.parquet", SignalsSchema)
        assert (yesterday / "signals_output.parquet").read_bytes() == before


def test_trendflow_validate_checks_the_state_file(evening, tmp_path, capsys):
    from stages.common.validate import main

    _, yesterday, _ = evening
    assert main([str(yesterday / STATE_NAME)]) == 0
    assert "SignalState" in capsys.readouterr().out
    broken = tmp_path / STATE_NAME
    broken.write_bytes(b"PK\x03\x04 truncated")
    assert main([str(broken)]) == 1
    assert "cannot be read" in capsys.readouterr().out


@pytest.mark.parametrize("market", ["cn_etf", "us_etf"])
def test_steps_on_real_prices_equal_a_full_recompute(market):
    """Real quirks (listings, delistings, long suspensions, zero-volume and flat days)."""
    from stages.common.market_data import load_market_data
    from tests.conftest import shared_data_dir

    prices = load_market_data(shared_data_dir(market)).prices
    config = load_config()
    dates = np.sort(prices["date"].unique())
    start = len(dates) - 400
    _, state = compute_signals_and_state(_upto(prices, dates[start]), config)
    for end in (start + 1, start + 2, start + 25):
        now = _upto(prices, dates[end])
        rows, state = step_signals(now, config, state)
        full, full_state = compute_signals_and_state(now, config)
        expected = full[full["date"] > rows["date"].min() - pd.Timedelta(days=1)].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected, check_exact=True)
        _assert_same_state(state, full_state)
