"""Crash safety: a writer killed (SIGKILL) at any step of a stage's commit leaves the folder equal to
the previous or the new generation once the next command has recovered it, `validate` agrees, and
no temp file survives."""
from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main as trendflow
from schemas.prices import PricesSchema
from stages.common import artifacts
from stages.common.artifacts import leftovers, recover, stage_run

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="kills a forked writer")


def _prices(n: int, close: float) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.bdate_range("2024-01-02", periods=n), "symbol": "510300.SH",
                         "open": close, "high": close + 0.1, "low": close - 0.1, "close": close, "volume": 10.0})


def _old_generation(folder: Path) -> None:
    with stage_run("signal", folder, config_hash="old") as run:
        run.write(_prices(3, 1.0), "prices.parquet", PricesSchema)
        run.write(_prices(3, 1.0), "other_prices.parquet", PricesSchema)
        run.write_text("old state\n", "signal_state.txt")
        run.write_text("retired by the next run\n", "old_extra.txt")


def _new_generation(folder: Path) -> None:
    with stage_run("signal", folder, config_hash="new") as run:
        run.write(_prices(5, 2.0), "prices.parquet", PricesSchema)
        run.write(_prices(5, 2.0), "other_prices.parquet", PricesSchema)
        run.write_text("new state\n", "signal_state.txt")
        run.write_text("only in the new run\n", "new_extra.txt")
        run.retire("old_extra.txt")


def _files(folder: Path) -> dict[str, bytes]:
    """The artifact files a user sees (the manifest is compared through `validate`: it holds times)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".trendflow.lock")}


# the steps of writing and committing a generation; the writer is killed just before the n-th call
STEPS = ("_write_table", "_fsync", "atomic_write_bytes", "_keep_previous", "_fsync_dir", "_replace", "_remove_generation")


def _write_killed_at(folder: Path, step: int | None, before_manifest: bool = False) -> bool:
    """Run `_new_generation` in a forked child killed before its `step`-th step (or just before the
    manifest's rename, the commit point); True if it was killed."""
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            calls = [0]

            def counted(real):
                def call(*args, **kwargs):
                    calls[0] += 1
                    at_commit_point = before_manifest and real.__name__ == "_replace" and Path(args[1]) == folder / "manifest.json"
                    if calls[0] == step or at_commit_point:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)
                return call

            artifacts._WRITER_THREADS = 1
            for name in STEPS:
                setattr(artifacts, name, counted(getattr(artifacts, name)))
            _new_generation(folder)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_writer_killed_at_every_step_of_a_commit_leaves_the_old_or_the_new_generation(tmp_path, capsys):
    reference_old, reference_new = tmp_path / "old", tmp_path / "new"
    _old_generation(reference_old)
    old = _files(reference_old)
    _old_generation(reference_new)
    _new_generation(reference_new)
    new = _files(reference_new)
    seen = {"old": 0, "new": 0}
    step = 0
    while True:
        step += 1
        folder = tmp_path / f"kill{step}"
        shutil.copytree(reference_old, folder)
        killed = _write_killed_at(folder, step)
        recover(folder)  # what the next command writing this folder does first
        files = _files(folder)
        assert files in (old, new), f"killed before step {step}: a mix of generations {sorted(files)}"
        seen["old" if files == old else "new"] += 1
        assert not leftovers(folder), f"killed before step {step}: {leftovers(folder)}"
        assert trendflow(["validate", str(folder)]) == 0, capsys.readouterr().out
        capsys.readouterr()
        if not killed:
            break
    assert step > 15 and seen["old"] > 5 and seen["new"] >= 2  # every step was a kill point, both outcomes seen


def test_a_writer_killed_just_before_its_commit_point_fails_validate_until_recovered(tmp_path, capsys):
    """Every new file is in place but the manifest is still the old one: validate says the folder
    disagrees with its manifest; the recovery puts the previous files back."""
    _old_generation(tmp_path)
    old = _files(tmp_path)
    assert _write_killed_at(tmp_path, None, before_manifest=True)
    assert _files(tmp_path)["prices.parquet"] != old["prices.parquet"]
    assert trendflow(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "left by an interrupted write" in out and re.search(rf"{re.escape(str(tmp_path / 'prices.parquet'))}: \d+ bytes, but manifest.json records", out)
    assert recover(tmp_path) and _files(tmp_path) == old and not leftovers(tmp_path)
    assert trendflow(["validate", str(tmp_path)]) == 0
