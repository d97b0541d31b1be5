"""The shared local Prefect server (flows/local_server.py): started once, reused while it answers,
stopped by `trendflow server stop` or by itself when idle, so none outlives its use. One real server
in a temporary PREFECT_HOME, with a 12-second idle limit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _trendflow(home: Path, *args: str, idle_minutes: str = "0.2") -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home), "TRENDFLOW_SERVER_IDLE_MINUTES": idle_minutes}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_shared_server_is_started_once_reused_and_stops_when_idle(tmp_path):
    from flows.local_server import healthy, read_record, stop_server

    home = tmp_path / "prefect_home"
    assert _trendflow(home, "server", "status").returncode == 1
    try:
        first = _trendflow(home, "server", "start")
        assert first.returncode == 0, first.stderr
        assert "starting a local Prefect server on http://127.0.0.1:" in first.stdout
        record = read_record(home)
        assert healthy(record["url"]) and _alive(record["pid"])
        again = _trendflow(home, "server", "start")  # a later run: reused, not started again
        assert "(shared local server, reused;" in again.stdout and read_record(home)["pid"] == record["pid"]
        status = _trendflow(home, "server", "status")
        assert status.returncode == 0 and status.stdout.startswith(f"running: {record['url']} (pid {record['pid']}")
        # idle for 12 s (no run touches the record): the server stops itself and removes its record
        deadline = time.monotonic() + 60
        while _alive(record["pid"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(record["pid"]) and read_record(home) is None and not healthy(record["url"], timeout=0.5)
    finally:
        stop_server(home, quiet=True)
    assert _trendflow(home, "server", "stop").stdout.strip() == "no local Prefect server is recorded"


def test_a_record_whose_server_is_gone_is_replaced_not_trusted(tmp_path):
    from flows.local_server import RECORD_NAME, running_url, stop_server

    home = tmp_path / "prefect_home"
    home.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / RECORD_NAME).write_text(json.dumps({"pid": dead.pid, "port": 9, "url": "http://127.0.0.1:9/api"}))
    assert running_url(home) is None  # nothing answers there: a run would start a new server
    assert stop_server(home, quiet=True) is False and not (home / RECORD_NAME).exists()


def test_a_serving_process_keeps_the_shared_server_from_idling_out(tmp_path, monkeypatch):
    from flows.local_server import RECORD_NAME, keep_alive

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    record = tmp_path / RECORD_NAME
    record.write_text(json.dumps({"pid": 1, "port": 9, "url": "http://127.0.0.1:9/api"}))
    os.utime(record, (time.time() - 3600, time.time() - 3600))  # last used an hour ago
    keep_alive(every=0.05)
    deadline = time.monotonic() + 10
    while time.time() - record.stat().st_mtime > 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - record.stat().st_mtime < 60


def test_the_shared_server_home_defaults_to_the_project_whatever_the_working_directory(tmp_path, monkeypatch):
    """No PREFECT_HOME and a working directory outside the project (cron, a shell in /tmp): the run
    finds the project's `.prefect` and its server, analytics off -- not a KeyError."""
    import flows.local_server as local_server
    from flows.commands import _api_url

    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("TRENDFLOW_PREFECT_SERVER", "shared")
    monkeypatch.chdir(tmp_path)
    used = []
    monkeypatch.setattr(local_server, "running_url", lambda home=None: used.append(home) or "http://127.0.0.1:9/api")
    assert _api_url("trendflow daily") == "http://127.0.0.1:9/api"  # a recorded server that answers: reused
    assert used == [PROJECT_ROOT / ".prefect"]
    assert os.environ["PREFECT_HOME"] == str(PROJECT_ROOT / ".prefect")
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_trendflow_daily_runs_from_any_working_directory_without_prefect_home(tmp_path, small_demo_dir):
    """`cd /tmp && trendflow daily ...` with no PREFECT_HOME: the shared server of the project (here a
    copy of it, so the test's server is its own) is started, the run completes, `server stop` stops it."""
    import shutil

    project = tmp_path / "project"
    for part in ("flows", "stages", "schemas", "trendflow", "config"):
        shutil.copytree(PROJECT_ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(project), "TRENDFLOW_PREFECT_SERVER": "shared",
           "TRENDFLOW_SERVER_IDLE_MINUTES": "2", "TRENDFLOW_WEBHOOK_URL": ""}
    for name in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(name, None)

    def trendflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=240)

    try:
        daily = trendflow("daily", "--data", str(small_demo_dir), "--out", "out", "--fresh")
        assert daily.returncode == 0, daily.stdout + daily.stderr
        assert "Traceback" not in daily.stderr and "trendflow daily run finished" in daily.stdout
        assert "starting a local Prefect server" in daily.stdout
        assert (project / ".prefect" / "trendflow-server.json").is_file()
        assert (elsewhere / "out" / "manifest.json").is_file()
    finally:
        stopped = trendflow("server", "stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped the local Prefect server"), stopped.stdout
