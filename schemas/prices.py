"""prices.parquet: the validated OHLCV panel the signal stage used (long format)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class PricesSchema(pa.DataFrameModel):
    """One row per (date, symbol) with a real trade; suspension days are absent, never filled.

    Invariants: prices > 0, high >= max(open, close), low <= min(open, close), volume >= 0,
    dates unique and ascending within each symbol.
    """

    date: Series[pd.Timestamp] = pa.Field(description="trading day (naive, midnight)")
    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    open: Series[float] = pa.Field(gt=0)
    high: Series[float] = pa.Field(gt=0)
    low: Series[float] = pa.Field(gt=0)
    close: Series[float] = pa.Field(gt=0)
    volume: Series[float] = pa.Field(ge=0)

    @pa.dataframe_check(error="high >= max(open, close)", ignore_na=False)
    def high_is_highest(cls, df: pd.DataFrame) -> Series[bool]:
        """The day's high bounds its open and close (a high below them is a data error)."""
        return pd.Series(df["high"].to_numpy() >= np.fmax(df["open"].to_numpy(), df["close"].to_numpy()), index=df.index)

    @pa.dataframe_check(error="low <= min(open, close)", ignore_na=False)
    def low_is_lowest(cls, df: pd.DataFrame) -> Series[bool]:
        """The day's low bounds its open and close from below."""
        return pd.Series(df["low"].to_numpy() <= np.fmin(df["open"].to_numpy(), df["close"].to_numpy()), index=df.index)

    @pa.dataframe_check(error="dates unique and ascending within each symbol", ignore_na=False)
    def dates_ascending(cls, df: pd.DataFrame) -> Series[bool]:
        """One row per (symbol, date), in date order: consecutive rows of a symbol step forward in time."""
        same_symbol = df["symbol"].eq(df["symbol"].shift()).to_numpy()
        days = df["date"].to_numpy()
        forward = np.ones(len(df), dtype=bool)
        forward[1:] = days[1:] > days[:-1]
        return pd.Series(~same_symbol | forward, index=df.index)

    class Config:
        coerce = True
        strict = True
        ordered = True


# The columns each table-level check of PricesSchema reads (a new check must be listed here).
_CHECK_COLUMNS = {"high_is_highest": {"high", "open", "close"}, "low_is_lowest": {"low", "open", "close"},
                  "dates_ascending": {"date", "symbol"}}


def prices_subset_schema(columns: list[str]) -> pa.DataFrameSchema:
    """PricesSchema's rules for some of its columns, for a stage that reads only those (the trading
    stage needs no high or low): their column checks, and the table checks whose columns are all read."""
    full = PricesSchema.to_schema()
    subset = full.select_columns([c for c in full.columns if c in set(columns)])
    subset.checks = [check for check in full.checks if _CHECK_COLUMNS[check.name] <= set(columns)]
    return subset
