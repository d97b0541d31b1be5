"""One writer per folder: every command that writes an output folder (or the execution store's
folder) holds an OS-level lock on it for its whole run.

The lock is `<folder>/.trendflow.lock`, taken with `filelock` (flock on Unix, LockFileEx on
Windows), so the operating system drops it when its process dies however it dies. While held, the
file names its holder (pid, command, start time) for the one-line refusal a second writer gets;
it is removed on a clean release, so a lock file found with a holder in it at acquisition was left
by a killed process: that stale record is reported and taken over. Taking the lock also repairs
what a killed writer left (`artifacts.recover`). A process that already holds a folder's lock may
take it again (a flow's stages inside `trendflow run`)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from stages.common.errors import FolderBusyError
from stages.common.fs import os_error

log = logging.getLogger(__name__)
LOCK_NAME = ".trendflow.lock"

_held: dict[str, int] = {}
_guard = threading.Lock()


def _holder(lock_path: Path) -> dict:
    try:
        return json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} ({holder.get('command')}, since {holder.get('since')})"


@contextlib.contextmanager
def writing(folder: str | Path, *, wait: bool = False, command: str | None = None) -> Iterator[Path]:
    """Hold `folder`'s write lock (creating the folder). A busy folder is a FolderBusyError naming
    the holder, or with `wait` a wait until it is free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, folder, "cannot create the output folder") from None
    key = os.path.normcase(str(folder.resolve()))
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield folder
        finally:
            with _guard:
                _held[key] -= 1
        return
    lock_path = folder / LOCK_NAME
    lock = FileLock(lock_path, timeout=-1 if wait else 0)
    try:
        if wait and lock_path.exists():
            log.warning("%s is being written by %s: waiting (--wait)", folder, _describe(_holder(lock_path)))
        lock.acquire()
    except Timeout:
        raise FolderBusyError(f"{folder} is being written by {_describe(_holder(lock_path))}; "
                              "wait for it to finish or rerun with --wait") from None
    except OSError as exc:
        raise os_error(exc, lock_path, "cannot lock the folder") from None
    try:
        stale = _holder(lock_path)
        if stale:
            log.warning("%s: the lock of %s was left by a process that is no longer running; taken over",
                        folder, _describe(stale))
        me = {"pid": os.getpid(), "command": command or " ".join(["trendflow", *sys.argv[1:]])[:300],
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with open(lock_path, "r+", encoding="utf-8") as fh:
            fh.truncate(0)
            fh.write(json.dumps(me))
        from stages.common.artifacts import recover

        inner = sorted({p.parent for p in [*folder.glob("*/.staging"), *folder.glob("*/*/.staging")]})
        for repair in [r for f in [folder, *inner] for r in recover(f)]:  # e.g. a killed sweep's combos/<id>/
            log.warning(repair)
        with _guard:
            _held[key] = 1
    except BaseException:
        lock.release()
        raise
    try:
        yield folder
    finally:
        with _guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.release()
