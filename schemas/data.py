"""data_quality.csv: what the quality gate found before the signal stage used the prices."""
from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

QUALITY_CHECKS = ["freshness", "ended", "close_only", "jump"]
QUALITY_SEVERITIES = ["INFO", "WARNING", "ERROR"]


class DataQualitySchema(pa.DataFrameModel):
    """One row per finding; every symbol has a freshness (or ended) row.

    - freshness: `date` = the symbol's last row, `value` = exchange sessions from it to the reference
      date (the as-of date of a daily run, else the panel's last date); WARNING when stale on an as-of date;
    - ended: `value` sessions behind, at least `risk.data_ended_sessions` (holdings are sold: data_ended);
    - close_only: open = high = low = close on every row (ATR from close-to-close moves, no ADX);
    - jump: `date` of a close-to-close move beyond the board's limit band, `value` = the move (fraction).
    """

    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    check: Series[str] = pa.Field(isin=QUALITY_CHECKS)
    severity: Series[str] = pa.Field(isin=QUALITY_SEVERITIES)
    date: Series[pd.Timestamp] = pa.Field(description="the day the finding is about")
    value: Series[float] = pa.Field(description="sessions behind (freshness, ended) or the move (jump)")
    detail: Series[str] = pa.Field(description="the finding in words")

    class Config:
        coerce = True
        strict = True
        ordered = True
