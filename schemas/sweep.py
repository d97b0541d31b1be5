"""sweep_results.parquet (+ csv) and walk_forward_results.parquet (+ csv)."""
from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SWEEP_METRICS = ["total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "annual_volatility",
                 "closed_trades", "annual_turnover", "total_costs"]


class SweepResultsSchema(pa.DataFrameModel):
    """One row per parameter combination: its parameters (one column per grid key, dotted config path),
    its key metrics, and whether it ran."""

    combo_id: Series[str] = pa.Field(unique=True)
    signal_hash: Series[str]
    status: Series[str] = pa.Field(isin=["ok", "failed"])
    error: Series[str] = pa.Field(nullable=True)
    total_return: Series[float] = pa.Field(nullable=True)
    cagr: Series[float] = pa.Field(nullable=True)
    sharpe: Series[float] = pa.Field(nullable=True)
    sortino: Series[float] = pa.Field(nullable=True)
    max_drawdown: Series[float] = pa.Field(nullable=True, le=0)
    calmar: Series[float] = pa.Field(nullable=True)
    annual_volatility: Series[float] = pa.Field(nullable=True)
    closed_trades: Series[float] = pa.Field(nullable=True)
    annual_turnover: Series[float] = pa.Field(nullable=True)
    total_costs: Series[float] = pa.Field(nullable=True)
    params: Series[str] = pa.Field(alias=r"^param:.+", regex=True, nullable=True, description="grid value, JSON-encoded")

    @pa.dataframe_check(error="failed combinations carry an error message")
    def failures_explained(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["status"] == "ok") | df["error"].notna()

    class Config:
        coerce = True
        strict = True


class WalkForwardSchema(pa.DataFrameModel):
    """One row per walk-forward window: the chosen combination, in-sample vs out-of-sample metrics."""

    window: Series[int] = pa.Field(ge=0, unique=True)
    train_start: Series[pd.Timestamp]
    train_end: Series[pd.Timestamp]
    test_start: Series[pd.Timestamp]
    test_end: Series[pd.Timestamp]
    combo_id: Series[str]
    metric: Series[str]
    in_sample: Series[float] = pa.Field(nullable=True)
    out_of_sample: Series[float] = pa.Field(nullable=True)
    in_sample_total_return: Series[float] = pa.Field(nullable=True)
    out_of_sample_total_return: Series[float] = pa.Field(nullable=True)

    @pa.dataframe_check(error="test span starts after its training span ends")
    def no_overlap(cls, df: pd.DataFrame) -> Series[bool]:
        return df["test_start"] > df["train_end"]

    class Config:
        coerce = True
        strict = True


class WalkForwardEquitySchema(pa.DataFrameModel):
    """The stitched out-of-sample equity curve (each test span starts where the previous one ended)."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    equity: Series[float] = pa.Field(gt=0)
    window: Series[int] = pa.Field(ge=0)

    class Config:
        coerce = True
        strict = True
