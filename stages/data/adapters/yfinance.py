"""US ETFs through yfinance: `Ticker(symbol).history(start, end, auto_adjust=False, actions=True)`.

Yahoo's Open/High/Low/Close (and Dividends) come split-adjusted even with auto_adjust=False (only
dividends are left unadjusted), so the bars are put back to as-traded prices here: every value
before a split is multiplied by that split's ratio (volume divided). Yahoo adjusts for every split
up to today, so the request always runs to today (rows after `end` are dropped afterwards): a span
ending in the past would miss the later splits its rows were divided by.
Columns: Open, High, Low, Close, Adj Close, Volume, Dividends, Stock Splits (0 = none); index Date,
tz-aware in the exchange's time zone. `ticker` is injectable, so tests replay a recorded frame.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Callable

import numpy as np
import pandas as pd

from stages.data.adapters.base import Fetched, connection_trouble, vendor_library


class YfinanceSource:
    name = "yfinance"

    def __init__(self, ticker: Callable | None = None):
        self._ticker = ticker

    def fetch(self, symbol: str, start: date, end: date) -> Fetched:
        if self._ticker is None:
            self._ticker = vendor_library("yfinance").Ticker
        through = max(end, date.today()) + timedelta(days=1)
        frame = self._ticker(symbol).history(start=start.isoformat(), end=through.isoformat(),
                                             interval="1d", auto_adjust=False, actions=True,
                                             raise_errors=True)
        if frame is None or frame.empty:
            return Fetched(bars=pd.DataFrame(columns=["date", "open", "high", "low", "close", "volume"]),
                           events=pd.DataFrame(columns=["date", "dividend", "split"]))
        index = pd.DatetimeIndex(frame.index)
        dates = (index.tz_localize(None) if index.tz is not None else index).normalize().astype("datetime64[ns]")
        ratio = frame["Stock Splits"].astype(float).to_numpy() if "Stock Splits" in frame else np.zeros(len(frame))
        ratio = np.where(ratio > 0, ratio, 1.0)
        # product of the split ratios strictly after each row: how far Yahoo scaled that row down
        later = np.concatenate([np.cumprod(ratio[::-1])[::-1][1:], [1.0]])
        bars = pd.DataFrame({"date": dates.to_numpy(), **{name.lower(): frame[name].astype(float).to_numpy() * later
                                                           for name in ("Open", "High", "Low", "Close")},
                             "volume": frame["Volume"].astype(float).to_numpy() / later})
        dividend = frame["Dividends"].astype(float).to_numpy() * later if "Dividends" in frame else np.zeros(len(frame))
        event = (dividend > 0) | (ratio != 1.0)
        events = pd.DataFrame({"date": dates.to_numpy()[event], "dividend": dividend[event], "split": ratio[event]})
        last = pd.Timestamp(end)
        return Fetched(bars=bars[bars["date"] <= last].reset_index(drop=True),
                       events=events[events["date"] <= last].reset_index(drop=True))

    def is_transient(self, exc: BaseException) -> bool:
        return connection_trouble(exc) or type(exc).__name__ == "YFRateLimitError"
