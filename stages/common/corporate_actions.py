"""Corporate actions for raw prices: `data.corporate_actions`, a CSV ex_date, symbol, cash_dividend,
split_ratio (per share held at the close before the ex-date).

Raw prices stay what fills and marks use; the signal stage computes its indicators on prices
adjusted from them here. The adjustment is anchored at each symbol's FIRST row: a factor that only
changes on an ex-date, by split_ratio x previous close / (previous close - dividend), so an ex-date
is no jump in the adjusted series, a later action never rewrites earlier values (no look-ahead, and
a daily run's saved signal state stays valid), and ATR converts back to raw units by dividing by
the day's factor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.errors import ConfigError, DataError

ACTION_COLUMNS = ("ex_date", "symbol", "cash_dividend", "split_ratio")
PRICE_COLUMNS = ("open", "high", "low", "close")


def read_keyed_csv(path: str | Path, key: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A user's CSV named by config `key` (symbol read as text), with at least `columns`: a missing
    file is a ConfigError naming the key, an unreadable one or a missing column a DataError naming
    the file. The caller checks the values."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype={"symbol": str})
    except FileNotFoundError:
        raise ConfigError(f"key '{key}': {path} does not exist") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    return raw


def read_corporate_actions(path: str | Path) -> pd.DataFrame:
    """The actions file, checked: ex_date an ISO date, cash_dividend >= 0 (empty = 0), split_ratio > 0
    (empty = 1). Errors name the file and the first bad lines."""
    path = Path(path)
    raw = read_keyed_csv(path, "data.corporate_actions", ACTION_COLUMNS)
    ex_date = pd.to_datetime(raw["ex_date"], errors="coerce", format="ISO8601")
    dividend = pd.to_numeric(raw["cash_dividend"].fillna(0.0), errors="coerce")
    ratio = pd.to_numeric(raw["split_ratio"].fillna(1.0), errors="coerce")
    bad = raw[ex_date.isna() | ~(dividend >= 0) | ~(ratio > 0) | raw["symbol"].isna()]
    if len(bad):
        raise DataError(f"{path}: bad rows (ex_date an ISO date, cash_dividend >= 0, split_ratio > 0), first lines "
                        f"{(bad.index[:3] + 2).tolist()}: {bad.head(3).to_dict('records')}")
    return pd.DataFrame({"ex_date": ex_date, "symbol": raw["symbol"].astype(str), "cash_dividend": dividend.astype(float),
                         "split_ratio": ratio.astype(float)})


def adjustment_factors(prices: pd.DataFrame, actions: pd.DataFrame) -> np.ndarray:
    """Per row of `prices` (long, sorted by symbol then date): the cumulative factor from the
    symbol's first row -- x split_ratio x C / (C - dividend) at each ex-date (C = the previous close;
    an ex-date without a row applies at the symbol's next row). 1 before the first action."""
    symbols = prices["symbol"].astype(str).to_numpy()
    dates = prices["date"].to_numpy()
    close = prices["close"].to_numpy(dtype=float)
    step = np.ones(len(prices))
    starts = {s: i for i, s in reversed(list(enumerate(symbols)))}
    ends = {s: i for i, s in enumerate(symbols)}
    for row in actions.itertuples(index=False):
        first, last = starts.get(row.symbol), ends.get(row.symbol)
        if first is None:
            continue
        at = first + int(np.searchsorted(dates[first:last + 1], np.datetime64(row.ex_date)))
        if at == first or at > last:  # before the symbol's history, or after it: nothing to adjust
            continue
        previous = close[at - 1]
        if row.cash_dividend >= previous:
            raise DataError(f"corporate action {row.symbol} {row.ex_date.date()}: cash dividend {row.cash_dividend} "
                            f"is not below the previous close {previous}")
        step[at] *= row.split_ratio * previous / (previous - row.cash_dividend)
    return pd.Series(step).groupby(symbols).cumprod().to_numpy()


def adjusted_prices(prices: pd.DataFrame, factor: np.ndarray) -> pd.DataFrame:
    """The panel on the adjusted scale: prices x factor, volume / factor (shares of the first day)."""
    out = prices.copy()
    for name in PRICE_COLUMNS:
        out[name] = prices[name].to_numpy(dtype=float) * factor
    out["volume"] = prices["volume"].to_numpy(dtype=float) / factor
    return out
