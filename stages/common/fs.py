"""Operating-system faults as one clear line: which path, what the system said, and whether a
retry can help (exit 3: a full disk, a busy or flaky device) or the user must change something
(exit 2: read-only, permission denied, a file where a folder is expected)."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from stages.common.errors import FileSystemError, TransientIOError, TrendflowError

_TRANSIENT = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EAGAIN, errno.EBUSY, errno.EIO,
              errno.EINTR, getattr(errno, "ETIMEDOUT", errno.EIO), getattr(errno, "ESTALE", errno.EIO)}
_PLAIN = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file stands where a folder is expected",
    errno.EISDIR: "a folder stands where a file is expected",
    errno.EEXIST: "a file stands where a folder is expected",
    errno.ENOENT: "no such file or folder",
}


def os_error(exc: OSError, path: str | Path | None = None, doing: str = "cannot write") -> TrendflowError:
    """The TrendflowError for an OSError met while `doing` something to `path`."""
    where = exc.filename or path
    what = _PLAIN.get(exc.errno or -1, exc.strerror or str(exc))
    kind = TransientIOError if exc.errno in _TRANSIENT else FileSystemError
    return kind(f"{doing} {_artifact_path(str(where))}: {what}" if where is not None else f"{doing}: {what}")


def _artifact_path(path: str) -> str:
    """A file staged for a commit (<out>/.staging/<run>/0001-trade_log.csv) is named as the artifact it
    becomes (<out>/trade_log.csv)."""
    return re.sub(r"[\\/]\.staging[\\/][^\\/]+[\\/]\d{4}-([^\\/]+)$", lambda m: os.sep + m.group(1), path)


def is_os_fault(exc: BaseException) -> bool:
    """An OSError from the file system (not a network or broker error)."""
    return isinstance(exc, OSError) and getattr(exc, "errno", None) in set(_PLAIN) | _TRANSIENT
