"""The flow against a real `prefect server start` on loopback, as a user with a Prefect UI runs it.
Every outcome is read back through the server's REST API.

- `trendflow run` in its own process with PREFECT_API_URL set: the flow run, its task runs, its artifact;
- the README's daily example, as written, right after a quick start;
- `trendflow serve` with a schedule due within a minute: a Completed flow run; the README's two serve
  commands register their Cron schedules in their time zones; Ctrl-C is one line, exit 0, schedule active;
- the README's deployment block (server, work pool, `prefect deploy --all`, worker): the cron
  deployment gets scheduled runs, and the worker takes a run to Completed.

Each test is bounded (deadlines below) and kills what it started."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None, attempts: int = 5):
    """One call of the server's REST API. A 503 is retried, as Prefect's own client does: the server
    answers it when its SQLite database is busy (the scheduler and a worker write beside us), and the
    request's transaction was rolled back (seen once in CI on create_flow_run)."""
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server on 127.0.0.1 with its own PREFECT_HOME; stopped with SIGINT, as Prefect expects."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _api(url, "/health")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, home
    finally:
        _stop(server)
        log.close()


def _stop(process: subprocess.Popen, timeout: float = 30) -> int:
    """SIGINT (Prefect's servers, workers and `serve` stop cleanly on it, not on SIGTERM), then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _env(url: str, home: Path, **extra: str) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


def _wait_for(what: str, check, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            detail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"{what}: not within {timeout:.0f}s\n{detail}")
        time.sleep(1)


def _readme_block(after: str) -> list[str]:
    """The command lines of the first ```bash block after `after` in the README."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("```bash", readme.index(after)) + len("```bash")
    return [line for line in readme[start:readme.index("```", start)].strip().splitlines() if line.strip()]


def _trendflow_argv(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    assert words[0] == "trendflow", line
    return [sys.executable, "-m", "flows.cli", *words[1:]]


def _flow_runs(url: str, deployment_id: str | None = None, states: list[str] | None = None) -> list[dict]:
    body: dict = {"limit": 50, "sort": "EXPECTED_START_TIME_ASC"}
    if deployment_id:
        body["deployments"] = {"id": {"any_": [deployment_id]}}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    return _api(url, "/flow_runs/filter", body)


def _deployment(url: str, name: str) -> dict | None:
    try:
        return _api(url, f"/deployments/name/trend_pipeline/{name}")
    except OSError:
        return None


def _evening_universe(folder: Path, last: date, n_symbols: int = 8, n_days: int = 320) -> list[date]:
    """Per-symbol CSVs on weekdays ending `last` (every symbol every day: a served run for today has its prices)."""
    import numpy as np
    import pandas as pd

    days = pd.bdate_range(end=last, periods=n_days)
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True)
    for k in range(n_symbols):
        close = 10 * np.exp(np.cumsum(rng.normal(0.0004 * (k - 3), 0.012, n_days)))
        open_ = close * np.exp(rng.normal(0, 0.004, n_days))
        frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "open": open_.round(4), "close": close.round(4),
                              "high": (np.maximum(open_, close) * 1.006).round(4), "low": (np.minimum(open_, close) * 0.994).round(4),
                              "volume": rng.integers(1e5, 1e6, n_days)})
        frame.to_csv(folder / f"51{k:04d}.SH.csv", index=False)
    return [d.date() for d in days]


def test_trendflow_run_against_a_real_server_is_recorded_with_its_summary_artifact(prefect_server, small_demo_dir, tmp_path):
    url, home = prefect_server
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--data", str(small_demo_dir), "--out", str(out)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "report.html").exists()

    runs = _api(url, "/flow_runs/filter", {"limit": 10})
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    tasks = _api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [runs[0]["id"]]}}})
    assert sorted(t["state_type"] for t in tasks) == ["COMPLETED"] * 3
    artifacts = _api(url, "/artifacts/filter", {"artifacts": {"type": {"any_": ["markdown"]}}})
    assert any(a["flow_run_id"] == runs[0]["id"] for a in artifacts)


def test_readme_daily_example_runs_as_written_right_after_the_quick_start(prefect_server, tmp_path):
    url, home = prefect_server
    lines = _readme_block("Right after the quick start")
    assert len(lines) == 5 and lines[0].startswith("trendflow run --set data.end_date=2024-08-29")
    for line in lines:
        done = subprocess.run(_trendflow_argv(line), cwd=tmp_path, env=_env(url, home), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        if line.startswith("trendflow daily --dry-run"):
            assert "as of 2024-08-30, the latest session in" in done.stdout and "dry run -- orders decided" in done.stdout
            assert not (tmp_path / "v4_trace_outputs" / "orders_2024-08-30.csv").exists()
    live = tmp_path / "v4_trace_outputs"
    assert (live / "portfolio_2024-08-30.json").exists() and (live / "execution" / "trendflow.db").exists()
    daily_runs = [r for r in _flow_runs(url) if r["parameters"].get("mode") == "daily"]
    assert len(daily_runs) >= 2 and {r["state_type"] for r in daily_runs} == {"COMPLETED"}


def test_serve_runs_a_due_schedule_to_completed_and_stops_on_ctrl_c_leaving_it_active(prefect_server, tmp_path):
    url, home = prefect_server
    today = datetime.now(ZoneInfo("UTC")).date()
    last = today if today.weekday() < 5 else today - timedelta(days=today.weekday() - 4)
    days = _evening_universe(tmp_path / "prices", last)
    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    live = tmp_path / "live"
    evening_before = load_config(None, [f"data.end_date={days[-2]}"])
    run_signal_stage(evening_before, tmp_path / "prices", live)
    run_trading_stage(evening_before, live, live)

    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen(_trendflow_argv(f'trendflow serve --data {tmp_path / "prices"} --out {live} '
                                                 '--cron "* * * * *" --timezone UTC --calendar XNYS --name due-soon'),
                                 cwd=PROJECT_ROOT, env=_env(url, home), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deployment = _wait_for("serve registers its deployment", lambda: _deployment(url, "due-soon"), 120, serve, log)
        finished = _wait_for("a served run finishes", lambda: _flow_runs(url, deployment["id"], ["COMPLETED", "FAILED", "CRASHED"]),
                             180, serve, log)
    finally:
        code = _stop(serve)
    assert [r["state_type"] for r in finished][:1] == ["COMPLETED"], log.read_text()[-3000:]
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert text.strip().splitlines()[-1] == "trendflow serve: stopped serving 'due-soon' (schedule left active)"
    schedule = _api(url, f"/deployments/{deployment['id']}")["schedules"][0]
    assert schedule["active"] and schedule["schedule"]["cron"] == "* * * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert _api(url, f"/deployments/{deployment['id']}")["paused"] is False
    from flows.schedule import is_trading_day

    # a session today: the served run made today's step; no session: it completed doing nothing
    assert (live / f"portfolio_{today}.json").exists() == is_trading_day(today, "XNYS")


def test_readme_serve_commands_register_cron_schedules_in_their_time_zones(prefect_server, tmp_path):
    url, home = prefect_server
    (tmp_path / "prices").mkdir()
    expected = [("30 15 * * 1-5", "Asia/Shanghai"), ("15 16 * * 1-5", "America/New_York")]
    for line, (cron, zone) in zip(_readme_block("### Scheduled runs and deployments"), expected):
        log = tmp_path / "serve.log"
        with open(log, "w") as out:
            serve = subprocess.Popen(_trendflow_argv(line), cwd=tmp_path, env=_env(url, home), stdout=out,
                                     stderr=subprocess.STDOUT, text=True)
        try:
            registered = _wait_for(f"{line}: the schedule", lambda: [
                s for s in (_deployment(url, "trendflow-daily") or {}).get("schedules", [])
                if s["schedule"].get("cron") == cron and s["schedule"].get("timezone") == zone], 120, serve, log)
        finally:
            code = _stop(serve)
        assert code == 0 and registered[0]["active"], log.read_text()[-2000:]
        if "--out live/" in line:  # relative paths are made absolute: the runs and the UI see where the files are
            parameters = _deployment(url, "trendflow-daily")["parameters"]
            assert parameters["out"] == str(tmp_path / "live") and parameters["data"] == str(tmp_path / "prices")


def test_readme_deployment_block_schedules_cron_runs_and_a_worker_completes_a_run(tmp_path, small_demo_dir):
    """The README block as written, with the port, $PWD/.prefect, prices/, live/ and the server log
    swapped for temporary ones; the worker is started in the background and stopped with SIGINT."""
    import shutil

    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("the README block uses bash and curl")
    port = _free_port()
    home, live = tmp_path / "prefect_home", tmp_path / "live"
    lines = _readme_block("With a Prefect server and a process worker")
    assert lines[-1].startswith("prefect worker start --pool trendflow")
    script = "\n".join(lines[:-1]).replace("4200", str(port)).replace("$PWD/.prefect", str(home))
    script = script.replace("$PWD/prices", str(small_demo_dir)).replace("$PWD/live", str(live))
    script = script.replace("> prefect-server.log", f"> {tmp_path / 'server.log'}")
    script = script.replace("2>&1 &", f"2>&1 & echo $! > {tmp_path / 'server.pid'}", 1)
    worker_line = lines[-1].split("#")[0].strip()
    # job control on, so the background server and worker keep SIGINT (a non-interactive shell ignores it in them)
    script = f"set -m\n{script}\n{worker_line} > {tmp_path / 'worker.log'} 2>&1 &\necho $! > {tmp_path / 'worker.pid'}\n"
    env = _env("", home, PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5", PREFECT_WORKER_QUERY_SECONDS="2")
    env.pop("PREFECT_API_URL")
    url = f"http://127.0.0.1:{port}/api"
    started: list[int] = []
    try:
        done = subprocess.run(["bash", "-euc", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        started = [int((tmp_path / name).read_text()) for name in ("server.pid", "worker.pid") if (tmp_path / name).exists()]
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        daily = _deployment(url, "trendflow-daily")
        assert daily["parameters"]["data"] == str(small_demo_dir) and daily["parameters"]["out"] == str(live)
        scheduled = _wait_for("scheduled runs of trendflow-daily", lambda: _flow_runs(url, daily["id"], ["SCHEDULED"]), 90)
        shanghai = [datetime.fromisoformat(r["expected_start_time"]).astimezone(ZoneInfo("Asia/Shanghai")) for r in scheduled]
        assert all((t.hour, t.minute, t.weekday() < 5) == (15, 30, True) for t in shanghai), shanghai
        backtest = _deployment(url, "trendflow-backtest")
        run = _api(url, f"/deployments/{backtest['id']}/create_flow_run", {})
        final = _wait_for("the worker finishes the backtest run", lambda: [
            r for r in _flow_runs(url, backtest["id"], ["COMPLETED", "FAILED", "CRASHED"]) if r["id"] == run["id"]], 300,
            log=tmp_path / "worker.log")
        assert final[0]["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
        assert (live / "report.html").exists()
    finally:
        for pid in reversed(started):  # worker first, then the server; SIGINT as Prefect expects
            _signal_and_wait(pid)


def _signal_and_wait(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
