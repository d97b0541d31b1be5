"""The quality gate between prices and signals: what the signal stage may trust, in data_quality.csv.

Checks (one row per finding; every symbol gets a freshness row):
- freshness against the exchange calendar (XSHG for .SH and .SZ -- exchange_calendars has no XSHE;
  Shenzhen keeps Shanghai's sessions -- XNYS otherwise): sessions
  between a symbol's last row and the reference date (the as-of date of a daily run, else the
  panel's last date);
- ended series: a symbol at least `risk.data_ended_sessions` sessions behind while the panel goes on
  (the engine sells such a holding at its last close, reason data_ended);
- close-only data: a symbol whose open = high = low = close on every row (INFO);
- jumps: a one-day close-to-close move beyond the board's daily limit band (`limit_band`), which on
  unadjusted prices is a split or a dividend the data does not adjust for.
The row-level checks (OHLC consistency, duplicate dates, NaN) stay in the loader, which stops or
drops bad rows before this gate sees the panel.
"""
from __future__ import annotations

import logging
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

QUALITY_COLUMNS = ["symbol", "check", "severity", "date", "value", "detail"]
# Markets without daily limits (US): a one-day move this large in an ETF is a split, not a market move.
NO_LIMIT_BAND = 0.40
# The limit price is rounded to the tick, so a limit move can exceed the band by a fraction of a tick.
_BAND_SLACK = 0.006
_LOGGED_PER_CHECK = 5  # warnings of one check shown on the terminal; all are in data_quality.csv


def exchange_of(symbol: str) -> str:
    """The exchange_calendars code of a symbol's sessions: XSHG for .SH/.SZ (Shenzhen trades Shanghai's
    sessions; exchange_calendars has no XSHE), else XNYS."""
    suffix = symbol.rsplit(".", 1)[-1].upper() if "." in symbol else ""
    return "XSHG" if suffix in ("SH", "SS", "SZ") else "XNYS"


def limit_bands(symbols: list[str]) -> np.ndarray:
    """The daily move each symbol cannot exceed: its board's price band for CN symbols (the trading
    rules' own answer, stages.trading.exchange.board_bands: 0.10 main, 0.20 ChiNext/STAR and their
    ETFs); for markets without limits (US), a split-size move."""
    from stages.trading.exchange import board_bands, exchange_code

    bands = np.full(len(symbols), NO_LIMIT_BAND)
    cn = [i for i, symbol in enumerate(symbols) if "." in symbol and exchange_of(symbol) != "XNYS"]
    if cn:
        bands[cn] = board_bands([exchange_code(symbols[i]) for i in cn])
    return bands


def limit_band(symbol: str) -> float:
    """`limit_bands` of one symbol."""
    return float(limit_bands([symbol])[0])


def symbol_runs(prices: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Start row, end row (exclusive) and name of each symbol's run in a panel sorted by (symbol, date)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = pa.array(prices["symbol"])
    if len(names) == 0:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64), []
    change = pc.not_equal(names[1:], names[:-1]).to_numpy(zero_copy_only=False)
    starts = np.r_[0, np.flatnonzero(change) + 1]
    ends = np.r_[starts[1:], len(names)]
    return starts, ends, names.take(pa.array(starts)).to_pylist()


def detect_jumps(prices: pd.DataFrame) -> pd.DataFrame:
    """Split-like jumps: rows whose close moved beyond the symbol's limit band from its previous row.

    Requires: a long panel (date, symbol, close) sorted by (symbol, date). Returns one row per jump:
    symbol, date, previous_close, close, move (fraction), band. The one place this rule lives: the
    quality gate calls it (and a loader may)."""
    close = prices["close"].to_numpy(dtype=float)
    starts, ends, names = symbol_runs(prices)
    bands = np.repeat(limit_bands([str(s) for s in names]), ends - starts) if names else np.array([])
    previous = np.r_[np.nan, close[:-1]] if len(close) else close
    previous[starts] = np.nan  # a symbol's first row has no previous close
    with np.errstate(invalid="ignore", divide="ignore"):
        move = close / previous - 1.0
    rows = np.flatnonzero(np.abs(move) > bands + _BAND_SLACK)
    owner = np.searchsorted(starts, rows, side="right") - 1
    return pd.DataFrame({
        "symbol": np.array(names, dtype=object)[owner].astype(str) if len(rows) else np.array([], dtype=str),
        "date": prices["date"].to_numpy()[rows], "previous_close": previous[rows],
        "close": close[rows], "move": move[rows], "band": bands[rows],
    })


def close_only_symbols(prices: pd.DataFrame) -> list[str]:
    """Symbols whose every row has open = high = low = close: close-only data (the loader fills a file
    without open/high/low that way), so ATR comes from close-to-close moves and ADX has nothing to read."""
    close = prices["close"].to_numpy()
    flat = (prices["open"].to_numpy() == close) & (prices["high"].to_numpy() == close) & (prices["low"].to_numpy() == close)
    starts, _, names = symbol_runs(prices)
    if not names:
        return []
    every = np.logical_and.reduceat(flat, starts)
    return [name for name, yes in zip(names, every) if yes]


def check_close_only(prices: pd.DataFrame, config) -> list[str]:
    """The close-only symbols; a ConfigError naming the key when a setting needs prices they lack:
    `execution.fill_price` must be close (no open to fill at), the ADX filter needs highs and lows."""
    from stages.common.errors import ConfigError

    flat = close_only_symbols(prices)
    if not flat:
        return flat
    named = f"{len(flat)} symbol(s) have close prices only (e.g. {', '.join(flat[:3])})"
    if config.execution.fill_price != "close":
        raise ConfigError(f"key 'execution.fill_price': {config.execution.fill_price!r} needs open prices; {named}: "
                          "set execution.fill_price=close")
    if config.strategy.filters.adx_enabled:
        raise ConfigError(f"key 'strategy.filters.adx_enabled': the ADX filter needs high and low prices; {named}: "
                          "set strategy.filters.adx_enabled=false")
    return flat


@lru_cache(maxsize=8)
def calendar_sessions(code: str) -> pd.DatetimeIndex:
    import exchange_calendars as xc

    sessions = pd.DatetimeIndex(xc.get_calendar(code).sessions)
    return sessions.tz_localize(None) if sessions.tz is not None else sessions


def sessions_between(code: str, after: pd.Timestamp, until: pd.Timestamp, panel_dates: pd.DatetimeIndex) -> int:
    """Exchange sessions in (after, until] by the calendar `code`; the panel's own dates when the span is
    outside the calendar's range."""
    sessions = calendar_sessions(code)
    if len(sessions) and sessions[0] <= after and until <= sessions[-1]:
        return int(sessions.searchsorted(until, "right") - sessions.searchsorted(after, "right"))
    return int(panel_dates.searchsorted(until, "right") - panel_dates.searchsorted(after, "right"))


def quality_report(prices: pd.DataFrame, *, as_of: date | None, ended_sessions: int,
                   close_only: list[str] = ()) -> pd.DataFrame:
    """data_quality.csv rows for a validated long panel (sorted by symbol, date).

    Severity: INFO (fine), WARNING (a jump; a stale or ended symbol), ERROR is never set here -- the
    trading stage decides whether a stale holding stops a daily run (it knows the holdings)."""
    panel_dates = pd.DatetimeIndex(np.unique(prices["date"].to_numpy()))
    reference = pd.Timestamp(as_of) if as_of is not None else panel_dates[-1]
    starts, ends, names = symbol_runs(prices)
    dates = prices["date"].to_numpy()
    first = dict(zip(names, pd.DatetimeIndex(dates[starts])))
    last = dict(zip(names, pd.DatetimeIndex(dates[ends - 1])))
    rows = []
    for symbol, last_date in last.items():
        behind = sessions_between(exchange_of(symbol), last_date, reference, panel_dates) if last_date < reference else 0
        if behind == 0:
            rows.append((symbol, "freshness", "INFO", last_date, 0.0, f"has a row for {reference.date()}"))
        elif as_of is not None:
            rows.append((symbol, "freshness", "WARNING", last_date, float(behind),
                         f"stale: no row for the as-of session {reference.date()}; last {last_date.date()}, {behind} session(s) behind"))
        elif behind >= ended_sessions:
            rows.append((symbol, "ended", "WARNING", last_date, float(behind),
                         f"data ends {last_date.date()}, {behind} session(s) before the panel's last date {reference.date()}: "
                         f"a holding is sold at its last close after {ended_sessions} session(s) without a price (data_ended)"))
        else:
            rows.append((symbol, "freshness", "INFO", last_date, float(behind),
                         f"last row {last_date.date()}, {behind} session(s) before the panel's last date"))
    for symbol in close_only:
        rows.append((symbol, "close_only", "INFO", first[symbol], 0.0,
                     "close prices only: open = high = low = close, ATR from close-to-close moves, ADX unavailable"))
    for jump in detect_jumps(prices).itertuples(index=False):
        rows.append((jump.symbol, "jump", "WARNING", pd.Timestamp(jump.date), float(jump.move),
                     f"close {jump.previous_close:g} -> {jump.close:g} ({jump.move:+.1%}) on {pd.Timestamp(jump.date).date()} "
                     f"is beyond the +-{jump.band:.0%} daily limit: a split or dividend in unadjusted prices? "
                     "Use adjusted prices (trendflow fetch stores raw prices + factors)"))
    report = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    report["date"] = pd.to_datetime(report["date"]).astype("datetime64[ns]")
    report["value"] = report["value"].astype(float)
    order = {"ended": 0, "freshness": 1, "close_only": 2, "jump": 3}
    report = report.sort_values(["symbol", "check", "date"], key=lambda c: c.map(order) if c.name == "check" else c,
                                kind="stable", ignore_index=True)
    log_warnings(report[report["severity"] == "WARNING"])
    return report


def log_warnings(warned: pd.DataFrame) -> None:
    """The terminal's view of the gate's warnings, bounded whatever the data: one line counting them by
    check, then the first `_LOGGED_PER_CHECK` of each check (so a jump is not hidden behind a hundred
    ended series), then how many more are in data_quality.csv."""
    if warned.empty:
        return
    counts = warned["check"].value_counts(sort=False)
    log.warning("data quality: %d warning(s) (%s); all in data_quality.csv", len(warned),
                ", ".join(f"{n} {check}" for check, n in counts.items()))
    shown = warned.groupby("check", sort=False).head(_LOGGED_PER_CHECK)
    for check in counts.index:
        for row in shown[shown["check"] == check].itertuples(index=False):
            log.warning("data quality: %s %s: %s", row.symbol, row.check, row.detail)
    if len(warned) > len(shown):
        log.warning("data quality: %d more warning(s) in data_quality.csv", len(warned) - len(shown))


def data_quality_notes(folder) -> list[str]:
    """One sentence for the report when the signal stage's data_quality.csv in `folder` holds warnings:
    how many ended series, stale symbols and jumps, with the first few named."""
    from pathlib import Path

    from schemas.data import DataQualitySchema
    from stages.common.artifacts import read_artifact

    path = Path(folder) / "data_quality.csv"
    if not path.exists():
        return []
    found = read_artifact(path, DataQualitySchema)
    warned = found[found["severity"] != "INFO"]
    if warned.empty:
        return []
    parts = []
    for check, words in (("ended", "ended series (held ones sold: data_ended)"), ("freshness", "stale symbol(s)"),
                         ("jump", "jump(s) beyond the daily limit band")):
        rows = warned[warned["check"] == check]
        if len(rows):
            named = ", ".join(f"{r.symbol} {r.date.date()}" for r in rows.head(3).itertuples())
            parts.append(f"{len(rows)} {words}, e.g. {named}")
    return [f"Data quality gate ({path.name}): " + "; ".join(parts) + "."]

