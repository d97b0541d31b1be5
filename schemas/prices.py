"""prices.parquet: the validated OHLCV panel the signal stage used (long format)."""
from __future__ import annotations

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

    @pa.dataframe_check(error="high >= max(open, close)")
    def high_is_highest(cls, df: pd.DataFrame) -> Series[bool]:
        return df["high"] >= df[["open", "close"]].max(axis=1)

    @pa.dataframe_check(error="low <= min(open, close)")
    def low_is_lowest(cls, df: pd.DataFrame) -> Series[bool]:
        return df["low"] <= df[["open", "close"]].min(axis=1)

    @pa.dataframe_check(error="dates unique and ascending within each symbol")
    def dates_ascending(cls, df: pd.DataFrame) -> Series[bool]:
        same_symbol = df["symbol"].eq(df["symbol"].shift())
        steps = df["date"].diff()
        return ~same_symbol | (steps > pd.Timedelta(0))

    class Config:
        coerce = True
        strict = True
        ordered = True
