"""Crash safety: a writer killed (SIGKILL) at any step of a stage's commit leaves the folder equal to
the previous or the new generation once the next command has recovered it, `validate` agrees, and
no temp file survives."""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import time
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
    status = wait_bounded(pid)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def wait_bounded(pid: int, seconds: float = 60.0) -> int:
    """os.waitpid with a deadline: a forked child that hangs fails the test instead of the CI run."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} did not finish in {seconds:g}s")


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


# --------------------------------------------------------------------------- one writer per folder
TRENDFLOW = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parents[1]
_HOLDER = ("import sys; from stages.common.folder_lock import writing\n"
           "with writing(sys.argv[1], command='trendflow run --out test'):\n"
           "    print('holding', flush=True); sys.stdin.readline()\n")


def _hold(folder: Path) -> subprocess.Popen:
    """A second real process holding `folder`'s write lock until a line is written to its stdin."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_writer_is_refused_with_one_line_naming_the_holder(tmp_path, small_demo_dir):
    holder = _hold(tmp_path)
    try:
        done = subprocess.run([*TRENDFLOW, "signal", "--data", str(small_demo_dir), "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path} is being written by pid {holder.pid} (trendflow run --out test, since "
        + done.stderr.split("since ", 1)[1].split(")")[0] + "); wait for it to finish or rerun with --wait"]
    assert not (tmp_path / "signals_output.parquet").exists()


def test_with_wait_the_second_writer_runs_when_the_first_is_done(tmp_path, small_demo_dir):
    holder = _hold(tmp_path)
    waiter = subprocess.Popen([*TRENDFLOW, "signal", "--wait", "--data", str(small_demo_dir), "--out", str(tmp_path)],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        first = waiter.stderr.readline()
        assert f"is being written by pid {holder.pid}" in first and "waiting (--wait)" in first
        assert waiter.poll() is None and not (tmp_path / "signals_output.parquet").exists()
        holder.communicate("done\n", timeout=30)  # the first writer finishes ...
        rest = waiter.communicate(timeout=120)[1]
    finally:
        holder.kill()
        waiter.kill()
    assert holder.returncode == 0 and waiter.returncode == 0, rest  # ... and the second one runs
    assert (tmp_path / "signals_output.parquet").exists()
    assert not (tmp_path / ".trendflow.lock").exists()  # released and removed


def test_the_lock_of_a_killed_writer_is_detected_as_stale_and_taken_over(tmp_path, small_demo_dir):
    holder = _hold(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".trendflow.lock").exists()  # the killed process could not clean up ...
    done = subprocess.run([*TRENDFLOW, "signal", "--data", str(small_demo_dir), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # ... but the OS released its lock
    assert f"the lock of pid {holder.pid} (trendflow run --out test" in done.stderr
    assert "was left by a process that is no longer running; taken over" in done.stderr


def test_a_run_stopped_between_its_stages_leaves_a_manifest_that_says_which_stages_are_current(tmp_path, small_demo_dir,
                                                                                                capsys):
    """A killed `trendflow run` between signal and trading: the new signals are committed, trading and
    reporting still hold the previous run's consistent files, and the manifest tells them apart."""
    from stages.common.config import load_config
    from stages.reporting.stage import run_reporting_stage
    from stages.signal.stage import run_signal_stage
    from stages.trading.stage import run_trading_stage

    config = load_config()
    run_signal_stage(config, small_demo_dir, tmp_path)
    run_trading_stage(config, tmp_path, tmp_path)
    run_reporting_stage(config, tmp_path, tmp_path)
    assert trendflow(["validate", str(tmp_path)]) == 0
    assert "not current" not in capsys.readouterr().out
    run_signal_stage(load_config(overrides=["strategy.combo_mode=either"]), small_demo_dir, tmp_path)  # then killed
    assert trendflow(["validate", str(tmp_path)]) == 0  # every file is the one its manifest entry describes
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note")]
    assert len(notes) == 2
    assert any("stage 'trading' is not current" in n and "earlier signals_output.parquet" in n for n in notes)
    assert any("stage 'reporting' is not current" in n for n in notes)


# --------------------------------------------------------------------------- every fault a line
@pytest.fixture(scope="module")
def signals_dir(tmp_path_factory, small_demo_dir) -> Path:
    from stages.common.config import load_config
    from stages.signal.stage import run_signal_stage

    folder = tmp_path_factory.mktemp("signals")
    run_signal_stage(load_config(), small_demo_dir, folder)
    return folder


@pytest.mark.parametrize("code, exit_code, said", [(errno.EROFS, 2, "the file system is read-only"),
                                                   (errno.EACCES, 2, "permission denied"),
                                                   (errno.ENOSPC, 3, "no space left on the device")])
def test_an_os_fault_while_writing_is_one_line_with_the_path_and_nothing_changes(signals_dir, tmp_path, monkeypatch,
                                                                                   capsys, code, exit_code, said):
    folder = tmp_path / "out"
    shutil.copytree(signals_dir, folder)
    before = _files(folder)

    def refuses(df, path, kind):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(artifacts, "_write_table", refuses)
    assert trendflow(["trade", "--out", str(folder), "--log-level", "WARNING"]) == exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot write {folder / 'trade_log.csv'}: {said}"]
    assert _files(folder) == before and not leftovers(folder)


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, small_demo_dir, capsys):
    (tmp_path / "out").write_text("a file")
    assert trendflow(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot create the output folder {tmp_path / 'out'}: "
                                               "a file stands where a folder is expected")


@pytest.mark.parametrize("override, key", [("execution.lot_size=1000000000000000000", "'execution.lot_size'"),
                                           ('scoring.momentum_weights={"1000000000": 1.0}', "momentum_weights key '1000000000'"),
                                           ("risk.atr_window=1000000000", "'risk.atr_window'")])
def test_config_values_where_the_arithmetic_breaks_are_refused_naming_the_key(tmp_path, small_demo_dir, capsys,
                                                                              override, key):
    assert trendflow(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and len(err.strip().splitlines()) == 1


def test_an_account_too_small_for_one_lot_runs_and_says_so(signals_dir, tmp_path, capsys):
    folder = tmp_path / "out"
    shutil.copytree(signals_dir, folder)
    assert trendflow(["trade", "--out", str(folder), "--set", "execution.initial_cash=50"]) == 0
    err = capsys.readouterr().err
    assert "account too small: execution.initial_cash 50.00 cannot buy one lot (execution.lot_size 100 shares)" in err
    assert (folder / "equity_curve.parquet").exists()


# --------------------------------------------------------------------------- input edges
def _price_csv(path: Path, dates: list[str]) -> None:
    rows = [f"{d},10,10.5,9.5,10,1000" for d in dates]
    path.write_text("date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")


def test_time_zoned_dates_keep_their_local_calendar_day(tmp_path):
    from stages.common.market_data import load_market_data

    _price_csv(tmp_path / "AAA.csv", ["2020-01-02T00:00:00+08:00", "2020-01-03T00:00:00+08:00"])
    _price_csv(tmp_path / "BBB.csv", ["2020-01-02T00:00:00+08:00", "2020-01-03T09:30:00-05:00", "2020-01-06T00:00:00Z"])
    prices = load_market_data(tmp_path).prices
    days = {s: [str(d.date()) for d in g["date"]] for s, g in prices.groupby("symbol")}
    assert days == {"AAA": ["2020-01-02", "2020-01-03"], "BBB": ["2020-01-02", "2020-01-03", "2020-01-06"]}


@pytest.mark.parametrize("layout", ["same", "data_inside_out", "out_inside_data"])
def test_out_and_data_may_not_overlap(tmp_path, small_demo_dir, capsys, layout):
    data = tmp_path / "prices"
    shutil.copytree(small_demo_dir, data)
    out = {"same": data, "data_inside_out": tmp_path, "out_inside_data": data / "out"}[layout]
    before = sorted(p.name for p in data.iterdir())
    assert trendflow(["signal", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --data {data} ") and "keep prices and artifacts in separate" in err[0]
    assert sorted(p.name for p in data.iterdir() if p.name != ".trendflow.lock") == before


def test_a_folder_among_the_price_files_is_a_warning_and_a_link_out_of_the_folder_is_refused_unread(tmp_path, capsys,
                                                                                                       caplog):
    from stages.common.errors import DataError
    from stages.common.market_data import load_market_data

    data = tmp_path / "prices"
    data.mkdir()
    _price_csv(data / "AAA.csv", ["2020-01-02", "2020-01-03"])
    (data / "XYZ.csv").mkdir()
    with caplog.at_level("WARNING"):
        assert load_market_data(data).symbols == ["AAA"]
    assert f"{data / 'XYZ.csv'} is not a file" in caplog.text
    secret = tmp_path / "secret.csv"
    secret.write_text("TOP SECRET, never print me\n")
    (data / "EVIL.csv").symlink_to(secret)
    with pytest.raises(DataError) as err:
        load_market_data(data)
    assert f"{data / 'EVIL.csv'} is a symbolic link to a file outside the data folder" in str(err.value)
    assert "SECRET" not in str(err.value)


def test_a_shorter_rerun_retires_the_dated_artifacts_of_an_earlier_longer_run(signals_dir, tmp_path):
    from schemas.trading import OrdersSchema
    from stages.common.artifacts import read_artifact, read_manifest
    from stages.common.config import load_config
    from stages.reporting.stage import _latest_orders
    from stages.trading.stage import run_trading_stage

    folder = tmp_path / "out"
    shutil.copytree(signals_dir, folder)
    run_trading_stage(load_config(), folder, folder)
    last = max(p.name for p in folder.glob("orders_*.csv"))
    later = read_artifact(folder / last, OrdersSchema)
    with stage_run("trading", folder) as run:  # what a run over a longer history left behind
        run.write(later, "orders_2031-01-06.csv", OrdersSchema)
        run.write_text("{}", "portfolio_2031-01-06.json")
    run_trading_stage(load_config(), folder, folder)
    assert not (folder / "orders_2031-01-06.csv").exists() and not (folder / "portfolio_2031-01-06.json").exists()
    manifest = read_manifest(folder)
    assert "orders_2031-01-06.csv" not in manifest["artifacts"]
    assert manifest["runs"]["trading"]["removed"] == ["orders_2031-01-06.csv", "portfolio_2031-01-06.json"]
    assert _latest_orders(folder).name == last  # the report shows this run's orders


@pytest.mark.parametrize("row, said", [("2020-13-45,1,1.2,0.9,1.1,10", "unparseable date at line 3 ('2020-13-45')"),
                                       ("2020-01-03,abc,1.2,0.9,1.1,10", "missing or non-numeric price at line 3 (open='abc')"),
                                       ("2020-01-03,1,1.2,0.9,1.1,n/a", "missing or non-numeric volume at line 3 (volume missing)")])
def test_a_bad_row_is_named_by_line_and_value(tmp_path, row, said):
    from stages.common.errors import DataError
    from stages.common.market_data import load_market_data

    (tmp_path / "AAA.csv").write_text(f"date,open,high,low,close,volume\n2020-01-02,1,1.2,0.9,1.1,10\n{row}\n"
                                      "2020-01-06,1,1.2,0.9,1.1,10\n")
    with pytest.raises(DataError) as err:
        load_market_data(tmp_path)
    assert f"{tmp_path / 'AAA.csv'}: 1 bad row(s): {said}" in str(err.value)


def test_a_too_short_history_is_a_warning_naming_the_symbol(tmp_path, small_demo_dir, caplog):
    from stages.common.config import load_config
    from stages.signal.stage import run_signal_stage

    data = tmp_path / "prices"
    shutil.copytree(small_demo_dir, data)
    first = sorted(data.glob("*.csv"))[0].read_text().splitlines()
    (data / "NEW.SH.csv").write_text("\n".join(first[:1] + first[-3:]) + "\n")  # listed three sessions ago
    with caplog.at_level("WARNING"):
        run_signal_stage(load_config(), data, tmp_path / "out")
    assert "short history: NEW.SH has 3 session(s)" in caplog.text and "its momentum score needs 121" in caplog.text


# --------------------------------------------------------------------------- snapshots signed by their run
def test_a_hand_edited_snapshot_is_refused_naming_it_unless_accepted_and_logged(tmp_path, small_demo_dir, capsys):
    import json

    out = tmp_path / "live"
    days = sorted(pd.read_csv(sorted(small_demo_dir.glob("*.csv"))[0])["date"])[-2:]
    assert trendflow(["signal", "--data", str(small_demo_dir), "--out", str(out), "--as-of-date", days[0]]) == 0
    assert trendflow(["trade", "--out", str(out), "--as-of-date", days[0], "--fresh"]) == 0
    snapshot = out / f"portfolio_{days[0]}.json"
    edited = json.loads(snapshot.read_text())
    edited["cash"] += 1000.0
    edited["total_value"] += 1000.0
    snapshot.write_text(json.dumps(edited, indent=2, sort_keys=True) + "\n")
    assert trendflow(["signal", "--data", str(small_demo_dir), "--out", str(out), "--as-of-date", days[1]]) == 0
    capsys.readouterr()
    before = _files(out)
    assert trendflow(["trade", "--out", str(out), "--as-of-date", days[1]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: portfolio snapshot {snapshot} is damaged: {snapshot} was changed after stage 'trading'")
    assert "--accept-edited-snapshot" in err and _files(out) == before  # nothing written
    assert trendflow(["daily", "--data", str(small_demo_dir), "--out", str(out), "--as-of-date", days[1]]) == 2
    assert "is damaged" in capsys.readouterr().err and _files(out) == before  # daily: refused before any stage
    assert trendflow(["trade", "--out", str(out), "--as-of-date", days[1], "--accept-edited-snapshot"]) == 0
    assert f"--accept-edited-snapshot: resuming from the edited portfolio snapshot {snapshot}" in capsys.readouterr().err
    assert json.loads((out / f"portfolio_{days[1]}.json").read_text())["cash"] >= 1000.0


# --------------------------------------------------------------------------- no orphans
@pytest.mark.skipif(sys.platform != "linux", reason="the watchdog reads /proc")
def test_the_processes_a_killed_command_started_die_with_it(tmp_path):
    """What keeps Prefect's temporary server (a child process) from outliving a SIGKILLed run."""
    script = ("import subprocess, sys, time\n"
              "from flows.orphan_guard import guard_children\n"
              "guard_children()\n"
              "server = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              "time.sleep(1.0)\n"  # the watchdog polls twice a second
              "print(server.pid, flush=True)\n"
              "time.sleep(120)\n")
    command = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server = int(command.stdout.readline())
    command.send_signal(signal.SIGKILL)
    command.wait()

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 15
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = running(server)
    if alive:
        os.kill(server, signal.SIGKILL)
    assert not alive, "the child of a killed command outlived it"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_artifacts_are_written_with_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _old_generation(tmp_path)
    finally:
        os.umask(old)
    for name in ("prices.parquet", "prices.csv", "signal_state.txt", "manifest.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_taking_the_lock_recovers_what_a_killed_writer_left_in_the_folder_and_its_subfolders(tmp_path, capsys):
    from stages.common.folder_lock import writing

    _old_generation(tmp_path)
    old = _files(tmp_path)
    inner = tmp_path / "combos" / "c1"
    _old_generation(inner)
    inner_old = _files(inner)
    assert _write_killed_at(tmp_path, None, before_manifest=True) and _write_killed_at(inner, None, before_manifest=True)
    assert leftovers(tmp_path) and leftovers(inner)
    with writing(tmp_path):
        pass
    assert _files(tmp_path) == old and _files(inner) == inner_old and not leftovers(tmp_path) and not leftovers(inner)


def test_readers_see_the_previous_generation_until_the_manifests_rename(tmp_path):
    """New files already in place under the old manifest (a commit in flight, or its writer killed
    there): trendflow's readers read the previous files the manifest describes, not a mix."""
    from stages.common.artifacts import read_artifact

    _old_generation(tmp_path)
    old = {name: read_artifact(tmp_path / name, PricesSchema) for name in ("prices.parquet", "prices.csv")}
    assert _write_killed_at(tmp_path, None, before_manifest=True)
    assert len(pd.read_parquet(tmp_path / "prices.parquet")) == 5  # the new file is at the name ...
    for name, frame in old.items():  # ... but readers get the generation the manifest names
        pd.testing.assert_frame_equal(read_artifact(tmp_path / name, PricesSchema), frame)
    recover(tmp_path)
    pd.testing.assert_frame_equal(read_artifact(tmp_path / "prices.parquet", PricesSchema), old["prices.parquet"])


def test_a_snapshot_path_that_is_a_folder_is_one_line(signals_dir, tmp_path, capsys):
    folder = tmp_path / "out"
    shutil.copytree(signals_dir, folder)
    day = str(pd.read_parquet(folder / "prices.parquet")["date"].max().date())
    (tmp_path / "snap").mkdir()
    assert trendflow(["trade", "--out", str(folder), "--as-of-date", day, "--portfolio", str(tmp_path / "snap"),
                      "--log-level", "WARNING"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: portfolio snapshot {tmp_path / 'snap'} is a folder, not a snapshot file (give --portfolio FILE)")


def test_a_daily_run_on_an_account_too_small_for_one_lot_runs_and_says_so(signals_dir, tmp_path, capsys):
    folder = tmp_path / "out"
    shutil.copytree(signals_dir, folder)
    day = str(pd.read_parquet(folder / "prices.parquet")["date"].max().date())
    assert trendflow(["trade", "--out", str(folder), "--as-of-date", day, "--fresh",
                      "--set", "execution.initial_cash=50"]) == 0
    err = capsys.readouterr().err
    assert "account too small: cash 50.00 cannot buy one lot (execution.lot_size 100 shares)" in err
    assert f"no orders for {day}" in err and (folder / f"portfolio_{day}.json").exists()
