"""Chinese ETFs through akshare (Eastmoney + Sina), unadjusted.

- bars: `fund_etf_hist_em(symbol=code, period="daily", start_date, end_date, adjust="")` -- columns
  日期, 开盘, 收盘, 最高, 最低, 成交量 (lots of 100 shares), ...; an empty frame when there is nothing;
- cash dividends: `fund_etf_dividend_sina("sh510300")` -- 日期, 累计分红 (cumulative per share, so each
  ex-date's dividend is the step in that column);
- splits: `fund_cf_em(year)` -- every fund's share splits of a year: 基金代码, 拆分折算日, 拆分类型,
  拆分折算 (new shares per old share); asked once per year per run and filtered by code.
Each function is injectable, so tests replay responses without a network.
"""
from __future__ import annotations

from datetime import date
from typing import Callable

import numpy as np
import pandas as pd

from stages.data.adapters.base import Fetched, connection_trouble, empty_events, vendor_library

LOT = 100  # Eastmoney's 成交量 counts lots


class AkshareSource:
    name = "akshare"

    def __init__(self, hist: Callable | None = None, dividends: Callable | None = None, splits: Callable | None = None):
        self._hist, self._dividends, self._splits = hist, dividends, splits
        self._splits_by_year: dict[int, pd.DataFrame] = {}

    def _functions(self):
        if None in (self._hist, self._dividends, self._splits):
            ak = vendor_library("akshare")
            self._hist = self._hist or ak.fund_etf_hist_em
            self._dividends = self._dividends or ak.fund_etf_dividend_sina
            self._splits = self._splits or ak.fund_cf_em
        return self._hist, self._dividends, self._splits

    def fetch(self, symbol: str, start: date, end: date) -> Fetched:
        hist, dividends, splits = self._functions()
        code, _, exchange = symbol.upper().partition(".")
        raw = hist(symbol=code, period="daily", start_date=f"{start:%Y%m%d}", end_date=f"{end:%Y%m%d}", adjust="")
        if raw is None or raw.empty:
            bars = pd.DataFrame(columns=["date", "open", "high", "low", "close", "volume"])
        else:
            bars = pd.DataFrame({
                "date": pd.to_datetime(raw["日期"]).astype("datetime64[ns]"),
                "open": raw["开盘"].astype(float), "high": raw["最高"].astype(float), "low": raw["最低"].astype(float),
                "close": raw["收盘"].astype(float), "volume": raw["成交量"].astype(float) * LOT,
            })
        events = pd.concat([self._cash_dividends(dividends, f"{exchange.lower()}{code}"),
                            self._share_splits(splits, code, start, end)], ignore_index=True)
        if len(events):
            events = (events.groupby("date", as_index=False)
                      .agg(dividend=("dividend", "sum"), split=("split", "prod")).sort_values("date", ignore_index=True))
        return Fetched(bars=bars, events=events)

    @staticmethod
    def _cash_dividends(dividends: Callable, sina_symbol: str) -> pd.DataFrame:
        frame = dividends(symbol=sina_symbol)
        if frame is None or frame.empty:
            return empty_events()
        cumulative = frame["累计分红"].astype(float).to_numpy()
        paid = np.diff(cumulative, prepend=0.0)
        keep = paid > 1e-12
        return pd.DataFrame({"date": pd.to_datetime(frame["日期"]).astype("datetime64[ns]")[keep].to_numpy(),
                             "dividend": paid[keep], "split": 1.0})

    def _share_splits(self, splits: Callable, code: str, start: date, end: date) -> pd.DataFrame:
        found = []
        for year in range(start.year, end.year + 1):
            if year not in self._splits_by_year:
                self._splits_by_year[year] = splits(year=str(year))
            table = self._splits_by_year[year]
            if table is None or table.empty:
                continue
            mine = table[table["基金代码"].astype(str).str.zfill(6) == code]
            found.append(pd.DataFrame({"date": pd.to_datetime(mine["拆分折算日"]).astype("datetime64[ns]").to_numpy(),
                                       "dividend": 0.0, "split": mine["拆分折算"].astype(float).to_numpy()}))
        found = [f for f in found if len(f)]
        return pd.concat(found, ignore_index=True) if found else empty_events()

    def is_transient(self, exc: BaseException) -> bool:
        # a blocked Eastmoney IP answers with an HTML page: the JSON decode fails
        return connection_trouble(exc) or type(exc).__name__ == "JSONDecodeError"
