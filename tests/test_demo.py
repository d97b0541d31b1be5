"""The demo universe: deterministic, realistic enough to trade, written like real data, and its command."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from schemas.prices import PricesSchema
from stages.common.demo import (
    DemoSpec,
    demo_csv_bytes,
    demo_sectors,
    ensure_demo_universe,
    generate_demo_prices,
    write_demo_universe,
)
from stages.common.market_data import load_market_data


@pytest.fixture(scope="module")
def default_prices() -> pd.DataFrame:
    return generate_demo_prices(DemoSpec())


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = DemoSpec(n_symbols=12, years=2, seed=3)
    a = write_demo_universe(tmp_path / "a", spec)
    b = write_demo_universe(tmp_path / "b", spec)
    names = sorted(p.name for p in a.iterdir())
    assert len(names) == 12 and names == sorted(p.name for p in b.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    other = demo_csv_bytes(generate_demo_prices(DemoSpec(n_symbols=12, years=2, seed=4)))
    same_names = set(other) & {n[:-4] for n in names}
    assert all(other[s] != (a / f"{s}.csv").read_bytes() for s in same_names)
    assert not generate_demo_prices(DemoSpec(n_symbols=12, years=2, seed=4)).equals(generate_demo_prices(spec))


def test_files_look_like_real_data_and_load_back_exactly(tmp_path):
    spec = DemoSpec(n_symbols=6, years=1, seed=5)
    folder = write_demo_universe(tmp_path, spec)
    text = next(folder.glob("*.csv")).read_text().splitlines()
    assert text[0] == "date,open,high,low,close,volume"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(,\d+\.\d{3}){5}", text[1]), text[1]
    pd.testing.assert_frame_equal(load_market_data(folder).prices, generate_demo_prices(spec))


def test_generated_prices_are_schema_valid_as_they_are(default_prices):
    pd.testing.assert_frame_equal(PricesSchema.validate(default_prices.copy()), default_prices)


def test_forty_cn_style_etfs_over_ten_years_of_weekdays(default_prices):
    symbols = default_prices["symbol"].unique()
    assert len(symbols) == 40 and all(re.fullmatch(r"\d{6}\.(SH|SZ)", s) for s in symbols)
    days = pd.DatetimeIndex(default_prices["date"].unique())
    assert len(days) == 2520 and (days.day_of_week < 5).all()
    assert (days.max() - days.min()).days / 365.25 == pytest.approx(9.66, abs=0.05)
    assert (default_prices["volume"] > 0).all()


def test_sectors_move_together_more_than_across(default_prices):
    sectors = demo_sectors(DemoSpec())
    assert set(sectors) == set(default_prices["symbol"]) and len(set(sectors.values())) == 6
    returns = np.log(default_prices.pivot(index="date", columns="symbol", values="close")).diff()
    corr = returns.corr().to_numpy()
    sector = np.array([sectors[s] for s in returns.columns])
    same = (sector[:, None] == sector[None, :]) & ~np.eye(len(sector), dtype=bool)
    within, across = corr[same].mean(), corr[sector[:, None] != sector[None, :]].mean()
    assert within > across + 0.15 and across > 0.1  # a market factor plus sector factors


def test_returns_have_fat_tails(default_prices):
    returns = np.log(default_prices.pivot(index="date", columns="symbol", values="close")).diff()
    kurtosis = returns.kurt() + 3  # pandas gives excess kurtosis
    assert kurtosis.min() > 3 and kurtosis.median() > 4


def test_some_late_listings_and_some_missing_days(default_prices):
    first_day = default_prices.groupby("symbol")["date"].min()
    late = first_day[first_day > default_prices["date"].min()]
    assert 2 <= len(late) <= 15
    rows = default_prices.groupby("symbol").size()
    span = default_prices.groupby("symbol")["date"].agg(lambda d: len(pd.bdate_range(d.min(), d.max())))
    missing = span - rows  # weekdays inside a symbol's listed life without a row: suspensions
    assert (missing > 0).sum() >= 20 and missing.sum() < 0.01 * rows.sum()


def test_ensure_writes_once_and_regenerates_when_the_spec_changes(tmp_path):
    spec = DemoSpec(n_symbols=3, years=0.5, seed=1)
    folder = ensure_demo_universe(tmp_path / "demo", spec)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")}
    ensure_demo_universe(folder, spec)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.csv")} == stamps
    (folder / "mine.csv").write_text("kept")  # not the demo's: left alone
    ensure_demo_universe(folder, DemoSpec(n_symbols=3, years=0.5, seed=2))
    assert (folder / "mine.csv").read_text() == "kept"
    (folder / "mine.csv").unlink()
    assert (folder / ".demo_spec").read_text().splitlines()[0] == "3,0.5,2,6,limits"
    assert len(list(folder.glob("*.csv"))) == 3  # the previous universe's files are gone
    assert load_market_data(folder).prices.equals(generate_demo_prices(DemoSpec(n_symbols=3, years=0.5, seed=2)))
    (folder / ".demo_spec").write_text("3,0.5,2,6\n" + "".join(f"{p.name}\n" for p in folder.glob("*.csv")))
    (folder / sorted(folder.glob("*.csv"))[0].name).write_text("date,open,high,low,close,volume\n")
    ensure_demo_universe(folder, DemoSpec(n_symbols=3, years=0.5, seed=2))  # an earlier generator's folder: remade
    assert load_market_data(folder).prices.equals(generate_demo_prices(DemoSpec(n_symbols=3, years=0.5, seed=2)))


def test_demo_data_command(tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "d"
    assert main(["demo-data", "--out", str(out), "--symbols", "5", "--years", "1", "--seed", "9"]) == 0
    assert len(list(out.glob("*.csv"))) == 5
    assert "5 symbols x 1 years (seed 9)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(load_market_data(out).prices, generate_demo_prices(DemoSpec(n_symbols=5, years=1, seed=9)))
    assert main(["demo-data", "--out", str(tmp_path / "e"), "--symbols", "0"]) == 2
    assert "error: --symbols must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("spec", [DemoSpec(), DemoSpec(n_symbols=100)])
def test_the_demo_is_a_clean_universe_of_its_market_every_move_inside_the_daily_limit(spec):
    """The demo's codes are CN ETFs (+-10%, 588 STAR ETFs +-20%): no session's open, high, low or close
    leaves the limit band of the previous traded close, so the quality gate has no jump to warn about
    (a market-wide shock day is a limit day instead; was 35 jumps in the default demo, 93 at 100 symbols)."""
    from stages.data.quality import detect_jumps, limit_bands
    from stages.trading.rules import limit_prices

    prices = generate_demo_prices(spec)
    assert detect_jumps(prices).empty
    previous = prices.groupby("symbol")["close"].shift(1).to_numpy()
    symbols, codes = np.unique(prices["symbol"].to_numpy(), return_inverse=True)
    down, up = limit_prices(previous, limit_bands(list(symbols))[codes], 3)
    traded = ~np.isnan(previous)
    for column in ("open", "high", "low", "close"):
        values = prices[column].to_numpy()[traded]
        assert (values <= up[traded] + 1e-9).all() and (values >= down[traded] - 1e-9).all(), column
    at_limit = np.isclose(prices["close"].to_numpy()[traded], up[traded]) | np.isclose(prices["close"].to_numpy()[traded], down[traded])
    assert at_limit.sum() > 0  # the shocks are limit days, not removed


def test_a_move_through_the_limit_stops_at_the_limit_price_and_later_prices_follow_from_there():
    """Symbol 0 (band 10%): raw closes 1.000 -> 1.250 (+25%) -> 1.375 (+10%): stopped at 1.100, then
    +10% from there = 1.210; its open, high and low stay in each day's band. Symbol 1 (band 30%, the
    same raw prices) breaks nothing: only rounded."""
    from stages.common.demo import quote_within_limits

    def grid(values):
        return np.array([values, values], dtype=float).T

    raw = dict(open_=grid([1.0, 1.0, 1.25]), high=grid([1.0, 1.3, 1.4]), low=grid([1.0, 0.95, 1.2]),
               close=grid([1.0, 1.25, 1.375]))
    o, h, lo, c = quote_within_limits(**raw, present=np.ones((3, 2), dtype=bool), bands=np.array([0.10, 0.30]))
    np.testing.assert_allclose(c[:, 0], [1.0, 1.1, 1.21])
    np.testing.assert_allclose(o[:, 0], [1.0, 1.0, 1.1])
    np.testing.assert_allclose(h[:, 0], [1.0, 1.1, 1.21])
    np.testing.assert_allclose(lo[:, 0], [1.0, 0.95, 1.056])
    for got, name in zip((o, h, lo, c), ("open_", "high", "low", "close")):
        np.testing.assert_array_equal(got[:, 1], raw[name][:, 1])
