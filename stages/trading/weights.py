"""External weights mode: a wide date x symbol table of target weights made outside trendflow
(`--weights FILE`, Parquet or CSV; a `date` column, or a date index in Parquet, and one column per
symbol).

The weights on date d are decided at the close of d and traded like the signal mode's orders (next
open by default), with the same lots and costs; between dates the portfolio is held. Everything is
checked before any trading, each failure a DataError naming the file and what is wrong.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.errors import DataError
from stages.trading.market import Market

log = logging.getLogger(__name__)

WeightPlan = dict[int, np.ndarray]  # trading-day index -> target weight of every symbol of the market
_SUM_TOLERANCE = 1e-9


def load_weights_file(path: str | Path) -> pd.DataFrame:
    """Read a weights file as it is (checks come in `validate_weights`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"weights file {path} does not exist")
    if path.is_dir():
        raise DataError(f"weights file {path} is a folder, not a file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise DataError(f"weights file {path}: unsupported type '{suffix}' (use .parquet or .csv)")
    try:
        frame = pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 -- any parser failure means a bad file for the user
        raise DataError(f"weights file {path} cannot be read as {suffix[1:]}: {type(exc).__name__}: {exc}") from None
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.rename_axis("date").reset_index()
    elif "date" not in frame.columns and len(frame.columns) and _is_index_header(frame.columns[0]):
        frame = frame.rename(columns={frame.columns[0]: "date"})  # V4's to_csv: ',SPY,TLT' or 'Date,SPY,TLT'
    return frame


def _is_index_header(name: object) -> bool:
    """The first header of a frame written with its date index: unnamed ('Unnamed: 0') or Date/datetime."""
    text = str(name).strip().lower()
    return text.startswith("unnamed: 0") or text in ("date", "datetime", "index", "")


def is_long_signals_file(path: str | Path) -> bool:
    """True for trendflow's own long signals file (one row per date and symbol, with trend_signal),
    False for anything else (a wide weights file, or a file that is not there)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        elif path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8-sig") as fh:
                names = fh.readline().strip().split(",")
        else:
            return False
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return {"symbol", "trend_signal"} <= set(names)


def validate_weights(frame: pd.DataFrame, market: Market, source: str) -> WeightPlan:
    """Check a wide weights table against the market and turn it into the engine's plan.

    Checks, in order: a `date` column; at least one row and one symbol column; readable, unique
    dates that are trading days in prices.parquet; symbols that are in prices.parquet; numeric,
    finite values in [0, 1] (long only); each row summing to <= 1 (the rest is cash).
    """
    where = f"weights file {source}"
    if "date" not in frame.columns:
        raise DataError(f"{where}: needs a 'date' column (found {[str(c) for c in frame.columns][:8]})")
    if frame.empty:
        raise DataError(f"{where}: has no rows")
    symbols = [str(c) for c in frame.columns if c != "date"]
    if not symbols:
        raise DataError(f"{where}: has no symbol columns")
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame["date"].astype(str), format="ISO8601"))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: unreadable date in column 'date' ({exc}); use YYYY-MM-DD") from None
    if dates.has_duplicates:
        raise DataError(f"{where}: duplicate dates {sorted({str(d.date()) for d in dates[dates.duplicated()]})[:5]}")
    if (dates != dates.normalize()).any():
        raise DataError(f"{where}: dates must be days without a time of day, e.g. {dates[dates != dates.normalize()][0]}")
    rows = market.dates.get_indexer(dates)
    if (rows < 0).any():
        missing = [str(d.date()) for d in dates[rows < 0][:5]]
        raise DataError(f"{where}: dates that are not trading days in prices.parquet "
                        f"({market.dates[0].date()}..{market.dates[-1].date()}): {missing}")
    known = market.symbol_index()
    unknown = [s for s in symbols if s not in known]
    if unknown:
        raise DataError(f"{where}: symbols not in prices.parquet: {unknown[:10]}")
    values_frame = frame.drop(columns="date")
    numeric = values_frame.apply(pd.to_numeric, errors="coerce")
    bad_text = numeric.isna() & values_frame.notna()
    if bad_text.to_numpy().any():
        r, c = np.argwhere(bad_text.to_numpy())[0]
        raise DataError(f"{where}: weight {values_frame.iat[r, c]!r} at {dates[r].date()} / {symbols[c]} is not a number")
    values = numeric.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{where}: weight at {dates[r].date()} / {symbols[c]} is {values[r, c]}: every weight must be a "
                        "finite number (0 for no position)")
    outside = (values < 0) | (values > 1)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise DataError(f"{where}: weight {values[r, c]} at {dates[r].date()} / {symbols[c]} is outside [0, 1] (long only)")
    sums = values.sum(axis=1)
    over = sums > 1 + _SUM_TOLERANCE
    if over.any():
        r = int(np.argmax(over))
        raise DataError(f"{where}: weights on {dates[r].date()} sum to {sums[r]:.6f} > 1 (long only, no leverage)")
    cols = np.array([known[s] for s in symbols], dtype=np.int64)
    plan: WeightPlan = {}
    for r, t in enumerate(rows.tolist()):
        target = np.zeros(len(market.symbols))
        target[cols] = values[r]
        no_price = (target > 0) & ~market.tradable[t]
        if no_price.any():
            log.warning("%s: %s have a target weight on %s but no price that day: not traded then", where,
                        list(market.symbols[no_price][:5]), dates[r].date())
        plan[int(t)] = target
    return plan
