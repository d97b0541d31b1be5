"""External weights mode: a wide date x symbol file of target weights, made outside trendflow.

Validated before any trading; each failure names the file and what is wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.errors import DataError
from stages.trading.market import Market

_DATE_NAMES = ("date", "Date", "trade_date", "datetime")


def load_weights(path: str | Path, market: Market) -> dict[int, dict[int, float]]:
    """Read and check a weights file; return {day index: {symbol index: weight}} for the engine."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"weights file {path} does not exist")
    try:
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 -- any parser failure is a bad file for the user
        raise DataError(f"weights file {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.reset_index()
    date_col = next((c for c in raw.columns if str(c) in _DATE_NAMES), None)
    if date_col is None:
        raise DataError(f"weights file {path}: needs a date column (one of {', '.join(_DATE_NAMES)})")
    if raw.empty:
        raise DataError(f"weights file {path}: no rows")
    try:
        dates = pd.to_datetime(raw[date_col].astype(str), format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"weights file {path}: unreadable dates in column '{date_col}' ({exc})") from None
    frame = raw.drop(columns=[date_col])
    frame.columns = [str(c) for c in frame.columns]
    unknown = sorted(set(frame.columns) - set(market.symbols))
    if unknown:
        raise DataError(f"weights file {path}: symbols not in prices.parquet: {unknown[:10]}")
    if dates.duplicated().any():
        raise DataError(f"weights file {path}: duplicate dates {sorted({str(d.date()) for d in dates[dates.duplicated()]})[:5]}")
    rows = market.dates.get_indexer(dates)
    if (rows < 0).any():
        missing = [str(d.date()) for d in dates[rows < 0][:5]]
        raise DataError(f"weights file {path}: dates that are not trading days in prices.parquet: {missing}")
    try:
        values = frame.apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"weights file {path}: non-numeric weight ({exc})") from None
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"weights file {path}: weight is not a finite number at {dates.iloc[r].date()} / {frame.columns[c]}")
    out_of_range = (values < 0) | (values > 1)
    if out_of_range.any():
        r, c = np.argwhere(out_of_range)[0]
        raise DataError(f"weights file {path}: weight {values[r, c]} at {dates.iloc[r].date()} / {frame.columns[c]} "
                        "is outside [0, 1] (long only)")
    sums = values.sum(axis=1)
    if (sums > 1 + 1e-9).any():
        r = int(np.argmax(sums > 1 + 1e-9))
        raise DataError(f"weights file {path}: weights on {dates.iloc[r].date()} sum to {sums[r]:.6f} > 1")
    cols = [int(np.flatnonzero(market.symbols == s)[0]) for s in frame.columns]
    return {int(t): {cols[j]: float(values[i, j]) for j in range(len(cols)) if values[i, j] > 0}
            for i, t in enumerate(rows)}
