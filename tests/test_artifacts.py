"""Artifact I/O: validated atomic writes, all-or-nothing stage commits, manifest records, hash checks on read,
schema errors that name file/column/rows, byte-identical reruns."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel, Field

from schemas.prices import PricesSchema
from stages.common import artifacts
from stages.common.artifacts import read_artifact, read_json_artifact, read_manifest, sha256_file, stage_run
from stages.common.errors import ArtifactMissingError, IntegrityError, SchemaError


def _prices(n: int = 3, symbol: str = "000001.SZ") -> pd.DataFrame:
    return pd.DataFrame({"date": pd.bdate_range("2024-01-02", periods=n), "symbol": [symbol] * n,
                         "open": 1.0, "high": 1.1, "low": 0.9, "close": 1.0, "volume": 10.0})


class Summary(BaseModel):
    name: str
    value: float = Field(ge=0)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _first_run(folder: Path) -> dict[str, bytes]:
    with stage_run("signal", folder, config_hash="c1") as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
        run.write(_prices(), "signals_output.parquet", PricesSchema)
        run.write_json({"name": "a", "value": 1.0}, "summary.json", Summary)
    return _snapshot(folder)


# --------------------------------------------------------------------------- all or nothing
def test_an_exception_while_writing_the_second_output_leaves_everything_byte_identical(tmp_path, monkeypatch):
    before = _first_run(tmp_path)
    real, calls = artifacts._write_table, []

    def fail_on_second_output(df, path, kind):
        calls.append(path)
        if len(calls) == 3:  # prices.parquet, prices.csv, then signals_output.parquet
            raise OSError("disk full")
        real(df, path, kind)

    monkeypatch.setattr(artifacts, "_write_table", fail_on_second_output)
    with pytest.raises(OSError, match="disk full"):
        with stage_run("signal", tmp_path, config_hash="c2") as run:
            run.write(_prices(5), "prices.parquet", PricesSchema)
            run.write(_prices(5), "signals_output.parquet", PricesSchema)
    assert _snapshot(tmp_path) == before  # no temp files either


def test_a_failing_twin_written_beside_a_big_parquet_leaves_everything_byte_identical(tmp_path, monkeypatch):
    """Large tables write their Parquet and CSV twin on two threads; a failure in one removes the other's temp file."""
    before = _first_run(tmp_path)
    real = artifacts._write_table

    def csv_fails(df, path, kind):
        if kind == ".csv":
            raise OSError("disk full")
        real(df, path, kind)

    monkeypatch.setattr(artifacts, "_write_table", csv_fails)
    big = pd.concat([_prices(400, f"{i:06d}.SZ") for i in range(300)], ignore_index=True)
    assert len(big) >= artifacts._CSV_ROWS_PER_PIECE
    with pytest.raises(OSError, match="disk full"):
        with stage_run("signal", tmp_path, config_hash="c2") as run:
            run.write(big, "signals_output.parquet", PricesSchema)
    assert _snapshot(tmp_path) == before


def test_an_exception_in_the_stage_body_commits_nothing(tmp_path):
    before = _first_run(tmp_path)
    with pytest.raises(RuntimeError):
        with stage_run("signal", tmp_path) as run:
            run.write(_prices(5), "prices.parquet", PricesSchema)
            run.write_text("<html></html>", "report.html")
            raise RuntimeError("bug after the writes")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("failing_move", [1, 2, 4, 6])
def test_a_failure_while_moving_files_into_place_rolls_every_file_back(tmp_path, monkeypatch, failing_move):
    """E.g. on Windows a target open in Excel cannot be replaced: the files already moved go back."""
    before = _first_run(tmp_path)
    real, calls = artifacts._replace, []

    def locked(src, dst):
        calls.append(dst)
        if len(calls) == failing_move:
            raise artifacts.TransientIOError(f"cannot replace {dst}")
        real(src, dst)

    monkeypatch.setattr(artifacts, "_replace", locked)
    with pytest.raises(artifacts.TransientIOError):
        with stage_run("signal", tmp_path, config_hash="c2") as run:
            run.write(_prices(5), "prices.parquet", PricesSchema)
            run.write(_prices(5), "signals_output.parquet", PricesSchema)
            run.write_json({"name": "b", "value": 2.0}, "summary.json", Summary)
    assert _snapshot(tmp_path) == before


def _make_manifest_writes_fail(monkeypatch) -> None:
    real = artifacts.atomic_write_bytes

    def manifest_fails(path, data, **kwargs):
        if Path(path).name == "manifest.json":
            raise OSError("no space left on device")
        real(path, data, **kwargs)

    monkeypatch.setattr(artifacts, "atomic_write_bytes", manifest_fails)


def test_a_failure_writing_the_manifest_rolls_the_outputs_back(tmp_path, monkeypatch):
    before = _first_run(tmp_path)
    _make_manifest_writes_fail(monkeypatch)
    with pytest.raises(OSError):
        with stage_run("signal", tmp_path) as run:
            run.write(_prices(5), "prices.parquet", PricesSchema)
            run.write(_prices(5), "new_output.parquet", PricesSchema)
    assert _snapshot(tmp_path) == before


def test_a_retired_file_goes_with_its_manifest_entry_only_when_the_run_commits(tmp_path, monkeypatch):
    before = _first_run(tmp_path)
    with monkeypatch.context() as failing:
        _make_manifest_writes_fail(failing)
        with pytest.raises(OSError):
            with stage_run("signal", tmp_path) as run:
                run.write(_prices(5), "signals_output.parquet", PricesSchema, csv_twin=False)
                run.retire("signals_output.csv")
    assert _snapshot(tmp_path) == before  # the twin is back, byte for byte
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(5), "signals_output.parquet", PricesSchema, csv_twin=False)
        run.retire("signals_output.csv")
    manifest = read_manifest(tmp_path)
    assert not (tmp_path / "signals_output.csv").exists() and "signals_output.csv" not in manifest["artifacts"]
    assert manifest["runs"]["signal"]["removed"] == ["signals_output.csv"]
    assert read_artifact(tmp_path / "signals_output.parquet", PricesSchema).shape[0] == 5


# --------------------------------------------------------------------------- manifest and hashes
def test_the_manifest_records_each_output(tmp_path):
    inputs = tmp_path / "elsewhere.csv"
    inputs.write_text("x\n1\n")
    with stage_run("signal", tmp_path / "out", config_hash="abc") as run:
        run.record_input(inputs)
        run.write(_prices(4), "prices.parquet", PricesSchema)
    with stage_run("trading", tmp_path / "out", config_hash="abc") as run:
        frame = run.read(tmp_path / "out" / "prices.parquet", PricesSchema)
        run.write(frame, "positions.csv", PricesSchema)
    manifest = read_manifest(tmp_path / "out")
    entry = manifest["artifacts"]["prices.parquet"]
    assert entry["stage"] == "signal" and entry["schema"] == "PricesSchema" and entry["rows"] == 4
    assert entry["sha256"] == sha256_file(tmp_path / "out" / "prices.parquet")
    assert entry["config_hash"] == "abc" and entry["inputs"] == {str(inputs): sha256_file(inputs)}
    assert entry["started_at"] <= entry["finished_at"]
    assert set(manifest["artifacts"]) == {"prices.parquet", "prices.csv", "positions.csv"}
    # an input inside the output folder is named relative to it, so the folder can be moved
    assert manifest["artifacts"]["positions.csv"]["inputs"] == {"prices.parquet": entry["sha256"]}
    assert manifest["runs"]["trading"]["outputs"] == ["positions.csv"]
    # the writers hash the bytes on their way to disk: every recorded digest is the file's own
    for name, recorded in manifest["artifacts"].items():
        assert recorded["sha256"] == sha256_file(tmp_path / "out" / name), name


def test_digests_of_a_table_written_in_pieces_are_the_files_own(tmp_path):
    # > one CSV piece: rendered on several threads, hashed in order
    big = pd.concat([_prices(5_000, f"{510000 + i}.SH") for i in range(30)], ignore_index=True)
    with stage_run("signal", tmp_path) as run:
        run.write(big, "prices.parquet", PricesSchema)
    for name, recorded in read_manifest(tmp_path)["artifacts"].items():
        assert recorded["sha256"] == sha256_file(tmp_path / name), name


def test_a_tampered_artifact_is_refused_on_read(tmp_path):
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
        run.write_json({"name": "a", "value": 1.0}, "summary.json", Summary)
    csv = tmp_path / "prices.csv"
    csv.write_text(csv.read_text().replace("1.1", "1.2", 1))  # still valid by the schema
    with pytest.raises(IntegrityError, match=r"prices.csv was changed after stage 'signal' wrote it"):
        read_artifact(csv, PricesSchema)
    assert len(read_artifact(csv, PricesSchema, verify_hash=False)) == 3
    assert len(read_artifact(tmp_path / "prices.parquet", PricesSchema)) == 3
    (tmp_path / "summary.json").write_text('{"name": "a", "value": 2.0}')
    with pytest.raises(IntegrityError, match="summary.json"):
        read_json_artifact(tmp_path / "summary.json", Summary)


def test_a_damaged_manifest_is_an_integrity_error(tmp_path):
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
    (tmp_path / "manifest.json").write_text('{"artifacts": ')
    with pytest.raises(IntegrityError, match="manifest.json is damaged"):
        read_artifact(tmp_path / "prices.parquet", PricesSchema)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(IntegrityError, match="is not a trendflow manifest"):
        read_artifact(tmp_path / "prices.parquet", PricesSchema)


def manifest_without_times(folder: Path) -> dict:
    """A folder's manifest without the times a run records (when it started and finished, how long)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in [*manifest["artifacts"].values(), *manifest["runs"].values()]:
        for key in ("started_at", "finished_at", "seconds"):
            entry.pop(key, None)
    return manifest


def test_same_data_and_config_give_byte_identical_files_and_manifest(tmp_path):
    def run_into(folder: Path) -> None:
        source = tmp_path / "input.csv"
        source.write_text("a\n1\n")
        with stage_run("signal", folder, config_hash="cfg") as run:
            run.record_input(source)
            run.write(_prices(30).sample(frac=1, random_state=1).sort_values("date"), "prices.parquet", PricesSchema)
            run.write_json({"name": "x", "value": 0.1}, "summary.json", Summary)

    run_into(tmp_path / "a")
    run_into(tmp_path / "b")
    for name in ("prices.parquet", "prices.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    assert manifest_without_times(tmp_path / "a") == manifest_without_times(tmp_path / "b")


# --------------------------------------------------------------------------- schemas on write and read
def test_a_schema_violation_on_write_names_file_column_and_rows(tmp_path):
    bad = _prices(8)
    bad.loc[[1, 6], "close"] = -1.0
    with pytest.raises(SchemaError) as err:
        with stage_run("signal", tmp_path) as run:
            run.write(bad, "prices.parquet", PricesSchema)
    message = str(err.value)
    assert "prices.parquet does not match schema PricesSchema" in message
    assert "column 'close' fails greater_than(0)" in message
    assert "row 1 (date=2024-01-03, symbol=000001.SZ): -1.0" in message and "row 6 (date=2024-01-10" in message
    assert not any(tmp_path.iterdir())


def test_table_level_and_missing_column_violations_are_named(tmp_path):
    bad = _prices(4)
    bad.loc[2, "high"] = 0.95  # below open and close
    with pytest.raises(SchemaError) as err:
        with stage_run("signal", tmp_path) as run:
            run.write(bad, "prices.parquet", PricesSchema)
    assert "table fails high >= max(open, close): row 2 (date=2024-01-04, symbol=000001.SZ)" in str(err.value)
    with pytest.raises(SchemaError, match="missing column.s.: 'volume'"):
        with stage_run("signal", tmp_path) as run:
            run.write(_prices().drop(columns="volume"), "prices.parquet", PricesSchema)


def test_a_schema_violation_on_read_names_the_file(tmp_path):
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
    csv = tmp_path / "prices.csv"
    csv.write_text(csv.read_text().replace("0.9", "-0.9"))
    with pytest.raises(SchemaError, match=r"prices.csv does not match schema PricesSchema:\n  column 'low' fails"):
        read_artifact(csv, PricesSchema, verify_hash=False)
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SchemaError, match=r"garbage.parquet cannot be read as parquet"):
        read_artifact(tmp_path / "garbage.parquet", PricesSchema)
    with pytest.raises(ArtifactMissingError, match="run the stage that writes it first"):
        read_artifact(tmp_path / "absent.parquet", PricesSchema)


def test_csv_twins_read_back_equal_with_codes_and_dates_intact(tmp_path):
    frame = pd.concat([_prices(3, "000001.SZ"), _prices(3, "510300.SH")], ignore_index=True)
    with stage_run("signal", tmp_path) as run:
        run.write(frame, "prices.parquet", PricesSchema)
    with open(tmp_path / "prices.csv", newline="") as fh:
        assert list(csv.reader(fh))[1] == ["2024-01-02", "000001.SZ", "1", "1.1", "0.9", "1", "10"]
    from_csv = read_artifact(tmp_path / "prices.csv", PricesSchema)
    from_parquet = read_artifact(tmp_path / "prices.parquet", PricesSchema)
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    pd.testing.assert_frame_equal(from_parquet, PricesSchema.validate(frame))


def test_json_artifacts_are_validated_on_write_and_read(tmp_path):
    with pytest.raises(SchemaError, match=r"summary.json does not match Summary"):
        with stage_run("reporting", tmp_path) as run:
            run.write_json({"name": "x", "value": -1.0}, "summary.json", Summary)
    with stage_run("reporting", tmp_path) as run:
        run.write_json(Summary(name="x", value=1.5), "summary.json", Summary)
    assert read_json_artifact(tmp_path / "summary.json", Summary) == Summary(name="x", value=1.5)
    (tmp_path / "other.json").write_text('{"name": "x"}')
    with pytest.raises(SchemaError, match=r"other.json does not match Summary: 'value': Field required"):
        read_json_artifact(tmp_path / "other.json", Summary)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    artifacts.atomic_write_bytes(target, b"old")

    def crash(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        artifacts.atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    artifacts.atomic_write_bytes(target, b"new", fsync=False)
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_validating_a_schema_does_not_import_dask():
    """pandera would import dask.dataframe (~1.3 s) on the first schema build of every command."""
    import subprocess
    import sys

    code = ("import sys; import pandas as pd; from stages.common.artifacts import validate_frame; "
            "from schemas.prices import PricesSchema; "
            "validate_frame(pd.DataFrame({'date': pd.to_datetime(['2024-01-02']), 'symbol': ['A'], 'open': [1.0], "
            "'high': [1.0], 'low': [1.0], 'close': [1.0], 'volume': [0.0]}), PricesSchema, 'x'); "
            "print('dask.dataframe' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "False"


def test_a_csv_rendered_in_pieces_on_threads_equals_one_piece(tmp_path, monkeypatch):
    frame = pd.concat([_prices(40, "000001.SZ"), _prices(33, "510300.SH")], ignore_index=True)
    frame["close"] = [1.0 + i / 7 for i in range(len(frame))]
    frame["high"] = frame["close"] + 0.5
    artifacts._write_csv(frame, tmp_path / "one.csv")
    monkeypatch.setattr(artifacts, "_CSV_ROWS_PER_PIECE", 7)
    artifacts._write_csv(frame, tmp_path / "pieces.csv")
    assert (tmp_path / "pieces.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert (tmp_path / "one.csv").read_text().count("\n") == len(frame) + 1
