"""No orphans: the processes a trendflow command starts die with it, even when it is killed.

Prefect's temporary server (a `trendflow sweep`, or `run`/`daily` with TRENDFLOW_PREFECT_SERVER=
ephemeral) is a child process that Prefect stops when the run ends normally; a SIGKILLed run cannot,
and the server would live on, holding its port and SQLite file. `guard_children()` starts a small
watchdog process that notes every descendant of this process while it lives and, once it is gone,
stops those still running (SIGTERM, then SIGKILL after a grace period). A pid is only signalled if
it still has the start time it was seen with (no pid reuse).

Linux only (it reads /proc); elsewhere it does nothing. The shared local server (flows/local_server.py)
is not a child of a run and is not affected: it is meant to outlive runs and stops itself when idle.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

_started = False


def guard_children() -> None:
    """Start the watchdog for this process (once per process)."""
    global _started
    if _started or not os.path.isdir("/proc") or sys.platform != "linux":
        return
    subprocess.Popen([sys.executable, "-S", __file__, str(os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _started = True


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every running process. A zombie counts as gone: a command
    that has exited stays a zombie until its caller reaps it, and a caller reading the command's
    output reaps it only once the output closes -- which a temporary server still holding the
    output would never let happen (`subprocess.run(["trendflow", "daily", ...], capture_output=True)`
    with TRENDFLOW_PREFECT_SERVER=ephemeral hung)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":  # a zombie has ended: only its exit status is left for its parent to collect
            continue
        table[int(name)] = (int(fields[1]), fields[19])
    return table


def _descendants(root: int, table: dict[int, tuple[int, str]]) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in table and pid != os.getpid():
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return found


def watch(parent: int, interval: float = 0.5, grace: float = 5.0) -> None:
    """Note `parent`'s descendants while it lives; when it is gone, stop the ones still running."""
    seen: dict[int, str] = {}
    while True:
        table = _table()
        if parent not in table:
            break
        seen.update(_descendants(parent, table))
        time.sleep(interval)

    def still(pid: int) -> bool:
        now = _table().get(pid)
        return now is not None and now[1] == seen[pid]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        left = [pid for pid in seen if still(pid)]
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in left if still(pid)]
        if not left:
            return


if __name__ == "__main__":
    watch(int(sys.argv[1]))
