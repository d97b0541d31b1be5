"""Exchange sessions for `data.calendar` (exchange_calendars codes XSHG, XNYS; XSHE -- Shenzhen,
which trades Shanghai's sessions and which exchange_calendars does not have -- uses XSHG's).

With a calendar the backtest steps through the exchange's sessions rather than the union of the
price files' dates: a session without a symbol's row is a suspension of that symbol (a session
without any row, a day on which nothing traded), and a row on a day that is not a session is an
error naming the file.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from stages.common.errors import ConfigError, DataError

CALENDAR_ALIASES = {"XSHE": "XSHG"}


@lru_cache(maxsize=16)
def exchange_sessions(code: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """The sessions of calendar `code` from `first` to `last` (inclusive), as naive dates."""
    import exchange_calendars as xc

    try:
        calendar = xc.get_calendar(CALENDAR_ALIASES.get(code, code), start=first, end=last)
    except (ValueError, KeyError, xc.errors.CalendarError) as exc:
        raise ConfigError(f"key 'data.calendar': {code} has no sessions for {first.date()}..{last.date()} ({exc})") from None
    sessions = pd.DatetimeIndex(calendar.sessions)
    return sessions.tz_localize(None) if sessions.tz is not None else sessions


def session_dates(dates: pd.DatetimeIndex, code: str, where: str) -> pd.DatetimeIndex:
    """The calendar's sessions spanning `dates`; DataError naming `where` and the first days that are
    not sessions when there are any."""
    sessions = exchange_sessions(code, dates.min(), dates.max())
    off = dates[~dates.isin(sessions)]
    if len(off):
        raise DataError(f"{where} has rows on {len(off)} day(s) that are not {code} sessions, first "
                        f"{[str(d.date()) for d in off[:5]]}: wrong calendar, or bad rows")
    return pd.DatetimeIndex(sessions, name="date")


def check_price_sessions(prices: pd.DataFrame, code: str, source: str | Path) -> None:
    """Every row of the long panel is on a session of `code`; else DataError naming the symbol's file."""
    dates = pd.DatetimeIndex(prices["date"])
    sessions = exchange_sessions(code, dates.min(), dates.max())
    off = ~dates.isin(sessions)
    if not off.any():
        return
    bad = prices.loc[off, ["symbol", "date"]]
    symbol = str(bad["symbol"].iloc[0])
    source = Path(source)
    files = sorted(source.glob(f"{symbol}.*")) if source.is_dir() else [source]
    name = files[0] if files else source / symbol
    days = [str(pd.Timestamp(d).date()) for d in bad.loc[bad["symbol"] == symbol, "date"].head(5)]
    raise DataError(f"{name}: rows on day(s) that are not {code} sessions: {days} ({int(off.sum())} such rows in "
                    f"all): wrong data.calendar, or bad rows")
