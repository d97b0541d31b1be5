"""sweep_results.parquet (+ csv), walk_forward_results.parquet / walk_forward_equity.parquet (+ csv) and
sweep_overfitting.json."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from pydantic import BaseModel, ConfigDict, Field

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


class SweepReturnsSchema(pa.DataFrameModel):
    """sweep_returns.parquet: each successful combination's daily returns over the whole history (the input of the
    deflated Sharpe ratio and PBO), one column per combo_id; no CSV twin (it is wide)."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)

    @pa.dataframe_check(error="every other column is a combo id holding daily returns >= -1 (checked as one block: "
                              "a regex field is validated column by column, slow for a large grid)")
    def combination_returns(cls, df: pd.DataFrame) -> bool:
        block = df.drop(columns="date")
        names_ok = block.columns.str.fullmatch(r"[0-9a-f]{12}").all()
        if not names_ok or not all(pd.api.types.is_float_dtype(t) for t in block.dtypes):
            return False
        values = block.to_numpy(dtype=float)
        return bool((np.isfinite(values) & (values >= -1)).all())

    class Config:
        coerce = True


class WalkForwardSchema(pa.DataFrameModel):
    """One row per walk-forward window: the chosen combination, in-sample vs out-of-sample metrics."""

    window: Series[int] = pa.Field(ge=0, unique=True)
    train_start: Series[pd.Timestamp]
    train_end: Series[pd.Timestamp]
    test_start: Series[pd.Timestamp]
    test_end: Series[pd.Timestamp]
    combo_id: Series[str]
    params: Series[str] = pa.Field(description="the chosen combination's grid values, JSON {key: value}")
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
    in_sample_best: Series[float] = pa.Field(gt=0, nullable=True, description=(
        "the combination that is best over the whole history (chosen with hindsight), same dates, same start"))
    buy_and_hold: Series[float] = pa.Field(gt=0, nullable=True, description=(
        "equal weight in every symbol with a close before the first test day, bought then and held"))

    class Config:
        coerce = True
        strict = True


class OverfittingSummary(BaseModel):
    """sweep_overfitting.json: how much of the selected combination's result is luck. Sharpe ratios are
    annualised here (per-session values x sqrt(periods_per_year)); null where undefined."""

    model_config = ConfigDict(extra="forbid")

    selection_metric: str
    selected_combo_id: str | None
    selected_params: dict[str, Any] = Field(description="grid key -> value of the selected combination")
    trials: int = Field(ge=0, description="successful combinations: the number of trials N")
    sessions: int = Field(ge=0, description="sessions in each combination's return series")
    sharpe: float | None = Field(description="selected combination's Sharpe ratio, annualised")
    sharpe_variance: float | None = Field(description="variance of the trials' Sharpe ratios (annualised units)")
    expected_max_sharpe: float | None = Field(description="expected best Sharpe of N trials without skill (annualised)")
    deflated_sharpe: float | None = Field(ge=0, le=1, description="P(true Sharpe > expected_max_sharpe): the DSR")
    pbo: float | None = Field(ge=0, le=1, description="probability of backtest overfitting (CSCV)")
    pbo_splits: int = Field(ge=2, description="blocks S the sessions are cut into")
    pbo_combinations: int | None = Field(description="C(S, S/2) train/test splits evaluated")
    verdict: str
    notes: list[str]
