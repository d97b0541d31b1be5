"""The loader on real prices in ../shared/data (skipped when absent): every file loads, the bulk path
gives exactly what the per-file path gives, and known features of each market survive loading."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.common.market_data import load_market_data, read_symbol_file
from stages.common.panel import to_panel
from tests.conftest import shared_data_dir

MARKETS = {  # files, bounds on the first and last date (cn_etf: a few files start 2015-06, 511260.SH runs to 2026-07)
    "cn_etf": (120, "2015-06-01", "2026-07-31"),
    "us_etf": (40, "1999-11-01", "2021-12-31"),
    "cn_ashare": (40, "2020-01-01", "2026-02-28"),
}


@pytest.mark.parametrize("market", sorted(MARKETS))
def test_every_real_file_loads_and_matches_the_per_file_path(market):
    folder = shared_data_dir(market)
    files, first, last = MARKETS[market]
    data = load_market_data(folder)
    assert len(data.symbols) == files == len(list(folder.glob("*.csv"))) and data.skipped == []
    prices = data.prices
    assert prices["date"].min() >= pd.Timestamp(first) and prices["date"].max() <= pd.Timestamp(last)
    assert not prices.isna().any().any()
    one_by_one = pd.concat([read_symbol_file(path, path.stem) for path in sorted(folder.glob("*.csv"))],
                           ignore_index=True).sort_values(["symbol", "date"], ignore_index=True)
    pd.testing.assert_frame_equal(prices, one_by_one)


def test_us_market_closure_after_september_11_stays_missing():
    prices = load_market_data(shared_data_dir("us_etf")).prices
    days = pd.DatetimeIndex(prices["date"].unique())
    assert not ((days > "2001-09-10") & (days < "2001-09-17")).any()
    assert (prices["volume"] == 0).any()  # early zero-volume days are kept: volume >= 0 is valid


def test_cn_etf_late_listings_are_not_tradable_before_they_list():
    data = load_market_data(shared_data_dir("cn_etf"), symbols=None, start=pd.Timestamp("2020-01-01").date())
    panel = to_panel(data.prices)
    listed = data.prices.groupby("symbol")["date"].min()
    late = listed[listed > panel.dates[0]]
    assert len(late) > 0
    for symbol, first_day in late.items():
        column = panel.symbols.get_loc(symbol)
        before = panel.dates < first_day
        assert not panel.tradable[before, column].any() and np.isnan(panel.close[before, column]).all()


def test_a_symbol_subset_and_date_window_of_real_data():
    folder = shared_data_dir("cn_ashare")
    wanted = sorted(p.stem for p in folder.glob("*.csv"))[:5]
    data = load_market_data(folder, symbols=wanted, start=pd.Timestamp("2023-01-01").date(),
                            end=pd.Timestamp("2023-12-31").date(), min_history_days=100)
    assert set(data.symbols) | set(data.skipped) == set(wanted)
    assert data.prices["date"].dt.year.eq(2023).all()
    assert data.prices.groupby("symbol").size().min() >= 100
