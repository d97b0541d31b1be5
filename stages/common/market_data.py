"""Market data loader shared by the stages.

Reads one folder of per-symbol CSV/Parquet files (file name = symbol, e.g. `159915.SZ.csv`) or
one long file with a symbol column; tolerates the common column spellings and YYYYMMDD dates;
checks every row (positive prices, high/low consistent with open/close, volume >= 0, unique
ascending dates) and either stops with the first bad rows named by file and line
(`bad_rows="error"`) or drops them with a warning (`"drop"`).

Suspension days (missing rows) stay missing: OHLC is never forward-filled into fake trades.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from schemas.prices import PricesSchema
from stages.common.artifacts import validate_frame
from stages.common.errors import DataError

log = logging.getLogger(__name__)

PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "date": ("date", "trade_date", "tradedate", "datetime", "time", "timestamp", "day", "trading_date"),
    "symbol": ("symbol", "ts_code", "ticker", "code", "sec_code", "instrument"),
    "open": ("open", "open_price", "o"),
    "high": ("high", "high_price", "h"),
    "low": ("low", "low_price", "l"),
    "close": ("close", "close_price", "c", "last"),
    "volume": ("volume", "vol", "v", "volume_shares"),
}
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
_SAFE_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-^=]{0,63}$")
_MAX_ROWS_LISTED = 5


def check_symbol_name(symbol: str, where: str = "symbol") -> str:
    """Reject symbol names that could escape the data folder or are not file-name safe."""
    if not isinstance(symbol, str) or not _SAFE_SYMBOL.match(symbol) or ".." in symbol:
        raise DataError(
            f"{where} {symbol!r} is not a valid symbol name (letters, digits and . _ - ^ = only; "
            "no path separators or '..')"
        )
    return symbol


# --------------------------------------------------------------------------- reading one file
def _read_raw(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if b"\x00" in head:
            raise DataError(f"{path}: not a text CSV file (binary content)")
        return pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a readable CSV file: {str(exc).strip()}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None


def _normalise_columns(raw: pd.DataFrame, path: Path, need_symbol: bool) -> pd.DataFrame:
    lookup = {str(c).strip().lower().replace(" ", "_"): c for c in raw.columns}
    renamed: dict[str, str] = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lookup:
                renamed[lookup[alias]] = canonical
                break
    needed = ["date", *PRICE_COLUMNS] + (["symbol"] if need_symbol else [])
    missing = [c for c in needed if c not in renamed.values()]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, raw.columns)) or 'none'})"
        )
    return raw.rename(columns=renamed)[needed]


def _parse_dates(values: pd.Series) -> pd.Series:
    """ISO dates, YYYYMMDD (as text or integers) or anything pandas can read; NaT where unreadable."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = None
        if not (pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values)):
            try:  # the usual layout, straight from the parser: no string copies
                parsed = pd.to_datetime(values, format="ISO8601")
            except (ValueError, TypeError):
                parsed = None
        if parsed is not None:
            text = None
        else:
            if pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
                values = values.astype("Int64").astype("string")
            text = values.astype("string").str.strip()
        for fmt in ("ISO8601", "%Y%m%d"):  # fast paths for the usual layouts
            if parsed is not None:
                break
            try:
                parsed = pd.to_datetime(text, format=fmt)
            except (ValueError, TypeError):
                continue
        if parsed is None:
            compact = text.str.fullmatch(r"\d{8}").fillna(False)
            parsed = pd.to_datetime(text.where(~compact), errors="coerce", format="mixed")
            parsed[compact] = pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed.astype("datetime64[ns]").dt.normalize()


@dataclass
class _RowProblems:
    mask: np.ndarray
    reasons: list[tuple[str, np.ndarray]]


def _row_problems(df: pd.DataFrame) -> _RowProblems:
    """Every row-level rule in one place; returns which rows break which rule."""
    o, h, l, c, v = (df[k].to_numpy() for k in PRICE_COLUMNS)
    rules = [
        ("unparseable date", df["date"].isna().to_numpy()),
        ("missing or non-numeric price", np.isnan(o) | np.isnan(h) | np.isnan(l) | np.isnan(c)),
        ("missing or non-numeric volume", np.isnan(v)),
        ("non-positive price", (o <= 0) | (h <= 0) | (l <= 0) | (c <= 0)),
        ("high below max(open, close)", h < np.maximum(o, c)),
        ("low above min(open, close)", l > np.minimum(o, c)),
        ("high below low", h < l),
        ("negative volume", v < 0),
    ]
    mask = np.zeros(len(df), dtype=bool)
    for _, bad in rules:
        mask |= bad
    return _RowProblems(mask, [(name, bad) for name, bad in rules if bad.any()])


def _clean_symbol_frame(df: pd.DataFrame, path: Path, policy: str) -> pd.DataFrame:
    """Apply the row rules and the date-order rules to one symbol's rows.

    The frame's index is each row's position in the file, so messages can name the line
    (row 0 of a CSV is on line 2: line 1 is the header).
    """
    is_csv = path.suffix.lower() == ".csv"

    def line(pos: int) -> str:
        row = int(df.index[pos])
        return f"{path.name} line {row + 2}" if is_csv else f"{path.name} row {row}"

    problems = _row_problems(df)
    if problems.reasons:
        details = []
        for name, bad in problems.reasons:
            positions = np.flatnonzero(bad)
            shown = ", ".join(line(int(p)) for p in positions[:_MAX_ROWS_LISTED])
            more = f" (+{len(positions) - _MAX_ROWS_LISTED} more)" if len(positions) > _MAX_ROWS_LISTED else ""
            details.append(f"{name}: {shown}{more}")
        message = f"{path}: {int(problems.mask.sum())} bad row(s): " + "; ".join(details)
        if policy == "error":
            raise DataError(message + " (set data.bad_rows=drop to drop them with a warning)")
        log.warning("%s -- dropped", message)
        df = df.loc[~problems.mask]

    dates = df["date"]
    duplicated = dates.duplicated(keep=False).to_numpy()
    if duplicated.any():
        positions = np.flatnonzero(duplicated)
        shown = ", ".join(
            f"{line(int(p))} ({dates.iloc[p].date()})" for p in positions[:_MAX_ROWS_LISTED]
        )
        if policy == "error":
            raise DataError(f"{path}: duplicate dates: {shown}")
        log.warning("%s: duplicate dates %s -- every copy dropped (which one is right is unknown)", path, shown)
        df = df.loc[~duplicated]
        dates = df["date"]
    if not dates.is_monotonic_increasing:
        steps = dates.diff().to_numpy()
        first = int(np.flatnonzero(steps < np.timedelta64(0, "ns"))[0])
        where = f"{line(first)} ({dates.iloc[first].date()} after {dates.iloc[first - 1].date()})"
        if policy == "error":
            raise DataError(f"{path}: dates are not in ascending order, first at {where}")
        log.warning("%s: dates not ascending (first at %s) -- sorted", path, where)
        df = df.sort_values("date", kind="stable")
    return df


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    columns = {"date": _parse_dates(df["date"]).to_numpy()}
    for col in PRICE_COLUMNS:
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values):  # text such as "1,234.5" or "n/a"
            values = pd.to_numeric(values.astype("string").str.strip().str.replace(",", "", regex=False), errors="coerce")
        columns[col] = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.DataFrame(columns, index=df.index)


def read_symbol_file(path: Path, symbol: str, policy: str = "error") -> pd.DataFrame:
    """One per-symbol file -> clean rows (date + OHLCV), in ascending date order."""
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{path}: file has a header but no rows")
    df = _typed(_normalise_columns(raw, path, need_symbol=False))
    df = _clean_symbol_frame(df, path, policy).reset_index(drop=True)
    df.insert(1, "symbol", symbol)
    return df


# --------------------------------------------------------------------------- fast path for clean folders
def _arrow_table(path: Path, symbol: str):
    """A well-formed per-symbol CSV as an Arrow table with the canonical columns, or None if the
    file needs the careful path (odd types, unusual layout, unreadable)."""
    import pyarrow as pa

    try:
        return _arrow_canonical(path, symbol) if path.suffix.lower() == ".csv" else None
    except (pa.ArrowException, OSError, UnicodeError, ValueError):
        return None


def _arrow_canonical(path: Path, symbol: str):
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    table = pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(use_threads=False))
    lookup = {name.strip().lower().replace(" ", "_"): name for name in table.column_names}
    picked = {}
    for canonical in ("date", *PRICE_COLUMNS):
        name = next((lookup[a] for a in COLUMN_ALIASES[canonical] if a in lookup), None)
        if name is None:
            return None
        column = table.column(name)
        kind = column.type
        if canonical == "date":
            if not (pa.types.is_date32(kind) or (pa.types.is_timestamp(kind) and kind.tz is None)):
                return None
            column = column.cast(pa.timestamp("ns"))
        elif not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            return None
        picked[canonical] = column if canonical == "date" else column.cast(pa.float64())
    if table.num_rows == 0:
        return None
    picked["symbol"] = pa.array([symbol] * table.num_rows, pa.string())
    return pa.table(picked)


def _fast_read(jobs: list[tuple[Path, str]]) -> tuple[list[pd.DataFrame], list[tuple[Path, str]]]:
    """Read clean CSVs with pyarrow on a few threads and check them all at once; any file with a
    problem (or an unusual layout) goes to the careful per-file path, which names file and line."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        tables = list(pool.map(lambda job: _arrow_table(*job), jobs))
    careful = [job for job, table in zip(jobs, tables) if table is None]
    good = [table for table in tables if table is not None]
    if not good:
        return [], careful
    panel = pa.concat_tables(good).to_pandas()
    panel = panel[["date", "symbol", *PRICE_COLUMNS]]
    bad = _row_problems(panel).mask
    same = panel["symbol"].eq(panel["symbol"].shift()).to_numpy()
    steps = panel["date"].diff().to_numpy()
    bad |= same & ~(steps > np.timedelta64(0, "ns"))
    bad |= (panel["date"] != panel["date"].dt.normalize()).to_numpy()
    if bad.any():
        flagged = set(panel.loc[bad, "symbol"])
        careful += [job for job in jobs if job[1] in flagged]
        panel = panel.loc[~panel["symbol"].isin(flagged).to_numpy()]
    return ([panel.reset_index(drop=True)] if len(panel) else []), careful


# --------------------------------------------------------------------------- folders and long files
@dataclass
class MarketData:
    """The validated long OHLCV panel plus where it came from."""

    prices: pd.DataFrame  # PricesSchema: sorted by (symbol, date)
    source: str
    skipped: list[str]

    @property
    def symbols(self) -> list[str]:
        return sorted(self.prices["symbol"].unique())


def _files_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            continue
        symbol = path.name[: -len(suffix)]
        if symbol in found:
            raise DataError(f"{folder}: symbol {symbol} has two files ({found[symbol].name}, {path.name})")
        found[symbol] = path
    return found


def _restrict_dates(df: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    if start is not None:
        df = df.loc[df["date"] >= pd.Timestamp(start)]
    if end is not None:
        df = df.loc[df["date"] <= pd.Timestamp(end)]
    return df


def load_market_data(
    source: str | Path,
    symbols: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    bad_rows: Literal["error", "drop"] = "error",
    min_history_days: int = 1,
) -> MarketData:
    """Load a folder of per-symbol files or one long file into a validated long panel."""
    source = Path(source)
    wanted = [check_symbol_name(s, "data.symbols entry") for s in symbols] if symbols else None
    if not source.exists():
        raise DataError(f"data source {source} does not exist")
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []

    if source.is_dir():
        files = _files_in(source)
        if not files:
            raise DataError(f"{source}: no .csv or .parquet price files found")
        names = wanted if wanted is not None else list(files)
        jobs = []
        for symbol in names:
            path = files.get(symbol)
            if path is None:
                log.warning("no price file for symbol %s in %s -- skipped", symbol, source)
                skipped.append(symbol)
                continue
            check_symbol_name(symbol, f"file {path.name}: symbol")
            jobs.append((path, symbol))
        clean, careful = _fast_read(jobs)
        frames.extend(clean)
        frames.extend(read_symbol_file(path, symbol, bad_rows) for path, symbol in careful)
    else:
        frames.extend(_read_long_file(source, wanted, bad_rows, skipped))

    frames = [f for f in frames if len(f)]
    everything = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["date", "symbol", *PRICE_COLUMNS])
    listed = pd.unique(everything["symbol"])
    everything = _restrict_dates(everything, start, end)
    counts = everything["symbol"].value_counts()
    too_short = [sym for sym in listed if counts.get(sym, 0) < max(min_history_days, 1)]
    for sym in too_short:
        log.warning("symbol %s has %d rows in the date range (< %d) -- skipped", sym, counts.get(sym, 0), min_history_days)
        skipped.append(str(sym))
    usable = [everything.loc[~everything["symbol"].isin(too_short)]] if len(too_short) < len(listed) else []
    if not usable or usable[0].empty:
        raise DataError(f"{source}: no usable symbol (none found, or all empty in the date range)")

    prices = pd.concat(usable, ignore_index=True).sort_values(["symbol", "date"], kind="stable", ignore_index=True)
    prices = validate_frame(prices[["date", "symbol", *PRICE_COLUMNS]], PricesSchema, str(source))
    log.info("Loaded %d symbols, %d rows, %s..%s from %s", prices["symbol"].nunique(), len(prices),
             prices["date"].min().date(), prices["date"].max().date(), source)
    return MarketData(prices=prices, source=str(source), skipped=skipped)


def _read_long_file(path: Path, wanted: list[str] | None, policy: str, skipped: list[str]) -> list[pd.DataFrame]:
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{path}: file has a header but no rows")
    named = _normalise_columns(raw, path, need_symbol=True)
    typed = _typed(named)
    typed.insert(1, "symbol", named["symbol"].astype("string").str.strip())
    frames = []
    present = set(typed["symbol"].dropna())
    for symbol in wanted or sorted(present):
        if symbol not in present:
            log.warning("no rows for symbol %s in %s -- skipped", symbol, path)
            skipped.append(symbol)
            continue
        check_symbol_name(symbol, f"{path}: symbol")
        rows = typed.loc[typed["symbol"] == symbol]
        cleaned = _clean_symbol_frame(rows.drop(columns="symbol"), path, policy)
        cleaned = cleaned.reset_index(drop=True)
        cleaned.insert(1, "symbol", symbol)
        frames.append(cleaned)
    return frames
