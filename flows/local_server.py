"""The local Prefect server that `trendflow run`, `daily` and `serve` share when no PREFECT_API_URL
is configured.

Why: Prefect's default without a server is a temporary one started inside every run (10-20 s on a
small machine, nothing printed, gone when the run ends, with its history). Here the first run starts
one detached server on 127.0.0.1 (a free port), records it in `$PREFECT_HOME/trendflow-server.json`
(pid, port, url), and every later run reuses it while it answers: they pay only Prefect's client
start-up, and the runs stay visible in the UI at the recorded url.

No orphan: the server is this module's own process (uvicorn serving Prefect's app in-process, so
nothing outlives it), it stops itself after `TRENDFLOW_SERVER_IDLE_MINUTES` (default 720) without a
run (each run touches the record), and `trendflow server stop` stops it now. A record whose server
does not answer is replaced; a stale process of ours behind it is stopped first.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

RECORD_NAME = "trendflow-server.json"
LOG_NAME = "trendflow-server.log"
IDLE_ENV = "TRENDFLOW_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 720.0
START_TIMEOUT = 180.0


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def use_prefect_defaults() -> Path:
    """Set Prefect's environment before Prefect is imported, whatever the working directory (a run
    from /tmp, cron, an installed entry point), and return PREFECT_HOME.

    PREFECT_HOME, unless set: the project's `.prefect` (one server and one run history per checkout,
    as `run_pipeline.sh` sets it), or `~/.prefect` (Prefect's own default) when the project folder
    cannot be written. PREFECT_SERVER_ANALYTICS_ENABLED, unless set: false (no outbound traffic)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_HOME"):
        local = PROJECT_ROOT / ".prefect"
        writable = os.access(local if local.is_dir() else PROJECT_ROOT, os.W_OK)
        os.environ["PREFECT_HOME"] = str(local if writable else Path.home() / ".prefect")
    return Path(os.environ["PREFECT_HOME"]).expanduser()


def prefect_home() -> Path:
    return use_prefect_defaults()


def record_path(home: Path | None = None) -> Path:
    return (home or prefect_home()) / RECORD_NAME


def read_record(home: Path | None = None) -> dict | None:
    try:
        record = json.loads(record_path(home).read_text(encoding="utf-8"))
        return record if {"pid", "port", "url"} <= set(record) else None
    except (OSError, ValueError):
        return None


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _is_ours(pid: int) -> bool:
    """Only a process running this module is ever signalled (pids get reused)."""
    try:
        return b"flows.local_server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc (macOS): the recorded pid is all we have


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_url(home: Path | None = None) -> str | None:
    """The recorded server's API url if it answers (and mark it used), else None."""
    record = read_record(home)
    if record is None or not healthy(record["url"]):
        return None
    os.utime(record_path(home))
    return record["url"]


def keep_alive(every: float = 60.0) -> None:
    """For a long-lived user of the shared server (`trendflow serve`): mark it used every `every`
    seconds from a daemon thread, so it never stops itself as idle under a process still polling it."""
    import threading

    path = record_path()

    def touch() -> None:
        while True:
            time.sleep(every)
            try:
                os.utime(path)
            except OSError:
                pass

    threading.Thread(target=touch, name="trendflow-server-keep-alive", daemon=True).start()


def ensure_server(say: Callable[[str], None] = print, home: Path | None = None) -> str:
    """The url of the shared local server, starting it (and waiting until it answers) if needed."""
    from filelock import FileLock

    home = home or prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    url = running_url(home)
    if url is not None:
        say(f"Prefect server {url} (shared local server, reused; UI at {url.removesuffix('/api')})")
        return url
    with FileLock(str(home / "trendflow-server.lock")):  # two runs at once start one server
        url = running_url(home)
        if url is not None:
            return url
        stop_server(home, quiet=True)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        say(f"starting a local Prefect server on {url} for this and later runs (first run only, ~10-30 s; "
            f"`trendflow server stop` stops it)")
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with open(home / LOG_NAME, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "flows.local_server", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT)
        _write_record(home, {"pid": process.pid, "port": port, "url": url, "started": time.time()})
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_server(home, quiet=True)
                from stages.common.errors import TransientIOError

                raise TransientIOError(f"the local Prefect server did not start (see {home / LOG_NAME})")
            time.sleep(0.25)
        return url


def _write_record(home: Path, record: dict) -> None:
    path = record_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def stop_server(home: Path | None = None, quiet: bool = False, timeout: float = 30.0) -> bool:
    """Stop the recorded server (SIGINT, as uvicorn expects; SIGKILL after `timeout`). True if one ran."""
    home = home or prefect_home()
    record = read_record(home)
    if record is None:
        if not quiet:
            print("no local Prefect server is recorded")
        return False
    pid = int(record["pid"])
    was_running = _alive(pid) and _is_ours(pid)
    if was_running:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    record_path(home).unlink(missing_ok=True)
    if not quiet:
        print(f"stopped the local Prefect server at {record['url']}" if was_running else
              f"the recorded server at {record['url']} was not running; record removed")
    return was_running


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child (a test, or `ensure_server` in this process)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- the server process
def _serve(port: int, idle_minutes: float) -> None:
    """Prefect's app under uvicorn in this process; exits after `idle_minutes` without a run."""
    import asyncio

    import uvicorn
    from prefect.server.api.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(final=True), host="127.0.0.1", port=port, log_level="warning",
                                          timeout_keep_alive=5))
    home = prefect_home()

    async def watch_idle() -> None:
        while not server.started and not server.should_exit:  # the idle time counts from when it answers
            await asyncio.sleep(0.5)
        try:
            os.utime(record_path(home))
        except OSError:
            pass
        while not server.should_exit:
            await asyncio.sleep(min(30.0, idle_minutes * 60 / 4))
            try:
                last_used = record_path(home).stat().st_mtime
            except OSError:  # the record is gone or replaced: this server is no longer the shared one
                server.should_exit = True
                break
            record = read_record(home)
            if record is None or int(record["pid"]) != os.getpid() or time.time() - last_used > idle_minutes * 60:
                server.should_exit = True

    async def main() -> None:
        watcher = asyncio.create_task(watch_idle())
        try:
            await server.serve()
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    finally:
        record = read_record(home)
        if record is not None and int(record["pid"]) == os.getpid():
            record_path(home).unlink(missing_ok=True)


def server_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow server status|stop|start`: the shared local Prefect server."""
    use_prefect_defaults()
    parser = argparse.ArgumentParser(prog=prog or "trendflow server", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["status", "start", "stop"])
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop_server()
        return 0
    if args.action == "start":
        from stages.common.cli import run_command

        return run_command(lambda _: ensure_server() and 0, args)
    record = read_record()
    url = running_url()
    if url:
        print(f"running: {url} (pid {record['pid']}; UI at {url.removesuffix('/api')})")
        return 0
    print("not running" + (f" (stale record for {record['url']})" if record else ""))
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.local_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, default=float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_MINUTES)))
    options = parser.parse_args()
    try:
        _serve(options.port, options.idle_minutes)
    except KeyboardInterrupt:  # `trendflow server stop` sends SIGINT; uvicorn re-raises it after a clean stop
        pass
