"""Market data loader shared by the stages.

Reads one folder of per-symbol CSV/Parquet files (file name = symbol, e.g. `159915.SZ.csv`) or
one long file with a symbol column; tolerates the common column spellings and YYYYMMDD dates;
checks every row (positive prices, high/low consistent with open/close, volume >= 0, unique
ascending dates) and either stops with the first bad rows named by file and line
(`bad_rows="error"`) or drops them with a warning (`"drop"`).

Suspension days (missing rows) stay missing: OHLC is never forward-filled into fake trades.

Two paths, one set of rules. The fast path parses every well-formed CSV of a folder with pyarrow
in one go (files sharing a header are concatenated and parsed together), checks the whole panel
once with vectorised rules, and never builds per-file pandas frames. Any file it cannot take as
is -- odd layout, unparseable value, or a row breaking a rule -- is re-read by the careful path
(pandas, one file at a time), which applies the same rules and names file and line in its
messages. The final panel is validated once by the pandera PricesSchema.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterable, Literal, Mapping

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
_SAFE_SYMBOL = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._\-^=]{0,63}$")
_MAX_ROWS_LISTED = 5
_NS_PER_DAY = 86_400 * 10**9


def check_symbol_name(symbol: str, where: str = "symbol") -> str:
    """Reject symbol names that could escape the data folder or are not file-name safe."""
    if not isinstance(symbol, str) or not _SAFE_SYMBOL.match(symbol) or ".." in symbol:
        raise DataError(
            f"{where} {symbol!r} is not a valid symbol name (letters, digits and . _ - ^ = only; "
            "no path separators or '..')"
        )
    return symbol


def _pick_columns(names: Iterable[str], need_symbol: bool) -> tuple[dict[str, str], list[str]]:
    """Map canonical column names to the file's spelling (case, spaces, aliases); also what is missing."""
    lookup: dict[str, str] = {}
    for name in names:
        lookup.setdefault(str(name).strip().lower().replace(" ", "_"), name)
    needed = ["date", *(["symbol"] if need_symbol else []), *PRICE_COLUMNS]
    picked = {}
    for canonical in needed:
        actual = next((lookup[a] for a in COLUMN_ALIASES[canonical] if a in lookup), None)
        if actual is not None:
            picked[canonical] = actual
    return picked, [c for c in needed if c not in picked]


# --------------------------------------------------------------------------- the row rules
def _row_problems(columns: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Every row-level rule in one place: (rule, rows breaking it) for each rule some row breaks.

    `columns` holds numpy arrays: date as datetime64, OHLCV as float64 (NaN = missing).
    """
    o, h, l, c, v = (columns[k] for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        rules = [
            ("unparseable date", np.isnat(columns["date"])),
            ("missing or non-numeric price", np.isnan(o) | np.isnan(h) | np.isnan(l) | np.isnan(c)),
            ("missing or non-numeric volume", np.isnan(v)),
            ("non-positive price", (o <= 0) | (h <= 0) | (l <= 0) | (c <= 0)),
            ("high below max(open, close)", h < np.maximum(o, c)),
            ("low above min(open, close)", l > np.minimum(o, c)),
            ("high below low", h < l),
            ("negative volume", v < 0),
        ]
    return [(name, bad) for name, bad in rules if bad.any()]


def _out_of_order(codes: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Rows whose date does not strictly follow the previous row of the same symbol (duplicate or
    descending date); rows are grouped by symbol code, each group in file order."""
    bad = np.zeros(len(codes), dtype=bool)
    if len(codes) > 1:
        bad[1:] = (codes[1:] == codes[:-1]) & ~(dates[1:] > dates[:-1])
    return bad


# --------------------------------------------------------------------------- careful path: one file, pandas
def _read_raw(path: Path) -> pd.DataFrame:
    """A file as pandas reads it; the index is each data row's position in the file (blank lines
    count), so a CSV row at index i is on line i + 2."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if b"\x00" in head:
            raise DataError(f"{path}: not a text CSV file (binary content)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            raw = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, skip_blank_lines=False, index_col=False)
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            _check_extra_fields(path)  # pandas dropped fields beyond the header's: only empty ones may go
        return raw.dropna(how="all")  # blank lines (they keep their place in the numbering)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: {_first_non_utf8(path)}; save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a readable CSV file: {str(exc).strip()}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None


def _first_non_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: 'not UTF-8 text at line 3 (byte 0xb9)'."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
        return "not UTF-8 text"
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(_BOM) else 0)
        line = data.count(b"\n", 0, start) + 1
        return f"not UTF-8 text at line {line} (byte 0x{data[start]:02x})"


def _check_extra_fields(path: Path) -> None:
    """Rows longer than the header are an error unless the extra fields are empty (a trailing comma)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        width = len(next(rows, []))
        for number, row in enumerate(rows, start=2):
            if len(row) > width and any(field.strip() for field in row[width:]):
                raise DataError(f"{path}: line {number} has {len(row)} fields but the header has {width}")


def _normalise_columns(raw: pd.DataFrame, path: Path, need_symbol: bool) -> pd.DataFrame:
    picked, missing = _pick_columns(raw.columns, need_symbol)
    close_only = "close" in picked and {"open", "high", "low"} <= set(missing)
    if close_only:  # many free sources: open = high = low = close (ATR from close-to-close moves), volume 0 if absent
        missing = [c for c in missing if c not in ("open", "high", "low", "volume")]
    if missing:
        hint = (" (a single file must be a long file with a symbol column; for per-symbol files give their folder)"
                if need_symbol and missing == ["symbol"] else "")
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, raw.columns)) or 'none'}){hint}"
        )
    frame = raw.rename(columns={actual: canonical for canonical, actual in picked.items()})[list(picked)]
    if close_only:
        frame = frame.assign(open=frame["close"], high=frame["close"], low=frame["close"],
                             volume=frame["volume"] if "volume" in picked else 0.0)
    return frame


def _parse_dates(values: pd.Series) -> pd.Series:
    """ISO dates, YYYYMMDD (as text or integers) or anything pandas can read; NaT where unreadable."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        parsed = None
        numeric = pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values)
        if not numeric:
            try:  # the usual layout, straight from the parser: no string copies
                parsed = pd.to_datetime(values, format="ISO8601")
            except (ValueError, TypeError):
                parsed = None
        if parsed is None:
            if numeric:
                values = values.astype("Int64").astype("string")
            # a time-zoned stamp keeps its own calendar day: the offset is dropped, not converted (mixed
            # offsets, e.g. +08:00 and -05:00 rows, would otherwise be shifted to UTC, a day early)
            text = values.astype("string").str.strip().str.replace(r"(?<=\d)(?:Z|[+-]\d{2}:?\d{2})$", "", regex=True)
            for fmt in ("ISO8601", "%Y%m%d"):
                try:
                    parsed = pd.to_datetime(text, format=fmt)
                    break
                except (ValueError, TypeError):
                    continue
        if parsed is None:
            compact = text.str.fullmatch(r"\d{8}").fillna(False)
            parsed = pd.to_datetime(text.where(~compact), errors="coerce", format="mixed")
            parsed[compact] = pd.to_datetime(text[compact], format="%Y%m%d", errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed.astype("datetime64[ns]").dt.normalize()


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    columns = {"date": _parse_dates(df["date"]).to_numpy()}
    for col in PRICE_COLUMNS:
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values):  # text such as "1,234.5" or "n/a"
            values = pd.to_numeric(values.astype("string").str.strip().str.replace(",", "", regex=False), errors="coerce")
        columns[col] = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.DataFrame(columns, index=df.index)


def _lines(path: Path, rows: Iterable[int], total: int | None = None) -> str:
    """'line 7' / 'lines 2, 3, 9 (+4 more)' for file positions (a CSV's row 0 is on line 2, after
    the header); Parquet rows are named by position."""
    rows = [int(r) for r in rows]
    csv_file = path.suffix.lower() == ".csv"
    shown = ", ".join(str(r + 2 if csv_file else r) for r in rows[:_MAX_ROWS_LISTED])
    more = (total if total is not None else len(rows)) - min(len(rows), _MAX_ROWS_LISTED)
    word = "line" if csv_file else "row"
    return f"{word}{'s' if len(rows) > 1 else ''} {shown}" + (f" (+{more} more)" if more > 0 else "")


def _culprit(rule: str, bad: np.ndarray, df: pd.DataFrame, raw: pd.DataFrame | None) -> str:
    """The first bad row's offending text, for the rules where the value is lost in parsing:
    " ('2020-13-45')" for a date, " (open='abc')" for a price or volume."""
    if raw is None or not bad.any():
        return ""
    idx = df.index[int(np.flatnonzero(bad)[0])]
    if idx not in raw.index:
        return ""
    if rule == "unparseable date":
        return f" ({str(raw.at[idx, 'date'])!r})"
    columns = ("volume",) if rule == "missing or non-numeric volume" else ("open", "high", "low", "close")
    if rule not in ("missing or non-numeric price", "missing or non-numeric volume"):
        return ""
    for column in columns:
        if column in raw.columns and np.isnan(df.at[idx, column]):
            value = raw.at[idx, column]
            return f" ({column} missing)" if pd.isna(value) else f" ({column}={str(value)!r})"
    return ""


def _clean_symbol_frame(df: pd.DataFrame, path: Path, policy: str, symbol: str | None = None,
                        raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Apply the row rules and the date-order rules to one symbol's rows.

    The frame's index is each row's position in the file, so messages name the line. `symbol` is
    named in messages about a long file (one symbol among many); `raw` (the same rows as read, before
    parsing) lets them quote the offending text.
    """
    where_from = f"{path} (symbol {symbol})" if symbol else str(path)
    problems = _row_problems({k: df[k].to_numpy() for k in ("date", *PRICE_COLUMNS)})
    if problems:
        bad_rows = np.logical_or.reduce([bad for _, bad in problems])
        details = [f"{name} at {_lines(path, df.index[bad][:_MAX_ROWS_LISTED], int(bad.sum()))}{_culprit(name, bad, df, raw)}"
                   for name, bad in problems]
        message = f"{where_from}: {int(bad_rows.sum())} bad row(s): " + "; ".join(details)
        if policy == "error":
            raise DataError(message + " (set data.bad_rows=drop to drop them with a warning)")
        log.warning("%s -- dropped", message)
        df = df.loc[~bad_rows]

    dates = df["date"]
    duplicated = dates.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first_days = dates[duplicated].dt.date.unique()[:_MAX_ROWS_LISTED]
        shown = f"{_lines(path, df.index[duplicated][:_MAX_ROWS_LISTED], int(duplicated.sum()))} " \
                f"({', '.join(str(d) for d in first_days)})"
        if policy == "error":
            raise DataError(f"{where_from}: duplicate dates at {shown} (set data.bad_rows=drop to drop every copy)")
        log.warning("%s: duplicate dates at %s -- every copy dropped (which one is right is unknown)", where_from, shown)
        df = df.loc[~duplicated]
        dates = df["date"]
    if not dates.is_monotonic_increasing:
        steps = dates.diff().to_numpy()
        first = int(np.flatnonzero(steps < np.timedelta64(0, "ns"))[0])
        where = f"{_lines(path, [df.index[first]])} ({dates.iloc[first].date()} after {dates.iloc[first - 1].date()})"
        if policy == "error":
            raise DataError(f"{where_from}: dates are not in ascending order, first at {where} "
                            "(set data.bad_rows=drop to sort them)")
        log.warning("%s: dates not ascending (first at %s) -- sorted", where_from, where)
        df = df.sort_values("date", kind="stable")
    return df


def read_symbol_file(path: Path, symbol: str, policy: str = "error") -> pd.DataFrame:
    """One per-symbol file -> clean rows (date, symbol, OHLCV) in ascending date order (careful path)."""
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{path}: file has a header but no rows")
    named = _normalise_columns(raw, path, need_symbol=False)
    df = _clean_symbol_frame(_typed(named), path, policy, raw=named).reset_index(drop=True)
    df.insert(1, "symbol", symbol)
    return df


# --------------------------------------------------------------------------- fast path: a whole folder, pyarrow
_BOM = b"\xef\xbb\xbf"


def _workers() -> int:
    return max(2, min(4, os.cpu_count() or 1))


def _canonical_table(table):
    """The canonical columns (date as timestamp[ns], OHLCV as float64) of a table pyarrow read with
    inferred types, or None when the file needs the careful path (missing column, text values,
    time-zoned or integer dates, no rows)."""
    import pyarrow as pa

    picked, missing = _pick_columns(table.column_names, need_symbol=False)
    if missing or table.num_rows == 0:
        return None
    columns = {}
    day = table.column(picked["date"])
    kind = day.type
    if not (pa.types.is_date(kind) or (pa.types.is_timestamp(kind) and kind.tz is None)):
        return None
    columns["date"] = day.cast(pa.timestamp("ns"))
    for name in PRICE_COLUMNS:
        column = table.column(picked[name])
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            return None
        columns[name] = column.cast(pa.float64())
    return pa.table(columns)


def _split_csv(data: bytes) -> tuple[bytes, list, int] | None:
    """(header, body pieces, rows) of a CSV whose rows can be concatenated with other files' rows,
    or None (no rows, or quotes, which may hide a line break: the per-file parse copes). The pieces
    are views into `data` (no copies). Rows = line breaks + 1: blank lines count too, as the group
    parse keeps them (as empty rows that fail the checks and send the file to the careful path)."""
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    newline = data.find(b"\n", 0, end)
    if newline < 0 or data.find(b'"', 0, end) >= 0:
        return None
    header = data[:newline].removeprefix(_BOM).rstrip(b"\r")
    return header, [memoryview(data)[newline + 1:end], b"\n"], data.count(b"\n", newline + 1, end) + 1


def _parse_group(header: bytes, bodies: list):
    """Parse the bodies of many CSVs that share `header` as one CSV, with fixed column types.
    None when any value does not parse (the files are then parsed one by one)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        names = header.decode("utf-8").split(",")
    except UnicodeDecodeError:
        return None
    picked, missing = _pick_columns(names, need_symbol=False)
    if missing or len(set(names)) != len(names):
        return None
    order = ["date", *PRICE_COLUMNS]
    convert = pa_csv.ConvertOptions(
        include_columns=[picked[c] for c in order],
        column_types={picked["date"]: pa.timestamp("ns"), **{picked[c]: pa.float64() for c in PRICE_COLUMNS}},
        timestamp_parsers=[pa_csv.ISO8601, "%Y%m%d"],
    )
    buffer = b"".join([header, b"\n", *(piece for body in bodies for piece in body)])
    try:
        table = pa_csv.read_csv(
            io.BytesIO(buffer),
            read_options=pa_csv.ReadOptions(use_threads=True, block_size=1 << 22),
            parse_options=pa_csv.ParseOptions(ignore_empty_lines=False),
            convert_options=convert,
        )
    except (pa.ArrowException, ValueError):
        return None
    return table.rename_columns(order)


def _parse_one(path: Path, data: bytes | None):
    """One file read by pyarrow with inferred types -> canonical table, or None (careful path)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() != ".csv":
            return _canonical_table(pq.read_table(path))
        if data is None or b"\x00" in data[:4096]:
            return None
        return _canonical_table(pa_csv.read_csv(io.BytesIO(data), read_options=pa_csv.ReadOptions(use_threads=False)))
    except (pa.ArrowException, OSError, UnicodeError, ValueError):
        return None


def _read_bytes(path: Path) -> bytes | None:
    if path.suffix.lower() != ".csv":
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None  # the careful path reports it


def _columns_of(tables: list, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Dates (datetime64[ns]) and a (5, rows) float64 OHLCV block from canonical Arrow tables,
    each value copied once."""
    dates = np.empty(rows, dtype="datetime64[ns]")
    values = np.empty((len(PRICE_COLUMNS), rows), dtype=np.float64)
    start = 0
    for table in tables:
        stop = start + table.num_rows
        for column, target in (("date", dates), *zip(PRICE_COLUMNS, values)):
            at = start
            for chunk in table.column(column).chunks:
                target[at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                at += len(chunk)
        start = stop
    return dates, values


def _fast_read(jobs: list[tuple[Path, str]]) -> tuple[pd.DataFrame | None, list[tuple[Path, str]]]:
    """Read and check every file it can in bulk; return the clean panel (sorted by symbol, date,
    given `jobs` sorted by symbol) and the jobs left for the careful path, which names file and line.

    CSVs sharing a header are concatenated and parsed once with fixed types; files that do not fit
    (quotes, odd layout, a value that does not parse) are parsed one by one with inferred types.
    Then every rule is checked over the whole panel at once; a file with any problem is handed over
    entirely to the careful path.
    """
    import pyarrow as pa

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        contents = list(pool.map(lambda job: _read_bytes(job[0]), jobs))

    groups: dict[bytes, list[tuple[int, list, int]]] = {}
    one_by_one: list[int] = []
    for code, data in enumerate(contents):
        split = _split_csv(data) if data is not None else None
        if split is None:
            one_by_one.append(code)
        else:
            header, body, rows = split
            groups.setdefault(header, []).append((code, body, rows))

    pieces: list[tuple[object, np.ndarray]] = []
    for header, members in groups.items():
        table = _parse_group(header, [body for _, body, _ in members])
        counts = np.array([rows for _, _, rows in members])
        if table is None or table.num_rows != counts.sum():  # e.g. lone CR line ends: parse one by one
            one_by_one.extend(code for code, _, _ in members)
            continue
        pieces.append((table, np.repeat(np.array([code for code, _, _ in members], dtype=np.int64), counts)))

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        singles = list(pool.map(lambda code: _parse_one(jobs[code][0], contents[code]), one_by_one))
    careful = {code for code, table in zip(one_by_one, singles) if table is None}
    pieces += [(table, np.full(table.num_rows, code, dtype=np.int64))
               for code, table in zip(one_by_one, singles) if table is not None]
    contents.clear()  # the raw bytes are not needed any more
    groups.clear()
    if not pieces:
        return None, [jobs[code] for code in sorted(careful)]

    codes = np.concatenate([c for _, c in pieces])
    dates, values = _columns_of([table for table, _ in pieces], len(codes))
    if len(codes) > 1 and (codes[1:] < codes[:-1]).any():  # groups interleave: order rows by symbol
        order = np.argsort(codes, kind="stable")
        codes, dates, values = codes[order], dates[order], values[:, order]

    columns = {"date": dates, **dict(zip(PRICE_COLUMNS, values))}
    bad = np.logical_or.reduce([rows for _, rows in _row_problems(columns)] + [_out_of_order(codes, dates)])
    bad |= (dates.view(np.int64) % _NS_PER_DAY != 0) & ~np.isnat(dates)  # intraday time stamps
    if bad.any():
        flagged = np.zeros(len(jobs), dtype=bool)
        flagged[np.unique(codes[bad])] = True
        careful.update(np.flatnonzero(flagged).tolist())
        keep = ~flagged[codes]
        codes, dates, values = codes[keep], dates[keep], values[:, keep]
    careful_jobs = [jobs[code] for code in sorted(careful)]
    if not len(codes):
        return None, careful_jobs
    # values is (5, rows) C-ordered: exactly pandas' float block, so the frame shares it (no copy)
    frame = pd.DataFrame(values.T, columns=PRICE_COLUMNS, copy=False)
    frame.insert(0, "date", dates)
    symbols = pa.array([symbol for _, symbol in jobs], pa.string())
    frame.insert(1, "symbol", symbols.take(pa.array(codes)).to_pandas())
    return frame, careful_jobs


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
    inside = folder.resolve()
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise DataError(f"{path} is a symbolic link to a file outside the data folder {folder}: refused, not read "
                            "(copy the file into the folder, or point --data at where it lives)")
        if not path.is_file():
            log.warning("%s is not a file (a folder or a broken link?) -- skipped", path)
            continue
        symbol = path.name[: -len(suffix)]
        if symbol in found:
            raise DataError(f"{folder}: symbol {symbol} has two files ({found[symbol].name}, {path.name})")
        found[symbol] = path
    return found


def _read_folder(folder: Path, wanted: list[str] | None, policy: str, skipped: list[str]) -> list[pd.DataFrame]:
    files = _files_in(folder)
    if not files:
        raise DataError(f"{folder}: no .csv or .parquet price files found")
    if {"bars", "events", "adjusted_prices"} <= set(files):  # the data stage's store, not a symbol per file
        raise DataError(f"{folder} is a trendflow price store (trendflow fetch): use --data {folder / 'adjusted_prices.parquet'}")
    jobs = []
    for symbol in wanted if wanted is not None else files:
        path = files.get(symbol)
        if path is None:
            log.warning("no price file for symbol %s in %s -- skipped", symbol, folder)
            skipped.append(symbol)
            continue
        check_symbol_name(symbol, f"file {path.name}: symbol")
        jobs.append((path, symbol))
    jobs.sort(key=lambda job: job[1])
    clean, careful = _fast_read(jobs)
    frames = [clean] if clean is not None else []
    frames += [read_symbol_file(path, symbol, policy) for path, symbol in careful]
    return frames


def _read_long_file(path: Path, wanted: list[str] | None, policy: str, skipped: list[str]) -> list[pd.DataFrame]:
    """A long file (date, symbol, OHLCV rows in any symbol order): grouped by symbol with every rule
    checked at once; only symbols with a problem go through the per-symbol path that names lines."""
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{path}: file has a header but no rows")
    named = _normalise_columns(raw, path, need_symbol=True)
    typed = _typed(named)
    names = named["symbol"].astype("string").str.strip()
    blank = (names.isna() | names.eq("")).to_numpy()
    if blank.any():
        shown = _lines(path, typed.index[blank][:_MAX_ROWS_LISTED], int(blank.sum()))
        if policy == "error":
            raise DataError(f"{path}: {int(blank.sum())} row(s) without a symbol at {shown} "
                            "(set data.bad_rows=drop to drop them with a warning)")
        log.warning("%s: %d row(s) without a symbol (%s) -- dropped", path, int(blank.sum()), shown)
    codes, uniques = pd.factorize(names.where(~blank), sort=True)
    uniques = [str(u) for u in uniques]
    position = {symbol: k for k, symbol in enumerate(uniques)}
    selected = []
    for symbol in wanted if wanted is not None else uniques:
        if symbol not in position:
            log.warning("no rows for symbol %s in %s -- skipped", symbol, path)
            skipped.append(symbol)
            continue
        try:
            check_symbol_name(symbol, f"{path}: symbol")
        except DataError as exc:
            first = typed.index[int(np.flatnonzero(codes == position[symbol])[0])]
            raise DataError(f"{exc} (first at {_lines(path, [first])})") from None
        selected.append(position[symbol])
    use = np.zeros(len(uniques) + 1, dtype=bool)
    use[selected] = True
    rows = np.flatnonzero(use[codes])  # code -1 (no symbol) maps to the spare last slot: False
    rows = rows[np.argsort(codes[rows], kind="stable")]  # grouped by symbol, file order within
    codes = codes[rows]
    frame = typed.iloc[rows]
    columns = {name: frame[name].to_numpy() for name in ("date", *PRICE_COLUMNS)}
    bad = np.logical_or.reduce([r for _, r in _row_problems(columns)] + [_out_of_order(codes, columns["date"])])
    symbols = np.array(uniques, dtype=object)
    if not bad.any():
        frame = frame.reset_index(drop=True)
        frame.insert(1, "symbol", pd.array(symbols[codes], dtype="str"))
        return [frame]
    flagged = set(np.unique(codes[bad]).tolist())
    good = ~np.isin(codes, list(flagged))
    frames = [frame.loc[good].reset_index(drop=True)]
    frames[0].insert(1, "symbol", pd.array(symbols[codes[good]], dtype="str"))
    for k in sorted(flagged):
        cleaned = _clean_symbol_frame(frame.loc[codes == k], path, policy, symbol=uniques[k], raw=named).reset_index(drop=True)
        cleaned.insert(1, "symbol", uniques[k])
        frames.append(cleaned)
    return frames


def _restrict_dates(df: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    if start is None and end is None:
        return df
    days = df["date"].to_numpy()
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= days >= np.datetime64(pd.Timestamp(start))
    if end is not None:
        keep &= days <= np.datetime64(pd.Timestamp(end))
    return df if keep.all() else df.loc[keep].reset_index(drop=True)


def source_stamp(source: Path) -> tuple | None:
    """What the loader's result depends on in the file system: the long file's, or every top-level
    entry of the folder's, name, size, mtime, ctime and inode (None when it cannot be taken). Any
    write, replacement, new or removed file changes it."""
    def stat(path: Path) -> tuple:
        st = path.stat()
        return (path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    try:
        if source.is_dir():
            return (stat(source),) + tuple(stat(p) for p in sorted(source.iterdir()))
        return (stat(source),)
    except OSError:
        return None


@dataclass
class _Kept:
    """A load kept for the same process's next identical load (see `load_market_data(keep=True)`)."""

    key: tuple  # source and every argument but `end`
    stamp: tuple  # source_stamp before the files were read
    end: date | None
    last_row_day: pd.Timestamp  # the latest date of the rows read in [start, end], short symbols included
    market: MarketData
    warnings: list[tuple[int, str]]  # what the load logged at WARNING and above, said again when taken


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append((record.levelno, record.getMessage()))


_kept: list[_Kept] = []  # at most one


def _take_kept(key: tuple, source: Path, end: date | None) -> MarketData | None:
    """The kept load, once, when this call would return the same: same source files (unchanged since
    they were read), same arguments, and an `end` that selects the same rows (no row read lies after
    it, and no unread row before it)."""
    if not _kept:
        return None
    kept = _kept.pop()
    if kept.key != key:
        return None
    same_rows = (end is None and kept.end is None) or (
        end is not None and kept.last_row_day <= pd.Timestamp(end) and (kept.end is None or end <= kept.end))
    if not same_rows or source_stamp(source) != kept.stamp:
        return None
    for level, message in kept.warnings:  # the run's log gets them as if the files had been read again
        log.log(level, "%s", message)
    return kept.market


def load_market_data(
    source: str | Path,
    symbols: Iterable[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    bad_rows: Literal["error", "drop"] = "error",
    min_history_days: int = 1,
    *,
    keep: bool = False,
) -> MarketData:
    """Load a folder of per-symbol files or one long file into a validated long panel, sorted by
    (symbol, date). Symbols asked for but absent are skipped with a warning (listed in `skipped`),
    as are symbols with fewer than `min_history_days` rows in [start, end]; no usable symbol is an error.

    `keep=True` (`trendflow daily`'s checks, which load the prices before the flow starts): the
    result is also kept for the next call in this process (the signal stage's), which takes it
    instead of reading the files again when that call's result would be the same (`_take_kept`).
    The caller must not change the frame."""
    if bad_rows not in ("error", "drop"):
        raise DataError(f"data.bad_rows must be 'error' or 'drop', got {bad_rows!r}")
    source = Path(source)
    wanted = list(dict.fromkeys(check_symbol_name(s, "data.symbols entry") for s in symbols)) if symbols else None
    key = (str(source.absolute()), tuple(wanted or ()), wanted is None, start, bad_rows, min_history_days)
    kept = _take_kept(key, source, end)
    if kept is not None:
        log.info("Loaded %d symbols, %d rows, %s..%s from %s (as read by the checks before the run; the files are "
                 "unchanged since)", kept.prices["symbol"].nunique(), len(kept.prices), kept.prices["date"].min().date(),
                 kept.prices["date"].max().date(), source)
        return kept
    if not keep:
        return _load(source, wanted, start, end, bad_rows, min_history_days)[0]
    stamp = source_stamp(source)  # taken before reading: a file changed meanwhile fails the match
    recorder = _Recorder()
    log.addHandler(recorder)
    try:
        market, last_row_day = _load(source, wanted, start, end, bad_rows, min_history_days)
    finally:
        log.removeHandler(recorder)
    if stamp is not None:
        _kept[:] = [_Kept(key, stamp, end, last_row_day, market, recorder.said)]
    return market


def _load(source: Path, wanted: list[str] | None, start: date | None, end: date | None, bad_rows: str,
          min_history_days: int) -> tuple[MarketData, pd.Timestamp]:
    """load_market_data's work, and the latest date of the rows read in [start, end]."""
    if not source.exists():
        raise DataError(f"data source {source} does not exist")
    skipped: list[str] = []
    if source.is_dir():
        frames = _read_folder(source, wanted, bad_rows, skipped)
    else:
        frames = _read_long_file(source, wanted, bad_rows, skipped)

    frames = [f for f in frames if len(f)]
    if not frames:
        raise DataError(f"{source}: no usable symbol (no rows left to load)")
    if len(frames) == 1:
        everything = frames[0]  # built sorted by (symbol, date)
    else:
        everything = pd.concat(frames, ignore_index=True).sort_values(["symbol", "date"], kind="stable", ignore_index=True)
    listed = pd.unique(everything["symbol"])
    everything = _restrict_dates(everything, start, end)
    last_row_day = everything["date"].max()
    counts = everything["symbol"].value_counts()
    needed = max(min_history_days, 1)
    too_short = [str(sym) for sym in listed if counts.get(sym, 0) < needed]
    for sym in too_short:
        log.warning("symbol %s has %d rows in the date range (< %d) -- skipped", sym, counts.get(sym, 0), needed)
        skipped.append(sym)
    if len(too_short) == len(listed):
        window = f" between {start or 'the start'} and {end or 'the end'}" if (start or end) else ""
        raise DataError(f"{source}: no usable symbol (every symbol has fewer than {needed} rows{window})")
    if too_short:
        everything = everything.loc[~everything["symbol"].isin(too_short).to_numpy()].reset_index(drop=True)

    prices = validate_frame(everything, PricesSchema, str(source), inplace=True)  # the one pandera pass
    log.info("Loaded %d symbols, %d rows, %s..%s from %s", len(listed) - len(too_short), len(prices),
             prices["date"].min().date(), prices["date"].max().date(), source)
    return MarketData(prices=prices, source=str(source), skipped=skipped), last_row_day
