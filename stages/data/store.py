"""The local price store: raw (as traded) daily bars and the corporate-action events behind the
adjustment factors, in one Parquet dataset -- never a vendor's forward-adjusted series, which changes
every time a dividend is paid.

Layout of a store folder:
- `bars.parquet`: symbol, date, open, high, low, close, volume (as traded), factor (the cumulative
  back-adjustment factor, 1.0 on the symbol's first row), source;
- `events.parquet`: symbol, date (ex-date), dividend (cash per share), split (new shares per old share).
Both files are rewritten atomically (temp file + rename) after each symbol's update.

Adjusted prices are made on read (`adjusted_panel`): back-adjusted = raw x factor (history fixed,
today's level drifts); forward-adjusted = raw x factor / last factor (today's level = as traded).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.errors import DataError

BAR_COLUMNS = ["symbol", "date", "open", "high", "low", "close", "volume", "factor", "source"]
EVENT_COLUMNS = ["symbol", "date", "dividend", "split"]
PRICE_FIELDS = ["open", "high", "low", "close"]


def adjustment_factors(dates: np.ndarray, close: np.ndarray, events: pd.DataFrame) -> np.ndarray:
    """Cumulative back-adjustment factor of one symbol's rows (dates ascending, raw closes).

    An event on ex-date d (or the first row after it, when d is not a trading day) with cash dividend D
    and split ratio s, the previous row's close being C, multiplies the factor from that row on by
    s x C / (C - D): the ex-date's theoretical price (C - D) / s then equals C in adjusted terms, so
    the adjusted series has no jump. Events on or before the first row change nothing (factor 1 there)."""
    factor = np.ones(len(dates))
    if not len(events) or len(dates) < 2:
        return factor
    step = np.ones(len(dates))
    at = np.searchsorted(dates, events["date"].to_numpy(dtype="datetime64[ns]"), side="left")
    for row, dividend, split in zip(at, events["dividend"].to_numpy(float), events["split"].to_numpy(float)):
        if row <= 0 or row >= len(dates):
            continue
        previous = close[row - 1]
        if not (previous - dividend > 0) or not split > 0:
            raise DataError(f"event on {pd.Timestamp(dates[row]).date()}: dividend {dividend} / split {split} "
                            f"cannot apply to the previous close {previous}")
        step[row] *= split * previous / (previous - dividend)
    return np.cumprod(step)


def merge_events(old: pd.DataFrame, new: pd.DataFrame, since: pd.Timestamp) -> pd.DataFrame:
    """A symbol's events after a fetch. The new ones win on their dates (a source may report only some
    kinds for some years -- akshare: every dividend, splits of the fetched years only -- so a new row
    without a split keeps an older split of that date); older events before `since` stay; older
    events from `since` on that the source no longer reports are dropped (revised)."""
    old = old[EVENT_COLUMNS[1:]].set_index("date")
    new = new[EVENT_COLUMNS[1:]].groupby("date").agg(dividend=("dividend", "sum"), split=("split", "prod"))
    both = new.join(old, how="outer", rsuffix="_old")
    in_new = both["dividend"].notna().to_numpy()
    early = (both.index < since)
    keep = in_new | early
    split = np.where(in_new & (both["split"].to_numpy() != 1.0), both["split"], both["split_old"].fillna(1.0))
    merged = pd.DataFrame({"date": both.index, "dividend": np.where(in_new, both["dividend"], both["dividend_old"]),
                           "split": np.where(in_new & ~early, both["split"].fillna(1.0), split)})
    return merged[keep].reset_index(drop=True)


class PriceStore:
    """A folder holding bars.parquet and events.parquet (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.bars = self._read("bars.parquet", BAR_COLUMNS)
        self.events = self._read("events.parquet", EVENT_COLUMNS)

    def _read(self, name: str, columns: list[str]) -> pd.DataFrame:
        path = self.folder / name
        if not path.exists():
            return _typed(pd.DataFrame(columns=columns))
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file of the price store: {exc}") from None
        if list(frame.columns) != columns:
            raise DataError(f"{path}: columns {list(frame.columns)}, expected {columns}")
        return _typed(frame)

    def last_date(self, symbol: str) -> pd.Timestamp | None:
        dates = self.bars.loc[self.bars["symbol"] == symbol, "date"]
        return dates.max() if len(dates) else None

    def symbols(self) -> list[str]:
        return sorted(self.bars["symbol"].unique())

    def update(self, symbol: str, bars: pd.DataFrame, events: pd.DataFrame, source: str, since: pd.Timestamp) -> int:
        """Replace `symbol`'s rows from `since` on with `bars` (raw OHLCV from a vendor), merge its events
        (those in the fetched span replace the stored ones there), recompute its factors and save both
        files. Returns the number of rows after the previously stored last date (new sessions)."""
        before = self.last_date(symbol)
        keep = self.bars[(self.bars["symbol"] != symbol) | (self.bars["date"] < since)]
        own_old = keep[keep["symbol"] == symbol]
        new = bars.assign(symbol=symbol, source=source, factor=1.0)
        rows = pd.concat([own_old, new], ignore_index=True).sort_values("date", kind="stable", ignore_index=True)
        if rows["date"].duplicated().any():
            raise DataError(f"{symbol}: the vendor returned duplicate dates")
        own_events = merge_events(self.events[self.events["symbol"] == symbol], events, since).assign(symbol=symbol)
        rows["factor"] = adjustment_factors(rows["date"].to_numpy(dtype="datetime64[ns]"), rows["close"].to_numpy(float), own_events)
        self.bars = _typed(pd.concat([keep[keep["symbol"] != symbol], rows], ignore_index=True)
                           .sort_values(["symbol", "date"], kind="stable", ignore_index=True)[BAR_COLUMNS])
        self.events = _typed(pd.concat([self.events[self.events["symbol"] != symbol], own_events], ignore_index=True)
                             .sort_values(["symbol", "date"], kind="stable", ignore_index=True)[EVENT_COLUMNS])
        self._save()
        return int((rows["date"] > before).sum()) if before is not None else len(rows)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, frame in (("bars.parquet", self.bars), ("events.parquet", self.events)):
            handle, temp = tempfile.mkstemp(prefix=f".{name}.", dir=self.folder)
            os.close(handle)
            try:
                frame.to_parquet(temp, index=False)
                os.replace(temp, self.folder / name)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise

    def adjusted_panel(self, symbols: list[str] | None, adjust: str) -> pd.DataFrame:
        """Long OHLCV panel (date, symbol, open, high, low, close, volume) adjusted from the raw bars:
        `adjust` = "back" (raw x factor) or "forward" (raw x factor / the symbol's last factor). Volume is
        scaled inversely, so price x volume stays the traded value."""
        bars = self.bars if symbols is None else self.bars[self.bars["symbol"].isin(symbols)]
        missing = sorted(set(symbols or []) - set(bars["symbol"]))
        if missing:
            raise DataError(f"{self.folder}: no stored prices for {', '.join(missing)} (run trendflow fetch for them)")
        if bars.empty:
            raise DataError(f"{self.folder}: the price store is empty (run trendflow fetch first)")
        scale = bars["factor"].to_numpy(float)
        if adjust == "forward":
            scale = scale / bars.groupby("symbol", sort=False)["factor"].transform("last").to_numpy(float)
        elif adjust != "back":
            raise DataError(f"data.adjust must be 'forward' or 'back', got {adjust!r}")
        panel = pd.DataFrame({"date": bars["date"].to_numpy(), "symbol": bars["symbol"].to_numpy()})
        for name in PRICE_FIELDS:
            panel[name] = bars[name].to_numpy(float) * scale
        panel["volume"] = bars["volume"].to_numpy(float) / scale
        return panel.reset_index(drop=True)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    types = {"symbol": "str", "date": "datetime64[ns]", "source": "str"}
    types.update({c: "float64" for c in frame.columns if c not in types})
    return frame.astype({c: t for c, t in types.items() if c in frame.columns})
