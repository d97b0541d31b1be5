"""Warm processes: `trendflow daily`, `signal`, `trade` and `report` without paying their imports each time.

Why: a stage command's own work for a 100-ETF evening is 0.2-0.7 s, but every process first imports
numpy, pandas, pyarrow, pydantic and pandera (0.5-0.9 s), and `trendflow daily` Prefect as well
(~1 s): an evening spent more time importing than working. `trendflow warm start` starts two
detached processes that import them once and then wait on Unix sockets: one for the stage commands
(it never imports Prefect, so its children are what a stage command's own process is) and one for
`daily` (Prefect and the flow imported too). A command finds its warm process there and hands over
its arguments, working directory, environment, umask and its own stdin/stdout/stderr (passed as file
descriptors); the warm process forks a child that runs the command exactly as `trendflow <command>`
does in a fresh process (flows.cli.main, then flows.cli.finish), writing straight to the caller's
terminal, and the caller exits with the child's exit code. Nothing of one command is left for the
next: every command runs in a new fork of a process that has only imported modules (it never ran a
command itself).

When the warm path is not taken, the command runs in its own process as before, silently; the
warm process is an accelerator, never a requirement. It is not taken when
- no warm process is running (or it does not answer), or `TRENDFLOW_WARM=0`;
- the caller's Python executable or checkout differs from the warm process's;
- an environment variable read at import time differs (PYTHON*, OPENBLAS*, OMP_*, PANDERA_*, LANG,
  LC_*, TZ, ... see IMPORT_ENV_PREFIXES; for daily also PREFECT_*): the modules were imported under
  the warm process's values;
- the working folder holds a file read at import (./matplotlibrc; for daily Prefect's prefect.toml,
  .env or pyproject.toml settings) that the warm process's folder does not;
- the project's code, its config folder or the installed packages changed since it started (then it
  also stops: the next `trendflow warm start` imports the new code).

Signals: Ctrl-C (SIGINT), SIGTERM, SIGHUP, SIGQUIT and SIGCONT sent to the caller are sent on to the
child's process group, as the terminal would have sent them to a command running in its own process,
and Ctrl-Z (SIGTSTP) stops the child and then the caller (`fg` continues both); a
caller killed outright (SIGKILL) has its child stopped with SIGTERM when the warm process sees the
connection close. The socket is in a 0700 folder and a connection from another user is refused.
The warm process stops itself after `TRENDFLOW_WARM_IDLE_MINUTES` (default 120) without a
command; `trendflow warm stop` stops it now (after the commands it is running have finished).
POSIX only (fork, Unix sockets); on Windows the commands always run in their own process.

This module is imported by these commands' processes before anything else, so its imports are the
standard library's lightest.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from flows.cli import WARM_COMMANDS, WARM_FLAVORS

DISABLE_ENV = "TRENDFLOW_WARM"            # "0": never use the warm process
DIR_ENV = "TRENDFLOW_WARM_DIR"            # where the socket, record and log live (default: the checkout's .trendflow)
IDLE_ENV = "TRENDFLOW_WARM_IDLE_MINUTES"
STATS_ENV = "TRENDFLOW_WARM_STATS"        # a file the caller writes how the command ran (for benchmarks and tests)
DEFAULT_IDLE_MINUTES = 120.0

# Two warm processes, each for the commands whose imports it holds: the stage commands' never
# imports Prefect (so their children are what a stage command's own process is), the daily run's
# imports Prefect and the flow as well.
FLAVORS = WARM_FLAVORS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("flows", "stages", "schemas", "trendflow")

# Variables a module may read when it is imported (thread counts, encodings, pandera's switches,
# Prefect's settings...): a command is only run warm when the caller's values of these equal the
# warm process's.
IMPORT_ENV_PREFIXES = ("PYTHON", "OPENBLAS", "GOTO", "OMP_", "MKL_", "VECLIB", "BLIS", "NPY_", "NUMPY", "ARROW",
                       "PYARROW", "PANDAS", "PANDERA", "PYDANTIC", "SCIPY", "NUMBA", "MPL", "MATPLOTLIB", "LC_",
                       "LANG", "TZ", "MALLOC_", "LD_", "HOME", "XDG_")
FLOW_IMPORT_ENV_PREFIXES = ("PREFECT",)

# What the stage commands import, on their way in and while they run (measured: the modules a
# signal, trade and report run add after their command module is imported), and matplotlib as the
# report loads it (stages/reporting/charts.py).
PRELOAD = (
    "flows.cli", "stages.signal.__main__", "stages.signal.stage", "stages.signal.clustering",
    "stages.trading.__main__", "stages.trading.stage", "stages.trading.engine", "stages.trading.backtest",
    "stages.reporting.__main__", "stages.reporting.stage", "stages.reporting.report",
    "pandera.backends.pandas.register", "pandera.accessors.pandas_accessor", "pandas.io.formats.string",
    "pandas.core.arrays.arrow.extension_types", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.pandas_compat",
    "pyarrow.csv", "scipy.cluster.hierarchy", "encodings.utf_8_sig", "filelock", "urllib.request", "http.client",
)
PRELOAD_CALLS = ("stages.reporting.charts:_load_matplotlib",)
# ... and what `trendflow daily` imports besides (measured the same way: the flow, Prefect's engines)
# (in the order the command imports them: Prefect's settings before flows.pipeline sets
# PREFECT_LOGGING_LEVEL)
PRELOAD_FLOW = ("flows.commands", "flows.alerts", "flows.orphan_guard", "prefect.settings", "flows.pipeline",
                "prefect.flow_engine", "prefect.task_engine", "prefect.engine", "anyio._backends._asyncio",
                "graphviz", "encodings.idna", "stringprep")
# Files in the working folder that change what an import does: matplotlib's ./matplotlibrc; Prefect's
# settings in ./prefect.toml, ./.env (its PREFECT_ lines) and ./pyproject.toml (its [tool.prefect]).
# A command run from a folder where these differ from the warm process's (none, in the checkout)
# runs in its own process.
CWD_FILES_READ_AT_IMPORT = {
    "stages": {"matplotlibrc": None},
    "daily": {"matplotlibrc": None, "prefect.toml": None, ".env": b"PREFECT_", "pyproject.toml": b"[tool.prefect"},
}


# --------------------------------------------------------------------------- where
def warm_dir() -> Path:
    """The warm process's folder: TRENDFLOW_WARM_DIR, else the checkout's `.trendflow` (one warm
    process per checkout, like its Prefect server), else a folder under the user's cache."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    local = PROJECT_ROOT / ".trendflow"
    if os.access(local if local.is_dir() else PROJECT_ROOT, os.W_OK):
        return local
    import zlib

    return Path.home() / ".cache" / "trendflow" / f"warm-{zlib.crc32(str(PROJECT_ROOT).encode()):08x}"


def flavor_of(command: str) -> str | None:
    return next((flavor for flavor, commands in FLAVORS.items() if command in commands), None)


def socket_path(folder: Path | None = None, flavor: str = "stages") -> Path:
    return (folder or warm_dir()) / ("warm.sock" if flavor == "stages" else f"warm-{flavor}.sock")


def log_path(folder: Path, flavor: str = "stages") -> Path:
    return folder / ("warm.log" if flavor == "stages" else f"warm-{flavor}.log")


def _connectable_name(path: Path) -> str:
    """A Unix socket's path may not exceed ~104 bytes: a longer one is used relative to its folder
    (the caller chdirs there for the connect/bind; see `_At`)."""
    return str(path) if len(str(path).encode()) < 100 else path.name


class _At:
    """chdir into `path.parent` for a bind/connect whose absolute path is too long for AF_UNIX."""

    def __init__(self, path: Path) -> None:
        self.path, self.before = path, None

    def __enter__(self) -> str:
        name = _connectable_name(self.path)
        if name != str(self.path):
            self.before = os.getcwd()
            os.chdir(self.path.parent)
        return name

    def __exit__(self, *exc) -> None:
        if self.before is not None:
            os.chdir(self.before)


# --------------------------------------------------------------------------- what must match
def import_env(env: dict[str, str], flavor: str = "stages") -> dict[str, str]:
    prefixes = IMPORT_ENV_PREFIXES + (FLOW_IMPORT_ENV_PREFIXES if flavor != "stages" else ())
    return {k: v for k, v in env.items() if k.startswith(prefixes)}


def cwd_files(folder: str | Path, flavor: str) -> list:
    """[name, size, mtime] of the files in `folder` that would change this flavor's imports
    (CWD_FILES_READ_AT_IMPORT: present, and holding the marker when one is given)."""
    found = []
    for name, marker in CWD_FILES_READ_AT_IMPORT[flavor].items():
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
            if marker is not None:
                with open(path, "rb") as f:
                    if marker not in f.read():
                        continue
        except OSError:
            continue
        found.append([name, st.st_size, st.st_mtime_ns])
    return found


def code_fingerprint() -> list:
    """(path, mtime, size) of every file of the project's packages and config folder, the modification
    time of every package folder on sys.path (an install or upgrade changes it) and Prefect's profiles."""
    entries = []
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or Path(os.environ.get("PREFECT_HOME") or "~/.prefect") / "profiles.toml")
    try:
        st = os.stat(profiles.expanduser())
        entries.append([str(profiles), st.st_mtime_ns, st.st_size])
    except OSError:
        pass
    for package in (*PROJECT_PACKAGES, "config"):
        for folder, dirs, files in os.walk(PROJECT_ROOT / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".json", ".csv")):
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    entries.append([path, st.st_mtime_ns, st.st_size])
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry.rstrip("/").endswith(("site-packages", "dist-packages")):
            entries.append([entry, os.stat(entry).st_mtime_ns, 0])
    return entries


def _python() -> list[str]:
    """The interpreter and environment: `python` and `python3` of one venv are the same one."""
    return [os.path.realpath(sys.executable), sys.prefix]


# --------------------------------------------------------------------------- wire format
# Messages are JSON objects, each prefixed by its length (4 bytes, big-endian). The first one, from
# the caller, carries its stdin, stdout and stderr as SCM_RIGHTS file descriptors.
def _pack(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Length-prefixed JSON messages from a stream socket (partial reads buffered)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def feed(self) -> bool:
        """Read what is there; False at end of stream."""
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self) -> dict | None:
        """The first complete message in the buffer, removed from it; None when there is none yet."""
        if len(self.buffer) < 4:
            return None
        (size,) = struct.unpack(">I", self.buffer[:4])
        if len(self.buffer) < 4 + size:
            return None
        message, self.buffer = json.loads(self.buffer[4:4 + size]), self.buffer[4 + size:]
        return message

    def messages(self) -> list[dict]:
        """Every complete message buffered so far."""
        out = []
        while (message := self._take()) is not None:
            out.append(message)
        return out

    def next(self) -> dict | None:
        """Block for the next message; None at end of stream."""
        while (message := self._take()) is None:
            if not self.feed():
                return None
        return message


def _request(message: dict, folder: Path | None = None, timeout: float = 5.0, flavor: str = "stages") -> dict | None:
    """One control message (ping, status, stop) and its answer; None when no warm process answers."""
    path = socket_path(folder, flavor)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            with _At(path) as name:
                sock.connect(name)
            sock.sendall(_pack(message))
            return _Reader(sock).next()
    except OSError:
        return None


# --------------------------------------------------------------------------- the caller's side
# what a terminal or a supervisor sends a command, passed on to the child running it (SIGTSTP too, see suspend)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCONT)


def run_warm(argv: list[str]) -> int | None:
    """Run `trendflow <argv>` in the warm process; its exit code, or None when the warm path is not
    taken (the caller then runs the command itself). `argv` = sys.argv: [program, command, ...]."""
    if os.name != "posix" or len(argv) < 2 or argv[1] not in WARM_COMMANDS or os.environ.get(DISABLE_ENV) == "0":
        return None
    flavor = flavor_of(argv[1])
    if flavor == "daily":
        from flows.local_server import use_prefect_defaults

        use_prefect_defaults()  # PREFECT_HOME etc. as the command sets them before importing Prefect
    path = socket_path(flavor=flavor)
    try:
        if os.stat(path).st_uid != os.getuid():
            return _stats(None, f"{path} belongs to another user")
    except OSError:
        return _stats(None, "no warm process")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _At(path) as name:
            sock.connect(name)
        if not _same_user(sock):  # the environment sent below may hold secrets (webhook URL, broker login)
            sock.close()
            return _stats(None, f"{path} is served by another user's process")
        umask = os.umask(0)
        os.umask(umask)
        request = {"op": "run", "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                   "python": _python(), "root": str(PROJECT_ROOT)}
        socket.send_fds(sock, [_pack(request)], [0, 1, 2])
        reader = _Reader(sock)
        answer = reader.next()
    except OSError as exc:
        sock.close()
        return _stats(None, f"warm process did not answer ({exc})")
    if answer is None or "pid" not in answer:
        sock.close()
        return _stats(None, (answer or {}).get("fallback", "warm process closed the connection"))

    def forward(signum, _frame):
        try:
            sock.sendall(_pack({"signal": signum}))
        except OSError:
            pass

    def suspend(signum, _frame):
        """Ctrl-Z: the command stops with its caller and goes on when the caller does. Where the
        kernel discards the caller's stop (a process group with no job control, e.g. under a
        daemon), the command goes on at once too, as it would in its own process."""
        forward(signum, _frame)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT (`fg`, `bg`), if it stops at all
        signal.signal(signal.SIGTSTP, suspend)
        forward(signal.SIGCONT, _frame)

    handlers = {s: forward for s in FORWARDED_SIGNALS}
    handlers[signal.SIGTSTP] = suspend
    previous = {s: signal.signal(s, handler) for s, handler in handlers.items()}
    try:
        while True:
            try:
                result = reader.next()
                break
            except InterruptedError:
                continue
    except OSError:
        result = None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    if result is None or "exit" not in result:
        print(f"error: the warm process (socket {path}) went away while running the command; "
              "run it again, or with TRENDFLOW_WARM=0", file=sys.stderr)
        return _stats(3, "the warm process went away")
    return _stats(int(result["exit"]), None, result)


def _stats(code: int | None, reason: str | None, result: dict | None = None) -> int | None:
    """Tell a benchmark or test how the command ran (TRENDFLOW_WARM_STATS names the file): warm or
    not and why, and the child's CPU seconds and peak RSS (this process's own are the caller's only)."""
    target = os.environ.get(STATS_ENV)
    if target:
        record = {"warm": result is not None, "reason": reason}
        if result is not None:
            record.update({k: result[k] for k in ("exit", "pid", "cpu_s", "max_rss_mib") if k in result})
        with open(target, "w", encoding="utf-8") as f:
            json.dump(record, f)
    return code


# --------------------------------------------------------------------------- the warm process
class WarmServer:
    """Accepts commands on the socket and runs each in a forked child; one thread, one selector."""

    def __init__(self, folder: Path, flavor: str, idle_minutes: float, env: dict[str, str],
                 set_by_imports: dict[str, str]) -> None:
        """`env`: the import-time variables the modules were imported under; `set_by_imports`: the
        variables the imports set themselves, which a command's own process would also have."""
        import selectors

        self.folder, self.flavor, self.idle_seconds = folder, flavor, idle_minutes * 60
        self.path = socket_path(folder, flavor)
        self.cwd_files = cwd_files(os.getcwd(), flavor)
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, dict] = {}    # pid -> {"conn", "exit_r", "started"}
        self.env, self.set_by_imports = env, set_by_imports
        self.fingerprint = code_fingerprint()
        self.stopping = False
        self.started_at = time.time()
        self.last_used = time.monotonic()
        self.served = self.fallbacks = 0
        self.last_fallback: str | None = None
        self.listener: socket.socket | None = None
        self.inode: int | None = None

    # life -------------------------------------------------------------------
    def serve(self) -> int:
        running = _request({"op": "ping"}, self.folder, flavor=self.flavor)
        if running is not None:
            print(f"warm process {running['pid']} already serves {self.path}: not starting a second", flush=True)
            return 1
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path.unlink(missing_ok=True)  # left by a warm process that was killed (it did not answer)
        with _At(self.path) as name:
            self.listener.bind(name)
        os.chmod(self.path, 0o600)
        self.inode = os.stat(self.path).st_ino
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector.register(self.listener, 1, ("accept", None))
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop_signal)
        print(f"warm process {os.getpid()} ready on {self.path} (python {sys.executable})", flush=True)
        try:
            while not (self.stopping and not self.children):
                idle = not self.children and time.monotonic() - self.last_used > self.idle_seconds
                if idle and not self.stopping:
                    print(f"idle for {self.idle_seconds / 60:g} minutes: stopping", flush=True)
                    self._stop()
                    continue
                for key, _ in self.selector.select(timeout=0.5):
                    kind, data = key.data
                    if kind == "accept":
                        self._accept()
                    elif kind == "exit":
                        self._finish(data, block=True)
                    elif kind == "caller":
                        self._from_caller(data)
                for pid in list(self.children):  # ended, but a process it started still holds its exit pipe
                    self._finish(pid, block=False)
        finally:
            self._close_listener()
        return 0

    def _stop_signal(self, signum, _frame) -> None:
        print(f"signal {signum}: stopping after {len(self.children)} running command(s)", flush=True)
        self._stop()

    def _stop(self) -> None:
        self.stopping = True
        self._close_listener()

    def _close_listener(self) -> None:
        if self.listener is not None:
            try:
                self.selector.unregister(self.listener)
            except (KeyError, ValueError):
                pass
            self.listener.close()
            self.listener = None
            try:  # the socket file is ours only while it is still the one we bound
                if os.stat(self.path).st_ino == self.inode:
                    self.path.unlink()
            except OSError:
                pass

    # one connection ---------------------------------------------------------
    def _accept(self) -> None:
        if self.listener is None:
            return
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        conn.settimeout(10)
        fds: list[int] = []
        try:
            if not _same_user(conn):
                raise PermissionError("a connection from another user")
            message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            reader = _Reader(conn)
            reader.buffer = message
            request = reader.next()
            if request is None:
                raise OSError("empty request")
            op = request.get("op")
            if op in ("ping", "status"):
                conn.sendall(_pack(self.status()))
            elif op == "stop":
                conn.sendall(_pack({"stopping": True, "running": len(self.children)}))
                self._stop()
            elif op == "run":
                reason = self._refusal(request, fds)
                if reason is None:
                    self._fork(conn, request, fds)
                    fds = []  # handed to the child
                    return
                self.fallbacks += 1
                self.last_fallback = reason
                conn.sendall(_pack({"fallback": reason}))
                if reason.startswith("the project's code"):
                    print(f"{reason}: stopping", flush=True)
                    self._stop()
        except (OSError, ValueError, AttributeError) as exc:  # a dropped or malformed request: that one only
            print(f"a connection failed: {exc!r}", flush=True)
        finally:
            for fd in fds:
                os.close(fd)
        conn.close()

    def _refusal(self, request: dict, fds: list[int]) -> str | None:
        """Why this command may not run here (the caller then runs it itself), or None."""
        if len(fds) != 3:
            return "stdin, stdout and stderr were not passed"
        if request.get("python") != _python() or request.get("root") != str(PROJECT_ROOT):
            return f"another Python or checkout (warm: {_python()} in {PROJECT_ROOT})"
        argv = request.get("argv") or []
        if len(argv) < 2 or argv[1] not in FLAVORS[self.flavor]:
            return f"not a command of this warm process: {argv[1:2]}"
        env = import_env(request.get("env") or {}, self.flavor)
        if env != self.env:
            keys = sorted(k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k))
            return f"environment differs from the warm process's in {', '.join(keys)}"
        here = cwd_files(request.get("cwd", ""), self.flavor)
        if here != self.cwd_files:
            names = sorted({f[0] for f in here} ^ {f[0] for f in self.cwd_files} | {a[0] for a, b in zip(here, self.cwd_files) if a != b})
            return f"the working folder's {', '.join(names) or 'files'} differ from the warm process's (read at import)"
        if code_fingerprint() != self.fingerprint:
            return "the project's code, config folder or installed packages changed since the warm process started"
        return None

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        exit_r, exit_w = os.pipe()
        # a signal that reaches the child before it has its own handlers waits for them (this
        # process's would otherwise run in the child, e.g. stop-and-unlink-the-socket on SIGTERM)
        signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(exit_r)
            # the variables the imports set (each only when unset, as pandera and flows.pipeline do)
            request["env"] = {**self.set_by_imports, **request["env"]}
            _run_child(request, fds, keep=exit_w, close=self._fds_to_close(conn))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
        os.close(exit_w)
        try:
            os.setpgid(pid, pid)  # as the child does itself: a signal passed on at once reaches its group
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        self.served += 1
        self.last_used = time.monotonic()
        self.children[pid] = {"conn": conn, "exit_r": exit_r, "started": time.perf_counter()}
        conn.settimeout(None)
        conn.sendall(_pack({"pid": pid}))
        self.selector.register(exit_r, 1, ("exit", pid))
        self.selector.register(conn, 1, ("caller", pid))

    def _fds_to_close(self, conn: socket.socket) -> list[int]:
        """The warm process's own descriptors a child must not keep (the caller's connection too:
        the caller learns the exit code from the warm process, which waits for the child)."""
        fds = [conn.fileno(), self.selector.fileno()] if hasattr(self.selector, "fileno") else [conn.fileno()]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        for child in self.children.values():
            fds += [child["conn"].fileno(), child["exit_r"]]
        return fds

    def _from_caller(self, pid: int) -> None:
        """A signal to pass on, or the caller gone (its connection closed): stop the child."""
        child = self.children.get(pid)
        if child is None:
            return
        reader = child.setdefault("reader", _Reader(child["conn"]))
        try:
            alive = reader.feed()
            messages = reader.messages()
        except (OSError, ValueError):  # gone, or talking nonsense: treated as gone
            alive, messages = False, []
        if not alive:
            self.selector.unregister(child["conn"])
            child["caller_gone"] = True
            _signal_group(pid, signal.SIGTERM)
            return
        for message in messages:
            signum = message.get("signal") if isinstance(message, dict) else None
            if isinstance(signum, int) and signum in (*FORWARDED_SIGNALS, signal.SIGTSTP):
                _signal_group(pid, signum)

    def _finish(self, pid: int, block: bool) -> None:
        """Reap the child and tell the caller its exit code. `block`: its end of the exit pipe has
        closed, so it is ending (the descriptor closes as the process exits); else only if it has
        already ended."""
        child = self.children.get(pid)
        if child is None:
            return
        reaped, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
        if reaped == 0:
            return
        del self.children[pid]
        self.selector.unregister(child["exit_r"])
        os.close(child["exit_r"])
        code = os.waitstatus_to_exitcode(status)
        if code < 0:  # killed by a signal: what a shell reports for it
            code = 128 - code
        conn = child["conn"]
        if not child.get("caller_gone"):
            self.selector.unregister(conn)
            try:
                conn.sendall(_pack({"exit": code, "pid": pid, "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                                    "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
                                    "seconds": round(time.perf_counter() - child["started"], 3)}))
            except OSError:
                pass
        conn.close()
        self.last_used = time.monotonic()

    def status(self) -> dict:
        return {"pid": os.getpid(), "flavor": self.flavor, "commands": list(FLAVORS[self.flavor]), "socket": str(self.path), "python": sys.executable, "root": str(PROJECT_ROOT),
                "started_at": self.started_at, "served": self.served, "running": len(self.children),
                "children": sorted(self.children),
                "fallbacks": self.fallbacks, "last_fallback": self.last_fallback,
                "idle_minutes": self.idle_seconds / 60, "stopping": self.stopping}


def _same_user(conn: socket.socket) -> bool:
    """Whether the process at the other end of a Unix socket runs as this user."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # not Linux: the socket file's owner (checked by the caller), 0600 mode and 0700 folder
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, signum)


# the signals a child gets its own (default) handlers for
CHILD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP, signal.SIGCONT}


def _run_child(request: dict, fds: list[int], *, keep: int, close: list[int]) -> None:
    """In the forked child: become the caller's command -- its descriptors, folder, environment,
    umask, arguments and signal dispositions, in a process group of its own -- run it as
    flows.cli.entry would, and exit with its code. Never returns."""
    code = 1
    try:
        import gc
        import io
        import random

        os.setpgid(0, 0)
        for signum in CHILD_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        sys.stdout.flush()  # anything of the warm process's own still buffered goes to its log, not the caller
        sys.stderr.flush()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        encoding, errors = sys.stdout.encoding, sys.stdout.errors
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding)
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding=encoding,
                                      errors=errors, line_buffering=os.isatty(1))
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding=encoding,
                                      errors="backslashreplace", line_buffering=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        os.umask(int(request["umask"]))
        sys.argv = list(request["argv"])
        random.seed()  # a fresh process's random state, not the warm process's
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        from flows.cli import GC_THRESHOLDS, finish, main

        gc.set_threshold(*GC_THRESHOLDS)
        try:
            code = main(sys.argv[1:])
        except SystemExit as exc:  # argparse's --help and usage errors, as the interpreter reports them
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finish(code, sys.argv[1])  # Prefect's queues drained, then os._exit, as in the command's own process
    except BaseException:  # becoming the caller's command failed (e.g. its working folder is gone)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def _other_threads() -> list[str]:
    """Threads besides this one, by name, except jemalloc's background thread (pyarrow starts one
    when it is imported): jemalloc quiesces it around fork and the child simply runs without it."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        import threading

        return [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    names = []
    for task in tasks.iterdir():
        if int(task.name) != threading_native_id():
            name = (task / "comm").read_text().strip()
            if name != "jemalloc_bg_thd":
                names.append(name)
    return names


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def serve(folder: Path, flavor: str, idle_minutes: float) -> int:
    """The warm process's body (`python -m flows.warm serve`): import, check it is safe to fork, serve."""
    import gc
    import importlib

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # what the stage commands' own processes set (flows/cli.py)
    if flavor == "daily":
        from flows.local_server import use_prefect_defaults

        use_prefect_defaults()  # as `trendflow daily` does before Prefect is imported
    seen_by_imports = dict(os.environ)
    t0 = time.perf_counter()
    for name in PRELOAD + (PRELOAD_FLOW if flavor == "daily" else ()):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a module a command may import on its way (graphviz...): it then does
            if name.split(".")[0] in PROJECT_PACKAGES:
                raise
            print(f"not preloaded: {name} ({exc})", flush=True)
    for target in PRELOAD_CALLS:
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)()
    # what the imports themselves set (pandera sets PYARROW_IGNORE_TIMEZONE): a child gets the same
    set_by_imports = {k: v for k, v in os.environ.items() if seen_by_imports.get(k) != v}
    others = _other_threads()
    if others:
        print(f"error: threads {', '.join(others)} after the imports; forking would not be safe", flush=True)
        return 1
    gc.collect()
    gc.freeze()  # the children then leave the imported objects' pages shared
    print(f"imported {len(sys.modules)} modules in {time.perf_counter() - t0:.2f}s", flush=True)
    return WarmServer(folder, flavor, idle_minutes, import_env(seen_by_imports, flavor), set_by_imports).serve()


# --------------------------------------------------------------------------- trendflow warm
def start(folder: Path, idle_minutes: float, flavors: tuple[str, ...] = tuple(FLAVORS), timeout: float = 90.0,
          say=print) -> bool:
    """Start the warm processes of `flavors` that do not answer yet (side by side); True when all answer."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    env = {**os.environ, DIR_ENV: str(folder)}  # (serve sets OPENBLAS_NUM_THREADS as the commands do)
    starting = {}
    for flavor in flavors:
        running = _request({"op": "ping"}, folder, flavor=flavor)
        if running is not None:
            say(f"warm process for {', '.join(FLAVORS[flavor])} already running: pid {running['pid']}")
            continue
        with open(log_path(folder, flavor), "ab") as log:
            starting[flavor] = subprocess.Popen(
                [sys.executable, "-m", "flows.warm", "serve", "--only", flavor, "--idle-minutes", str(idle_minutes)],
                cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    ok = True
    for flavor, process in starting.items():
        while time.monotonic() < deadline and process.poll() is None:
            status = _request({"op": "ping"}, folder, flavor=flavor)
            if status is not None and status.get("pid") == process.pid:
                break
            time.sleep(0.05)
        else:
            if process.poll() is None:
                process.terminate()
            say(f"error: the warm process for {', '.join(FLAVORS[flavor])} did not start; see {log_path(folder, flavor)}")
            ok = False
            continue
        say(f"warm process {process.pid} ready for {', '.join(FLAVORS[flavor])} "
            f"(stops after {idle_minutes:g} idle minutes; log {log_path(folder, flavor)})")
    return ok


def stop(folder: Path, flavor: str, timeout: float = 60.0) -> bool:
    """Stop a warm process (it finishes the commands it is running first); True if one was running."""
    status = _request({"op": "status"}, folder, flavor=flavor)
    if status is None:
        return False
    _request({"op": "stop"}, folder, flavor=flavor)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(int(status["pid"]), 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    return True


def warm_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=(
        "warm processes: signal, trade, report and daily then run in a fork of a process that has imported "
        "numpy/pandas/pandera (and, for daily, Prefect) once, instead of importing them each time (POSIX)"))
    parser.add_argument("action", choices=["start", "stop", "status", "serve"],
                        help="start | stop | status (serve: one warm process itself, used by start)")
    parser.add_argument("--only", choices=list(FLAVORS), help="only the warm process for the stage commands, or for daily")
    parser.add_argument("--idle-minutes", type=float, default=float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_MINUTES)),
                        help=f"stop after this long without a command (default {DEFAULT_IDLE_MINUTES:g}, or ${IDLE_ENV})")
    options = parser.parse_args(argv)
    if os.name != "posix":
        print("error: warm processes need fork and Unix sockets (POSIX); on Windows every command runs in its own "
              "process", file=sys.stderr)
        return 2
    folder = warm_dir()
    flavors = (options.only,) if options.only else tuple(FLAVORS)
    if options.action == "serve":
        if options.only is None:
            parser.error("serve needs --only stages|daily")
        return serve(folder, options.only, options.idle_minutes)
    if options.action == "start":
        try:
            return 0 if start(folder, options.idle_minutes, flavors) else 1
        except OSError as exc:
            print(f"error: cannot use {folder} for the warm processes: {exc.strerror or exc} "
                  f"(set {DIR_ENV} to a folder of yours)", file=sys.stderr)
            return 3
    if options.action == "stop":
        stopped = [flavor for flavor in flavors if stop(folder, flavor)]
        print(f"stopped the warm process(es) for {'; '.join(', '.join(FLAVORS[f]) for f in stopped)}" if stopped
              else "no warm process was running")
        return 0
    running = 0
    for flavor in flavors:
        status = _request({"op": "status"}, folder, flavor=flavor)
        commands = ", ".join(FLAVORS[flavor])
        if status is None:
            print(f"{commands}: no warm process (socket {socket_path(folder, flavor)}); `trendflow warm start` starts it")
            continue
        running += 1
        print(f"{commands}: warm process {status['pid']}, {status['served']} command(s) run, {status['running']} running, "
              f"{status['fallbacks']} run in their own process"
              + (f" (last: {status['last_fallback']})" if status["last_fallback"] else "")
              + f"; stops after {status['idle_minutes']:g} idle minutes")
    return 0 if running == len(flavors) else 1


if __name__ == "__main__":
    sys.exit(warm_main(sys.argv[1:], prog="python -m flows.warm"))
