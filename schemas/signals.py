"""signals_output.parquet, its readable twin signals_output.csv (wide target weights), and the daily
signals_{D}.csv / scores_{D}.csv.

The core columns below are the contract the trading stage relies on. One row per (date, symbol)
that has a price row (suspension days are absent, exactly as in prices.parquet).
"""
from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class SignalsSchema(pa.DataFrameModel):
    """Trend signal, the indicators behind it, momentum score/rank and cluster per (date, symbol)."""

    date: Series[pd.Timestamp]
    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    close: Series[float] = pa.Field(gt=0)
    trend_signal: Series[int] = pa.Field(isin=[-1, 0, 1], description="1 buy / -1 sell / 0 hold, at the close of `date`")
    signal_strength: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    macd: Series[float] = pa.Field(nullable=True)
    macd_signal: Series[float] = pa.Field(nullable=True)
    macd_hist: Series[float] = pa.Field(nullable=True)
    kama: Series[float] = pa.Field(nullable=True)
    kama_slope: Series[float] = pa.Field(nullable=True)
    adx: Series[float] = pa.Field(nullable=True)
    volume_ratio: Series[float] = pa.Field(nullable=True, description="volume / its rolling average")
    atr: Series[float] = pa.Field(nullable=True, ge=0, description="Wilder ATR in price units")
    volatility: Series[float] = pa.Field(nullable=True, ge=0, description="annualised volatility of daily returns (EWMA or std per config)")
    momentum_score: Series[float] = pa.Field(nullable=True)
    rank: Series[float] = pa.Field(nullable=True, ge=1, description="1 = best among eligible symbols that day; NaN when not eligible")
    cluster: Series[int] = pa.Field(ge=-1, description="correlation cluster id; -1 before the first clustering")
    eligible: Series[bool] = pa.Field(description="enough history for a momentum score")

    @pa.dataframe_check(error="(date, symbol) unique and sorted by date then symbol")
    def sorted_unique(cls, df: pd.DataFrame) -> Series[bool]:
        same_date = df["date"].eq(df["date"].shift())
        later_date = df["date"].gt(df["date"].shift())
        later_symbol = df["symbol"].gt(df["symbol"].shift())
        ok = later_date | (same_date & later_symbol)
        ok.iloc[:1] = True
        return ok

    class Config:
        coerce = True
        strict = "filter"


class SignalWeightsSchema(pa.DataFrameModel):
    """signals_output.csv, wide in the V4 weights format: `date`, then one column per symbol with the
    target weight (fraction of equity, in [0, 1]) the trading rules give an empty portfolio on each
    rebalance day; a row sums to at most 1 (the rest is cash). Tradable as `trade --weights`.

    The symbol columns are checked over the whole block at once (see AllocationHistorySchema)."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)

    @pa.dataframe_check(error="symbol columns hold weights in [0, 1]")
    def weights_in_range(cls, df: pd.DataFrame) -> Series[bool]:
        block = df.drop(columns="date")
        if not all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in block.dtypes):
            return pd.Series(False, index=df.index)
        values = block.to_numpy(dtype=float)
        return pd.Series(((values >= 0) & (values <= 1)).all(axis=1), index=df.index)

    @pa.dataframe_check(error="a row's weights sum to at most 1")
    def at_most_fully_invested(cls, df: pd.DataFrame) -> Series[bool]:
        block = df.drop(columns="date")
        if not all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
            return pd.Series(False, index=df.index)
        return pd.Series(block.to_numpy(dtype=float).sum(axis=1) <= 1 + 1e-9, index=df.index)

    class Config:
        coerce = True


class DailySignalsSchema(pa.DataFrameModel):
    """signals_{D}.csv: every symbol on date D -- 1 buy, -1 sell, 0 hold."""

    date: Series[pd.Timestamp]
    symbol: Series[str] = pa.Field(unique=True)
    signal: Series[int] = pa.Field(isin=[-1, 0, 1])
    signal_strength: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    close: Series[float] = pa.Field(gt=0)

    class Config:
        coerce = True
        strict = True


class DailyScoresSchema(pa.DataFrameModel):
    """scores_{D}.csv: momentum score, rank and cluster for every symbol on date D."""

    date: Series[pd.Timestamp]
    symbol: Series[str] = pa.Field(unique=True)
    momentum_score: Series[float] = pa.Field(nullable=True)
    rank: Series[float] = pa.Field(nullable=True, ge=1)
    cluster: Series[int] = pa.Field(ge=-1)

    class Config:
        coerce = True
        strict = True
