"""The warm process (flows/warm.py): stage commands run in a fork of a process that imported their
modules once. Each test runs the real `trendflow` command line against a real warm process on a
Unix socket in a temporary folder, and compares with the same command run in its own process."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_artifacts import manifest_without_times
from tests.test_reliability import _hold

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the warm process needs fork and Unix sockets")

ROOT = Path(__file__).resolve().parents[1]
TRENDFLOW = [sys.executable, "-m", "flows.cli"]


def _env(warm_dir: Path, stats: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRENDFLOW_WARM"}  # conftest turns it off for other tests
    env["TRENDFLOW_WARM_DIR"] = str(warm_dir)
    if stats is not None:
        env["TRENDFLOW_WARM_STATS"] = str(stats)
    env.update(extra)
    return env


def _run(argv: list[str], env: dict, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*TRENDFLOW, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _status(warm_dir: Path, flavor: str = "stages") -> dict | None:
    from flows.warm import _request

    return _request({"op": "status"}, warm_dir, flavor=flavor)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Warm processes of their own (folder, sockets and logs in a temporary folder), stopped after."""
    folder = tmp_path_factory.mktemp("warm")
    started = _run(["warm", "start", "--idle-minutes", "30"], _env(folder), timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr + "".join(p.read_text() for p in folder.glob("*.log"))
    lines = started.stdout.splitlines()
    assert len(lines) == 2 and "ready for signal, trade, report" in lines[0] and "ready for daily" in lines[1], lines
    status = _run(["warm", "status"], _env(folder))
    assert status.returncode == 0 and status.stdout.count("warm process") == 2, status.stdout
    yield folder
    stopped = _run(["warm", "stop"], _env(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped the warm process(es) for signal, trade, report; daily"
    assert _status(folder) is None and _status(folder, "daily") is None and not list(folder.glob("*.sock"))


def _artifacts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"}


def test_stage_commands_run_warm_and_write_what_their_own_process_writes(warm, tmp_path, small_demo_dir):
    """signal, trade (the backtest, then one daily step) and report: the same files, the same exit codes
    and the same lines on the caller's stdout/stderr, with the commands run in the warm process's children."""
    stats = tmp_path / "stats.json"
    runs = {}
    for mode in ("warm", "own"):
        out = tmp_path / mode
        env = _env(warm, stats) if mode == "warm" else _env(warm, stats, TRENDFLOW_WARM="0")
        results = []
        for argv in (["signal", "--data", str(small_demo_dir), "--out", str(out)], ["trade", "--out", str(out)],
                     ["report", "--out", str(out)]):
            stats.unlink(missing_ok=True)
            done = _run(argv, env)
            assert done.returncode == 0, done.stderr
            if mode == "warm":
                record = json.loads(stats.read_text())
                assert record["warm"] is True and record["exit"] == 0 and record["cpu_s"] > 0, record
                assert record["pid"] != os.getpid()
            else:
                assert not stats.exists()  # TRENDFLOW_WARM=0: the warm process is not even asked
            # the log lines (stderr) and the report's path (stdout) reach the caller's own descriptors
            timeless = re.compile(r"\d+\.\d+s\b")
            results.append((timeless.sub("Ts", done.stdout.replace(str(out), "OUT")),
                            [timeless.sub("Ts", line.split(" ", 1)[1].replace(str(out), "OUT")) for line in done.stderr.splitlines()]))
        runs[mode] = results
    for (out_warm, err_warm), (out_own, err_own) in zip(runs["warm"], runs["own"]):
        assert out_warm == out_own
        assert err_warm == err_own
    assert "report: OUT/report.html" in runs["warm"][2][0]
    warm_files, own_files = _artifacts(tmp_path / "warm"), _artifacts(tmp_path / "own")
    assert set(warm_files) == set(own_files) and {"signals_output.parquet", "equity_curve.parquet", "report.html"} <= set(warm_files)
    assert warm_files == own_files  # every file byte for byte, report.html included
    assert manifest_without_times(tmp_path / "warm") == manifest_without_times(tmp_path / "own")
    status = _status(warm)
    assert status["served"] >= 3 and status["running"] == 0


def test_errors_help_and_usage_are_those_of_the_command_in_its_own_process(warm, tmp_path):
    stats = tmp_path / "stats.json"
    cases = [["signal", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")],
             ["trade", "--bogus"], ["report", "--help"], ["trade", "--out", str(tmp_path / "empty")]]
    for argv in cases:
        stats.unlink(missing_ok=True)
        warm_run = _run(argv, _env(warm, stats))
        assert json.loads(stats.read_text())["warm"] is True
        own = _run(argv, _env(warm, None, TRENDFLOW_WARM="0"))
        assert (warm_run.returncode, warm_run.stdout, warm_run.stderr) == (own.returncode, own.stdout, own.stderr), argv
    assert _run(cases[0], _env(warm)).stderr.strip() == f"error: data source {tmp_path / 'missing'} does not exist"


def test_the_command_runs_in_its_own_process_when_the_warm_one_would_differ(warm, tmp_path, small_demo_dir):
    """A different import-time environment, or a matplotlibrc in the working folder: not warm, said why,
    and the command still runs (in its own process)."""
    stats = tmp_path / "stats.json"
    done = _run(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path / "a")], _env(warm, stats, OMP_NUM_THREADS="3"))
    assert done.returncode == 0, done.stderr
    record = json.loads(stats.read_text())
    assert record == {"warm": False, "reason": "environment differs from the warm process's in OMP_NUM_THREADS"}
    (tmp_path / "matplotlibrc").write_text("lines.linewidth: 7\n")
    done = _run(["trade", "--out", str(tmp_path / "a")], _env(warm, stats), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(stats.read_text())["reason"] == "the working folder's matplotlibrc differ from the warm process's (read at import)"
    assert _status(warm)["last_fallback"].startswith("the working folder's matplotlibrc")
    # no warm process at all: the same, silently
    done = _run(["trade", "--out", str(tmp_path / "a")], _env(tmp_path / "nowhere", stats))
    assert done.returncode == 0 and json.loads(stats.read_text()) == {"warm": False, "reason": "no warm process"}


def _waiting_command(warm: Path, folder: Path, data: Path) -> subprocess.Popen:
    """`trendflow signal --wait` on a folder whose lock another process holds: it runs (warm) and waits."""
    command = subprocess.Popen([*TRENDFLOW, "signal", "--wait", "--data", str(data), "--out", str(folder)], cwd=ROOT,
                               env=_env(warm), stderr=subprocess.PIPE, text=True)
    assert "waiting (--wait)" in command.stderr.readline()
    assert _status(warm)["running"] == 1
    return command


def test_ctrl_c_reaches_the_command_and_a_killed_caller_takes_its_command_with_it(warm, tmp_path, small_demo_dir):
    holder = _hold(tmp_path)
    try:
        command = _waiting_command(warm, tmp_path, small_demo_dir)
        command.send_signal(signal.SIGINT)  # what Ctrl-C sends the caller
        assert command.wait(timeout=30) == 130
        assert command.stderr.read().strip().splitlines()[-1] == "interrupted"

        command = _waiting_command(warm, tmp_path, small_demo_dir)
        command.kill()
        command.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _status(warm)["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(warm)["running"] == 0  # the warm process stopped the orphaned command
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    assert not (tmp_path / "signals_output.parquet").exists() and not list(tmp_path.glob(".staging/*"))


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(condition, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _job_control_stops_work() -> bool:
    """Whether SIGTSTP stops a child of this process: the kernel discards it in an orphaned process
    group (e.g. tests run by a detached CI job), for a command in its own process as for a caller."""
    probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)
        probe.send_signal(signal.SIGTSTP)
        return _until(lambda: _state(probe.pid) == "T", 2)
    finally:
        probe.kill()
        probe.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_z_stops_the_command_exactly_when_it_stops_its_caller(warm, tmp_path, small_demo_dir):
    stops = _job_control_stops_work()
    holder = _hold(tmp_path)
    try:
        command = _waiting_command(warm, tmp_path, small_demo_dir)
        (child,) = _status(warm)["children"]
        command.send_signal(signal.SIGTSTP)  # Ctrl-Z
        if stops:  # both stop, and `fg` continues both
            assert _until(lambda: _state(command.pid) == "T" and _state(child) == "T"), (_state(command.pid), _state(child))
            command.send_signal(signal.SIGCONT)
        # where the caller does not stop, neither does the command (it is continued at once)
        assert _until(lambda: _state(command.pid) != "T" and _state(child) != "T"), (_state(command.pid), _state(child))
        time.sleep(0.3)
        assert _state(command.pid) != "T" and _state(child) != "T"
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=30) == 130
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)


def test_a_changed_project_file_stops_the_warm_process_and_the_command_runs_in_its_own(tmp_path, small_demo_dir):
    folder = tmp_path / "warm"
    assert _run(["warm", "start", "--only", "stages"], _env(folder)).returncode == 0
    touched = ROOT / "stages" / "__init__.py"
    before = touched.stat()
    stats = tmp_path / "stats.json"
    try:
        os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        done = _run(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path / "out")], _env(folder, stats))
    finally:
        os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns))
        _run(["warm", "stop"], _env(folder))
    assert done.returncode == 0, done.stderr
    assert json.loads(stats.read_text())["reason"].startswith("the project's code, config folder or installed packages changed")
    deadline = time.monotonic() + 30
    while (folder / "warm.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (folder / "warm.sock").exists() and "stopping" in (folder / "warm.log").read_text()
    status = _run(["warm", "status", "--only", "stages"], _env(folder))
    assert status.returncode == 1 and "no warm process" in status.stdout


def test_daily_runs_warm_with_prefect_imported_once_and_writes_what_its_own_process_writes(warm, tmp_path, small_demo_dir):
    """`trendflow daily` in the daily warm process (Prefect imported there once): the same artifacts and
    terminal lines as in its own process, and a Completed flow run (the run's exit code 0 says so)."""
    stats = tmp_path / "stats.json"
    outputs = {}
    for mode in ("warm", "own"):
        out = tmp_path / mode
        env = _env(warm, stats) if mode == "warm" else _env(warm, stats, TRENDFLOW_WARM="0")
        stats.unlink(missing_ok=True)
        done = _run(["daily", "--data", str(small_demo_dir), "--out", str(out), "--fresh"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        if mode == "warm":
            assert json.loads(stats.read_text())["warm"] is True
        timeless = re.compile(r"\d+\.\d+s\b|trendflow_\d{8}_\d{6}\.log|^\d\d:\d\d:\d\d ", re.M)
        outputs[mode] = [timeless.sub("T", text.replace(str(out), "OUT")) for text in (done.stdout, done.stderr)]
    assert outputs["warm"] == outputs["own"] and "trendflow daily run finished in T; artifacts in OUT" in outputs["warm"][0]
    warm_files, own_files = _artifacts(tmp_path / "warm"), _artifacts(tmp_path / "own")
    assert set(warm_files) == set(own_files) and any(n.startswith("portfolio_") for n in warm_files)
    assert warm_files == own_files
    assert _status(warm, "daily")["served"] >= 1


def test_daily_runs_in_its_own_process_when_prefect_would_read_other_settings(warm, tmp_path):
    stats = tmp_path / "stats.json"
    done = _run(["daily", "--help"], _env(warm, stats, PREFECT_LOGGING_LEVEL="DEBUG"))
    assert done.returncode == 0 and json.loads(stats.read_text())["reason"] == \
        "environment differs from the warm process's in PREFECT_LOGGING_LEVEL"
    (tmp_path / "prefect.toml").write_text("[logging]\nlevel = 'DEBUG'\n")
    done = _run(["daily", "--help"], _env(warm, stats), cwd=tmp_path)
    assert done.returncode == 0 and json.loads(stats.read_text())["reason"] == \
        "the working folder's prefect.toml differ from the warm process's (read at import)"
    (tmp_path / "prefect.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no [tool.prefect]: nothing Prefect reads
    done = _run(["daily", "--help"], _env(warm, stats), cwd=tmp_path)
    assert done.returncode == 0 and json.loads(stats.read_text())["warm"] is True


def test_a_killed_warm_process_leaves_a_socket_that_is_passed_over_and_replaced(tmp_path, small_demo_dir):
    folder = tmp_path / "warm"
    assert _run(["warm", "start", "--only", "stages"], _env(folder)).returncode == 0
    os.kill(_status(folder)["pid"], signal.SIGKILL)
    time.sleep(0.2)
    assert (folder / "warm.sock").exists()
    stats = tmp_path / "stats.json"
    done = _run(["signal", "--data", str(small_demo_dir), "--out", str(tmp_path / "out")], _env(folder, stats))
    assert done.returncode == 0, done.stderr
    assert json.loads(stats.read_text())["reason"].startswith("warm process did not answer")
    try:
        started = _run(["warm", "start", "--only", "stages"], _env(folder))
        assert started.returncode == 0 and "ready for signal, trade, report" in started.stdout, started.stdout
        done = _run(["trade", "--out", str(tmp_path / "out")], _env(folder, stats))
        assert done.returncode == 0 and json.loads(stats.read_text())["warm"] is True
    finally:
        _run(["warm", "stop"], _env(folder))


def test_a_folder_that_cannot_be_used_is_one_error_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    done = _run(["warm", "start"], _env(tmp_path / "file" / "warm"))
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.strip() == (f"error: cannot use {tmp_path / 'file' / 'warm'} for the warm processes: Not a directory "
                                   "(set TRENDFLOW_WARM_DIR to a folder of yours)")


def test_a_malformed_request_is_dropped_and_the_warm_process_goes_on(warm):
    import socket

    from flows.warm import socket_path

    for payload in (b"\x00\x00\x00\x05nope!", b"\x00\x00\x00\x02[]", b"\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(socket_path(warm)))
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""  # closed without an answer
    assert _status(warm)["pid"] and "a connection failed" in (warm / "warm.log").read_text()
