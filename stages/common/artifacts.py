"""Artifact I/O: the one place that knows how tables become files and files become tables.

Every artifact is validated by its pandera schema when written and when read. A stage writes
its outputs inside a `StageRun`: each file goes to the run's own staging folder
`<out>/.staging/<run>/` (encoded on a writer thread, hashed on its way to disk, fsync'd), and only
when the whole stage succeeds is the generation published (see `StageRun.commit`): the new manifest
(stage, schema, rows, bytes, sha256, config hash, input hashes, start/end times) is the commit
point. A failure anywhere -- an exception or a killed process -- leaves the previous generation.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import pandera.pandas as pa
import pandera.errors as pa_errors

from stages.common.errors import ArtifactMissingError, IntegrityError, SchemaError, TransientIOError
from stages.common.memory import release_free_memory

log = logging.getLogger(__name__)


def _pandas_only_model_types() -> None:
    """Keep pandera from importing dask in every process.

    pandera 0.35 builds a DataFrameModel's schema by asking which annotations are Series/Index types
    for every dataframe library it supports, and finds out by importing `dask.dataframe` (installed
    here for sweeps): 1-1.5 s added to the first validation of every command. Every schema in this
    project is a pandas one, so while dask.dataframe is not loaded anyway the lookups answer with the
    pandas types; once it is loaded (a Dask sweep), or if pandera's internals change, pandera's own
    lookups are used."""
    try:
        import pandera.api.pandas.model as model
        from pandera.typing import Index, Series

        every_index, every_series = model.get_index_types, model.get_series_types
    except (ImportError, AttributeError):
        return
    if getattr(every_index, "_pandas_first", False):
        return

    def index_types() -> set[type]:
        return every_index() if "dask.dataframe" in sys.modules else {Index}

    def series_types() -> set[type]:
        return every_series() if "dask.dataframe" in sys.modules else {Series}

    index_types._pandas_first = series_types._pandas_first = True  # type: ignore[attr-defined]
    model.get_index_types, model.get_series_types = index_types, series_types


_pandas_only_model_types()

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
STAGING_NAME = ".staging"
_MAX_BAD_ROWS_SHOWN = 5


# --------------------------------------------------------------------------- validation
def _schema_name(schema: type[pa.DataFrameModel] | pa.DataFrameSchema) -> str:
    return getattr(schema, "__name__", None) or getattr(schema, "name", None) or type(schema).__name__


def validate_frame(
    df: pd.DataFrame,
    schema: type[pa.DataFrameModel] | pa.DataFrameSchema,
    source: str,
    *,
    inplace: bool = False,
) -> pd.DataFrame:
    """Validate (and coerce) a frame; raise SchemaError naming the file, columns and first bad rows.

    `inplace=True` skips pandera's defensive copy (coercion may then change `df` itself): for
    frames the caller built and owns, e.g. the loader's freshly assembled panel.
    """
    try:
        with warnings.catch_warnings():
            # pandera 0.35 warns on inplace=True with strict="filter"; the filtered frame it returns is the one used
            warnings.filterwarnings("ignore", message=r".*strict='filter'.*inplace=True", category=FutureWarning)
            return schema.validate(df, lazy=True, inplace=inplace)
    except pa_errors.SchemaErrors as exc:
        raise SchemaError(describe_failures(exc.failure_cases, source, _schema_name(schema), df)) from None
    except pa_errors.SchemaError as exc:  # raised by non-lazy paths (e.g. strict column checks)
        raise SchemaError(f"{source} does not match schema {_schema_name(schema)}: {exc}") from None


def _row_label(df: pd.DataFrame | None, idx: Any) -> str:
    """'row 12 (date=2020-01-03, symbol=510300.SH)' when the frame has those keys."""
    label = f"row {idx}"
    if df is None or pd.isna(idx) or idx not in df.index:
        return label
    keys = [c for c in ("date", "symbol") if c in df.columns]
    if not keys:
        return label
    row = df.loc[idx]
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    parts = []
    for key in keys:
        value = row[key]
        parts.append(f"{key}={value.date() if isinstance(value, pd.Timestamp) else value}")
    return f"{label} ({', '.join(parts)})"


def describe_failures(
    failure_cases: pd.DataFrame, source: str, schema_name: str, df: pd.DataFrame | None = None
) -> str:
    """Group pandera's failure cases by check: one line per failing check with its first rows."""
    lines = [f"{source} does not match schema {schema_name}:"]
    cases = failure_cases.copy()
    cases["column"] = cases["column"].astype("string").fillna("(table)")
    for check, group in cases.groupby("check", sort=False, dropna=False):
        if check in ("column_in_dataframe", "column_in_schema"):
            names = ", ".join(repr(v) for v in group["failure_case"])
            what = "missing column(s)" if check == "column_in_dataframe" else "unexpected column(s)"
            lines.append(f"  {what}: {names}")
            continue
        columns = list(dict.fromkeys(group["column"]))
        if len(columns) == 1:
            shown = group.head(_MAX_BAD_ROWS_SHOWN)
            rows = ", ".join(
                f"{_row_label(df, idx)}: {val!r}" if pd.notna(idx) else f"{val!r}"
                for idx, val in zip(shown["index"], shown["failure_case"])
            )
            total = len(group)
            where = f"column '{columns[0]}'"
        else:  # a table-level check: every column of the bad row is listed; name the rows once
            indices = list(dict.fromkeys(group["index"].dropna()))
            rows = ", ".join(_row_label(df, idx) for idx in indices[:_MAX_BAD_ROWS_SHOWN])
            total = len(indices)
            where = "table"
        more = f" (+{total - _MAX_BAD_ROWS_SHOWN} more)" if total > _MAX_BAD_ROWS_SHOWN else ""
        lines.append(f"  {where} fails {check}: {rows}{more}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- hashing & atomic files
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_path(target: Path) -> Path:
    """A new empty hidden temp file beside `target`, created with the user's umask (mkstemp would
    make every artifact mode 0600)."""
    for _ in range(100):
        path = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"cannot create a temp file beside {target}")


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write bytes so that readers see either the old file or the new one, never a half.

    `fsync=False` keeps the atomic rename but skips forcing the data to disk (for files that can
    be regenerated, where hundreds of fsyncs would dominate the run time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _replace(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except PermissionError as exc:  # Windows: the target is open in another program (Excel...)
        raise TransientIOError(f"cannot replace {dst}: {exc} (is it open in another program?)") from exc


def _csv_dtypes(schema: type[pa.DataFrameModel]) -> tuple[dict[str, Any], list[str]]:
    """String columns stay strings (symbols like 000001.SZ), datetime columns are parsed."""
    dtypes: dict[str, Any] = {}
    dates: list[str] = []
    for name, column in schema.to_schema().columns.items():
        if getattr(column, "regex", False):
            continue
        kind = str(column.dtype)
        if kind.startswith("datetime"):
            dates.append(name)
        elif kind in ("str", "string", "object"):
            dtypes[name] = str
    return dtypes, dates


def _write_table(df: pd.DataFrame, path: Path, kind: str) -> str:
    """Write the table and return the sha256 of the bytes written (taken on the way)."""
    if kind == ".parquet":
        return _write_parquet(df, path)
    if kind == ".csv":
        return _write_csv(df, path)
    raise ValueError(f"unsupported artifact type: {path.name}")


def _write_parquet(df: pd.DataFrame | Any, path: Path) -> str:
    """LZ4 Parquet from a frame or an Arrow table; dictionary encoding only where values repeat
    (dates, symbols, ints, flags): on high-cardinality floats it costs time and saves nothing.
    LZ4 rather than zstd: float columns barely compress either way (+10% size) and writing is
    about a third faster, which is most of a daily run's time."""
    import pyarrow as pa_arrow
    import pyarrow.parquet as pq

    table = df if isinstance(df, pa_arrow.Table) else pa_arrow.Table.from_pandas(df, preserve_index=False)
    repeated = [f.name for f in table.schema if not pa_arrow.types.is_floating(f.type)]
    with open(path, "wb") as fh:
        sink = _HashingFile(fh)
        pq.write_table(table, sink, compression="lz4", use_dictionary=repeated or False)
    return sink.digest.hexdigest()


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through it (the encoder writes page by page), so a
    large artifact is not read back just to take its sha256."""

    def __init__(self, fh: Any) -> None:
        super().__init__()
        self._fh = fh
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self._fh.write(data)


_CSV_ROWS_PER_PIECE = 100_000
_WRITER_THREADS = 2


def _write_csv(df: pd.DataFrame, path: Path) -> str:
    """CSV twin via pyarrow's writer: dates as YYYY-MM-DD (ISO date-times when not midnight), strings
    quoted. Large tables are rendered in fixed row ranges on a few threads and written in order, so
    the bytes are the same as one single-threaded write. Returns the sha256 of the bytes written."""
    import pyarrow as pa_arrow
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    table = pa_arrow.Table.from_pandas(df, preserve_index=False)
    for i, name in enumerate(table.column_names):
        values = df[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            present = values.dropna()
            if getattr(values.dt, "tz", None) is None and bool((present == present.dt.normalize()).all()):
                table = table.set_column(i, name, table.column(i).cast(pa_arrow.date32()))
            else:
                table = table.set_column(i, name, pc.strftime(table.column(i), format="%Y-%m-%dT%H:%M:%S"))
    pieces = max(1, -(-table.num_rows // _CSV_ROWS_PER_PIECE))

    def render(piece: int) -> bytes:
        sink = io.BytesIO()
        part = table.slice(piece * _CSV_ROWS_PER_PIECE, _CSV_ROWS_PER_PIECE)
        pa_csv.write_csv(part, sink, write_options=pa_csv.WriteOptions(include_header=piece == 0, quoting_style="needed"))
        return sink.getvalue()

    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        if pieces == 1:
            rendered = render(0)
            digest.update(rendered)
            fh.write(rendered)
            return digest.hexdigest()
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for rendered in pool.map(render, range(pieces)):
                digest.update(rendered)
                fh.write(rendered)
    return digest.hexdigest()


# Arrow -> pandas without consolidating the float columns into one 2-D block (a copy of the whole
# table: 0.34 -> 0.11 CPU-s for 9 columns x 1.2 M rows) and freeing each Arrow column once converted.
# Same values and dtypes; only pandas' internal block layout differs.
PARQUET_TO_PANDAS = {"split_blocks": True, "self_destruct": True}


def _read_table(path: Path, schema: type[pa.DataFrameModel], columns: list[str] | None = None) -> pd.DataFrame:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path, engine="pyarrow", columns=columns, to_pandas_kwargs=PARQUET_TO_PANDAS)
        release_free_memory()  # what the decoded Arrow table leaves in pyarrow's pool and glibc's heap
        return frame
    dtypes, dates = _csv_dtypes(schema)
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(
        path,
        dtype={k: v for k, v in dtypes.items() if k in header},
        parse_dates=[d for d in dates if d in header],
        usecols=columns,
    )


# --------------------------------------------------------------------------- manifest
def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST_NAME


def read_manifest(folder: Path) -> dict[str, Any]:
    path = manifest_path(folder)
    if not path.exists():
        return {"version": MANIFEST_VERSION, "artifacts": {}, "runs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path} is damaged ({exc}); delete it and rerun the stages that wrote this folder") from None
    if not isinstance(data, dict) or "artifacts" not in data:
        raise IntegrityError(f"{path} is not a trendflow manifest")
    data.setdefault("runs", {})
    return data


def leftovers(folder: Path) -> list[Path]:
    """Temp files and staging folders a killed writer left in `folder` (none after a clean run)."""
    folder = Path(folder)
    found = sorted(p for p in folder.glob(".*.tmp") if p.is_file())
    staging = folder / STAGING_NAME
    if staging.is_dir():
        found += sorted(staging.iterdir())
    return found


def stale_stages(artifacts: dict[str, Any]) -> dict[str, str]:
    """Stages whose outputs were made from an input another stage has rewritten since (e.g. trading
    after a run killed between its signal and trading stages), and the stages downstream of those:
    stage -> why, from the manifest alone."""
    stale: dict[str, str] = {}
    for name, entry in sorted(artifacts.items()):
        for source, digest in sorted((entry.get("inputs") or {}).items()):
            current = artifacts.get(source)
            if current is None or current.get("stage") == entry.get("stage") or current.get("sha256") == digest:
                continue
            stale.setdefault(entry.get("stage"), f"{name} was made from an earlier {source} (rewritten by stage "
                                                 f"'{current.get('stage')}' since); rerun stage '{entry.get('stage')}'")
    grew = True
    while grew:  # downstream of a stale stage is stale too
        grew = False
        for name, entry in sorted(artifacts.items()):
            upstream = [artifacts[s]["stage"] for s in sorted(entry.get("inputs") or {}) if s in artifacts]
            behind = next((u for u in upstream if u in stale and u != entry.get("stage")), None)
            if behind is not None and entry.get("stage") not in stale:
                stale[entry.get("stage")] = (f"{name} was made from the outputs of stage '{behind}', which is not "
                                             f"current; rerun stage '{entry.get('stage')}' after it")
                grew = True
    return stale


def manifest_entry(folder: Path, name: str) -> dict[str, Any] | None:
    return read_manifest(folder)["artifacts"].get(name)


# --------------------------------------------------------------------------- reading
def read_artifact(
    path: str | Path,
    schema: type[pa.DataFrameModel],
    *,
    verify_hash: bool = True,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Read and validate one table artifact (Parquet or CSV).

    With verify_hash, a file listed in its folder's manifest must still have the recorded sha256
    (a file edited by hand after the run is refused rather than silently used). With `columns`,
    only those columns are read and checked, by the schema's rules for them (the sha256 still
    covers the whole file): a stage that needs half of a wide table neither decodes nor holds the
    rest. The frame is validated in place: it was just read, nobody else holds it.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactMissingError(f"{path} does not exist (run the stage that writes it first)")
    if verify_hash:
        path = as_published(path)
    try:
        df = _read_table(path, schema, columns)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, IsADirectoryError)) and exc.errno in (11, 13, 16):
            raise TransientIOError(f"{path} cannot be read now: {exc}") from exc
        raise SchemaError(f"{path} cannot be read as {path.suffix[1:]}: {exc}") from None
    checked = schema if columns is None or isinstance(schema, pa.DataFrameSchema) else schema.to_schema().select_columns(columns)
    return validate_frame(df, checked, str(path), inplace=True)


def verify_against_manifest(path: Path, digest: str | None = None) -> None:
    """A file listed in its folder's manifest must still have the recorded sha256 (`digest`: the
    file's sha256 when the caller has already taken it)."""
    entry = manifest_entry(path.parent, path.name)
    if entry is None:
        return
    actual = digest if digest is not None else sha256_file(path)
    if actual != entry["sha256"]:
        raise IntegrityError(
            f"{path} was changed after stage '{entry['stage']}' wrote it "
            f"(sha256 {actual[:12]}... != manifest {entry['sha256'][:12]}...); rerun that stage"
        )


def as_published(path: Path) -> Path:
    """The file to read for `path`: `path` itself when it matches its manifest entry (else an
    IntegrityError), or -- while a generation is being published in that folder, or after its
    writer was killed and before the next command recovers it -- the previous file the manifest
    still describes, kept in the generation's previous/ folder. So the previous generation stays
    readable, as a whole, until the manifest's rename."""
    try:
        verify_against_manifest(path)
        return path
    except IntegrityError:
        staging = path.parent / STAGING_NAME
        entry = manifest_entry(path.parent, path.name) if staging.is_dir() else None
        for kept in sorted(staging.glob(f"*/{_PREVIOUS}/{path.name}")) if entry else []:
            with contextlib.suppress(OSError):
                if sha256_file(kept) == entry["sha256"]:
                    return kept
        raise


def read_json_artifact(path: str | Path, model: type, *, verify_hash: bool = True) -> Any:
    """Read a JSON artifact and validate it with a pydantic model."""
    from pydantic import ValidationError

    path = Path(path)
    if not path.exists():
        raise ArtifactMissingError(f"{path} does not exist")
    if verify_hash:
        path = as_published(path)
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in e['loc']) or '(top level)'}': {e['msg']}" for e in exc.errors()[:5]
        )
        raise SchemaError(f"{path} does not match {model.__name__}: {problems}") from None


# --------------------------------------------------------------------------- writing
@dataclass
class _Pending:
    tmp: Path
    target: Path
    schema: str
    rows: int
    digest: str | None = None  # sha256 of tmp, when the writer took it on the way

    def sha256(self) -> str:
        return self.digest if self.digest is not None else sha256_file(self.tmp)


@dataclass
class StageRun:
    """Collects a stage's outputs and commits them together; records inputs and outputs in the manifest."""

    stage: str
    out_dir: Path
    config_hash: str | None = None
    csv_twins: bool = True
    lineage: Any = None  # stages.common.lineage.Lineage: refuses stale inputs, records each output's lineage
    inputs: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # facts of this run for its manifest record (e.g. data_source)
    written: dict[str, Path] = field(default_factory=dict)
    _pending: list[_Pending] = field(default_factory=list)
    _retired: list[Path] = field(default_factory=list)
    _started: str = field(default_factory=lambda: _now())
    _t0: float = field(default_factory=time.perf_counter)
    _writer_lock: threading.Lock = field(default_factory=threading.Lock)
    _writer: ThreadPoolExecutor | None = None
    _staging: list[Future] = field(default_factory=list)
    _generation: Path | None = None  # <out>/.staging/<run>/, made on the first write
    _staged_count: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    # reading ---------------------------------------------------------------
    def read(self, path: str | Path, schema: type[pa.DataFrameModel], *, verify_hash: bool = True,
             columns: list[str] | None = None) -> pd.DataFrame:
        """read_artifact, recorded as an input of this run; the file is hashed once, on a second
        thread while it is read (hashlib releases the GIL), for both the manifest check and the record."""
        return self.read_with(path, lambda p: read_artifact(p, schema, verify_hash=False, columns=columns),
                              verify_hash=verify_hash)

    def read_with(self, path: str | Path, read: Callable[[Path], Any], *, verify_hash: bool = True) -> Any:
        """`read(path)` for a reader of one's own (e.g. a few columns of a big Parquet), hash-checked
        against the manifest and recorded like `read`. An edited file is refused as edited even when
        it also fails to read."""
        path = Path(path)
        if verify_hash and self.lineage is not None:
            self.lineage.check_input(path)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
            digest = pool.submit(sha256_file, path)
            try:
                result = read(path)
            except Exception:
                if verify_hash and digest.exception() is None:
                    verify_against_manifest(path, digest.result())
                raise
            if verify_hash:
                verify_against_manifest(path, digest.result())
            self.inputs[self._input_key(path)] = digest.result()
        return result

    def read_json(self, path: str | Path, model: type, *, verify_hash: bool = True) -> Any:
        """read_json_artifact, hash-checked and recorded like `read`."""
        return self.read_with(path, lambda p: read_json_artifact(p, model, verify_hash=False), verify_hash=verify_hash)

    def record_input(self, path: Path) -> None:
        """Note an input's sha256; a file in the output folder is named relative to it (the manifest
        then stays valid when the folder is moved), anything else by its path as given."""
        path = Path(path)
        self.inputs[self._input_key(path)] = sha256_file(path)

    def _input_key(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.out_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    # writing ---------------------------------------------------------------
    def write(
        self,
        df: pd.DataFrame,
        name: str,
        schema: type[pa.DataFrameModel],
        *,
        csv_twin: bool | None = None,
        already_validated: bool = False,
        owned: bool = False,
    ) -> Path:
        """Validate `df` and stage it as `name` (.parquet or .csv); a Parquet file gets a CSV twin when asked.

        `already_validated=True`: `df` is what `validate_frame(..., schema)` returned to the caller, unchanged
        since (e.g. the loader's prices), so the pandera pass is not repeated. `owned=True`: the caller
        built `df` for this file, so it is validated in place instead of copied (a million-row table
        is not held twice). The file is encoded in the background (see `_submit`): `df` must not be
        changed until the run commits."""
        target = self.out_dir / name
        validated = df if already_validated else validate_frame(df, schema, name, inplace=owned)
        targets = [target]
        if target.suffix == ".parquet" and (self.csv_twins if csv_twin is None else csv_twin):
            targets.append(target.with_suffix(".csv"))
        for t in targets:
            self._submit(validated, t, _schema_name(schema))
        return target

    def write_extended(self, previous: Any, rows: pd.DataFrame, name: str, schema: type[pa.DataFrameModel]) -> Path:
        """Stage Parquet `name` as the Arrow table `previous` followed by `rows`.

        `previous` must be this folder's own artifact as read through `read_with` (so its sha256 was
        checked against the manifest): its rows were validated when they were written and are
        byte-for-byte the same, so only the new rows and the seam between them are validated here.
        The file is the one `write` would make from the whole frame."""
        import pyarrow as pa_arrow

        seam = previous.slice(max(previous.num_rows - 1, 0)).to_pandas()
        checked = validate_frame(pd.concat([seam, rows], ignore_index=True), schema, name).iloc[len(seam):]
        try:
            added = pa_arrow.Table.from_pandas(checked, preserve_index=False).cast(previous.schema)
        except (pa_arrow.ArrowInvalid, ValueError) as exc:
            raise SchemaError(f"{name}: the new rows do not match the columns of the existing file ({exc})") from None
        table = pa_arrow.concat_tables([previous, added])
        self._submit(table, self.out_dir / name, _schema_name(schema), rows=table.num_rows)
        return self.out_dir / name

    def write_bytes(self, data: bytes, name: str, kind: str, rows: int) -> Path:
        """Stage a binary artifact (e.g. signal_state.npz) with its reader's name as `kind`."""
        return self._stage_file(name, lambda tmp: tmp.write_bytes(data), kind, rows)

    def write_json(self, obj: Any, name: str, model: type | None = None) -> Path:
        """Stage a JSON artifact; with a pydantic model it is validated first."""
        from pydantic import ValidationError

        if model is not None:
            try:
                obj = model.model_validate(obj) if not isinstance(obj, model) else obj
            except ValidationError as exc:
                raise SchemaError(f"{name} does not match {model.__name__}: {exc}") from None
            payload = obj.model_dump(mode="json")
        else:
            payload = obj
        text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        return self._stage_file(name, lambda tmp: tmp.write_text(text, encoding="utf-8"), getattr(model, "__name__", "json"), 1)

    def write_text(self, text: str, name: str, kind: str = "text") -> Path:
        """Stage a non-tabular file (e.g. report.html)."""
        return self._stage_file(name, lambda tmp: tmp.write_text(text, encoding="utf-8"), kind, text.count("\n"))

    def _stage_file(self, name: str, write: Callable[[Path], Any], kind: str, rows: int) -> Path:
        """Stage a small non-table file written by `write(tmp)` (fsync'd; the temp file goes on failure)."""
        target = self.out_dir / name
        with _os_faults_named(target):
            tmp = self._staged_path(target)
            try:
                write(tmp)
                _fsync(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self._pending.append(_Pending(tmp, target, kind, rows))
        return target

    def retire(self, name: str) -> None:
        """Remove `name` (and its manifest entry) when the run commits: for a file this run makes
        stale without rewriting it, so the folder never holds one that disagrees with the rest."""
        target = self.out_dir / name
        if target.exists() or name in read_manifest(self.out_dir)["artifacts"]:
            self._retired.append(target)

    def retire_dated_after(self, day: Any, prefixes: tuple[str, ...]) -> list[str]:
        """Retire this folder's date-stamped artifacts `<prefix>_YYYY-MM-DD.*` dated after `day`: left by
        an earlier run over a longer history, they would otherwise be read as current (e.g. the
        report's latest orders). Returns their names."""
        import re

        pattern = re.compile(rf"^(?:{'|'.join(map(re.escape, prefixes))})_(\d{{4}}-\d{{2}}-\d{{2}})\.(?:csv|json)$")
        names = set(read_manifest(self.out_dir)["artifacts"]) | {p.name for p in self.out_dir.iterdir() if p.is_file()}
        later = sorted(n for n in names if (m := pattern.match(n)) and m.group(1) > str(day))
        for name in later:
            self.retire(name)
        if later:
            log.info("%s: retired %s, left by an earlier run over a longer history", self.out_dir, ", ".join(later))
        return later

    def _stage(self, df: pd.DataFrame | Any, target: Path, schema_name: str, rows: int | None = None) -> _Pending:
        """Write `df` (a frame, or an Arrow table for Parquet) to a temp file beside `target`
        (fsync'd); the sha256 is taken while the bytes are written."""
        with _os_faults_named(target):
            tmp = self._staged_path(target)
            try:
                digest = _write_table(df, tmp, target.suffix)
                _fsync(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return _Pending(tmp, target, schema_name, len(df) if rows is None else rows, digest)

    def _staged_path(self, target: Path) -> Path:
        """A new file in this run's generation folder for `target` (numbered: a name written twice
        gets two files; the later one wins, as it did when files were renamed in order)."""
        with self._writer_lock:
            if self._generation is None:
                root = self.out_dir / STAGING_NAME
                root.mkdir(exist_ok=True)
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                self._generation = root / f"{self.stage}-{stamp}-{os.getpid()}-{secrets.token_hex(3)}"
                self._generation.mkdir()
            self._staged_count += 1
            path = self._generation / f"{self._staged_count:04d}-{target.name}"
        path.touch(exist_ok=False)
        return path

    def _submit(self, df: pd.DataFrame | Any, target: Path, schema_name: str, rows: int | None = None) -> None:
        """Encode and fsync a table on the writer threads (the Parquet and CSV encoders release the
        GIL): a stage's files are written side by side while it goes on. Failures surface at commit."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=_WRITER_THREADS, thread_name_prefix="artifact")
        self._staging.append(self._writer.submit(self._stage, df, target, schema_name, rows))

    def _collect(self) -> None:
        """Wait for the files still being written; raise the first failure once all have finished
        (every file that was written is then in `_pending`, so abort removes it)."""
        futures, self._staging = self._staging, []
        errors = []
        for future in futures:
            try:
                self._pending.append(future.result())
            except BaseException as exc:  # noqa: BLE001 -- re-raised below
                errors.append(exc)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if errors:
            raise errors[0]

    # commit ------------------------------------------------------------------
    def commit(self) -> dict[str, Path]:
        """Publish every staged file and the new manifest as one generation -- all or nothing.

        See `publish_generation`: a journal is written first, each previous file is kept (hard
        link) in the generation folder, the new files are renamed into place, and the manifest's
        rename is the commit point. An exception before it puts every previous file back; a killed
        process is finished or rolled back the same way by `recover` in the next command.
        """
        try:
            self._collect()
            text = self._manifest_text()
        except BaseException:
            self.abort()
            raise
        if self._generation is None:  # nothing staged (e.g. a run that only retires files)
            self._staged_path(self.out_dir / MANIFEST_NAME).unlink()
        places = [(p.tmp.name, p.target.name) for p in self._pending]
        retire = [t.name for t in self._retired]
        try:
            publish_generation(self.out_dir, self._generation, places, retire, text)
        except BaseException:
            with contextlib.suppress(BaseException):
                _roll_back(self.out_dir, self._generation)
            self.abort()
            raise
        _remove_generation(self._generation)
        for pending in self._pending:
            self.written[pending.target.name] = pending.target
        self._pending.clear()
        self._retired.clear()
        self._generation = None
        return dict(self.written)

    def _manifest_text(self) -> bytes:
        """The folder's manifest with this run's outputs (sha256 as staged) and run record added."""
        digests = [pending.sha256() for pending in self._pending]
        finished = _now()
        manifest = read_manifest(self.out_dir)
        for target in self._retired:
            manifest["artifacts"].pop(target.name, None)
        for pending, digest in zip(self._pending, digests):
            manifest["artifacts"][pending.target.name] = {
                "stage": self.stage,
                "schema": pending.schema,
                "rows": pending.rows,
                "bytes": pending.tmp.stat().st_size,
                "sha256": digest,
                "config_hash": self.config_hash,
                "inputs": dict(sorted(self.inputs.items())),
                "started_at": self._started,
                "finished_at": finished,
            }
        if self.lineage is not None:
            self.lineage.annotate(manifest, [pending.target.name for pending in self._pending])
        manifest["runs"][self.stage] = {
            "config_hash": self.config_hash,
            "started_at": self._started,
            "finished_at": finished,
            "seconds": round(time.perf_counter() - self._t0, 3),
            "outputs": sorted({p.target.name for p in self._pending}),
            **self.notes,
        }
        if self._retired:
            manifest["runs"][self.stage]["removed"] = sorted(t.name for t in self._retired)
        manifest["version"] = MANIFEST_VERSION
        return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._collect()
        self._retired.clear()
        for pending in self._pending:
            pending.tmp.unlink(missing_ok=True)
        self._pending.clear()
        if self._generation is not None:
            _remove_generation(self._generation)
            self._generation = None


@contextlib.contextmanager
def stage_run(stage: str, out_dir: str | Path, *, config_hash: str | None = None, csv_twins: bool = True,
              lineage: Any = None) -> Iterator[StageRun]:
    """`with stage_run("signal", out) as run: run.write(...)` -- all outputs land together or not at all."""
    run = StageRun(stage=stage, out_dir=Path(out_dir), config_hash=config_hash, csv_twins=csv_twins, lineage=lineage)
    try:
        yield run
    except BaseException:
        run.abort()
        raise
    run.commit()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def _os_faults_named(target: Path) -> Iterator[None]:
    """An OS fault (no space, read-only, permission...) while staging `target` becomes the one-line
    error naming the artifact (exit 3 when a retry can help, else 2); other errors pass unchanged."""
    from stages.common.fs import is_os_fault, os_error

    try:
        yield
    except OSError as exc:
        if not is_os_fault(exc):
            raise
        raise os_error(exc, target, "cannot write") from exc


# --------------------------------------------------------------------------- generations
_JOURNAL = "journal.json"
_PREVIOUS = "previous"


def publish_generation(folder: Path, generation: Path, places: list[tuple[str, str]], retire: list[str],
                       manifest: bytes) -> None:
    """Make the staged files in `generation` (`places`: staged file name -> artifact name) and
    `manifest` the folder's current set; remove the `retire`d artifacts.

    Steps, each safe to be killed after: (1) the new manifest and a journal (what goes where, which
    names existed, the new manifest's sha256) are written into the generation folder; (2) every
    previous file that will be replaced or retired is hard-linked into `previous/`; (3) retired
    files are removed and new ones renamed over the old names (each rename atomic, so a file is
    always whole); (4) the new manifest is renamed over manifest.json: the commit point.
    Until (4) the old manifest describes the old files, kept in `previous/`; `recover` puts them
    back. After (4) `recover` finishes the renames."""
    staged_manifest = generation / MANIFEST_NAME
    atomic_write_bytes(staged_manifest, manifest)
    names = list(dict.fromkeys([name for _, name in places] + retire))
    existed = [name for name in names if (folder / name).exists()]
    journal = {"manifest_sha256": hashlib.sha256(manifest).hexdigest(), "place": places, "retire": retire,
               "existed": existed}
    atomic_write_bytes(generation / _JOURNAL, json.dumps(journal, indent=1).encode())
    previous = generation / _PREVIOUS
    previous.mkdir()
    for name in existed:
        _keep_previous(folder / name, previous / name)
    _fsync_dir(previous)
    for name in retire:
        (folder / name).unlink(missing_ok=True)
    for staged, name in places:
        _replace(generation / staged, folder / name)
    _replace(staged_manifest, manifest_path(folder))
    _fsync_dir(folder)


def _keep_previous(path: Path, kept: Path) -> None:
    """A second name for the previous file (a hard link: no copy, and the file stays in place for
    readers); a copy where the file system has no hard links."""
    try:
        os.link(path, kept)
    except OSError:
        shutil.copy2(path, kept)


def _read_journal(generation: Path) -> dict[str, Any] | None:
    try:
        return json.loads((generation / _JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _roll_back(folder: Path, generation: Path) -> None:
    """Put back the previous generation: kept files over their names, names that did not exist removed."""
    journal = _read_journal(generation)
    if journal is None:  # killed before the journal: nothing in the folder was touched
        return
    previous = generation / _PREVIOUS
    for name in dict.fromkeys([name for _, name in journal["place"]] + journal["retire"]):
        kept = previous / name
        if kept.exists():
            os.replace(kept, folder / name)
        elif name not in journal["existed"]:
            (folder / name).unlink(missing_ok=True)
    _fsync_dir(folder)


def _roll_forward(folder: Path, generation: Path, journal: dict[str, Any]) -> None:
    """Finish a commit whose manifest was published: the remaining renames and removals."""
    placed = {name for _, name in journal["place"]}
    for name in journal["retire"]:
        if name not in placed:
            (folder / name).unlink(missing_ok=True)
    for staged, name in journal["place"]:
        if (generation / staged).exists():
            os.replace(generation / staged, folder / name)
    _fsync_dir(folder)


def _remove_generation(generation: Path) -> None:
    shutil.rmtree(generation, ignore_errors=True)
    with contextlib.suppress(OSError):
        generation.parent.rmdir()  # .staging/, when no other generation is in it


def recover(folder: str | Path) -> list[str]:
    """Finish or undo what a killed writer left in `folder`; returns one line per repair.

    A generation whose journal names the published manifest is rolled forward, any other is rolled
    back; stray temp files are removed. Only call it while holding the folder's write lock (a live
    writer's generation must not be touched)."""
    folder = Path(folder)
    done: list[str] = []
    root = folder / STAGING_NAME
    if root.is_dir():
        for generation in sorted(p for p in root.iterdir() if p.is_dir()):
            journal = _read_journal(generation)
            published = manifest_path(folder)
            current = sha256_file(published) if published.exists() else None
            if journal is not None and journal.get("manifest_sha256") == current:
                _roll_forward(folder, generation, journal)
                done.append(f"{folder}: finished the commit of {generation.name} (its writer stopped after publishing)")
            else:
                _roll_back(folder, generation)
                done.append(f"{folder}: rolled back the unfinished commit of {generation.name} (previous files kept)")
            _remove_generation(generation)
        for stray in [p for p in root.iterdir() if not p.is_dir()] if root.is_dir() else []:
            stray.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            root.rmdir()
    for stray in folder.glob(".*.tmp"):
        stray.unlink(missing_ok=True)
        done.append(f"{folder}: removed the temp file {stray.name} of an interrupted write")
    return done
