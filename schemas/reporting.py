"""performance_summary.json (+ .csv): the reporting stage's numbers."""
from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series
from pydantic import BaseModel, ConfigDict


class PerformanceSummary(BaseModel):
    """Headline metrics (null where undefined), signal quality, and notes on missing inputs."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float | int | str | None]
    signal_quality: dict | None
    benchmark: str | None
    notes: list[str]


class PerformanceSummaryCsvSchema(pa.DataFrameModel):
    """performance_summary.csv: one row per metric."""

    metric: Series[str] = pa.Field(unique=True)
    value: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True
        strict = True
        ordered = True
