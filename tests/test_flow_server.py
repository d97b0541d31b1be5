"""The flow against a real `prefect server start` on loopback, as a user with a Prefect UI runs it:
`trendflow run` in its own process with PREFECT_API_URL set, then the server is asked what ran."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server on 127.0.0.1 with its own PREFECT_HOME; stopped with SIGINT, as Prefect expects."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": ""}
    env.pop("PREFECT_API_URL")
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
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


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
