"""Giving freed memory back to the operating system between the phases of a big computation.

glibc keeps freed heap memory for reuse instead of returning it, and large numpy arrays (mmapped,
returned at once) cannot reuse it: a stage that frees one generation of (days x symbols) grids and
then allocates the next one (e.g. the long signals table gathered from the packed grids) would hold
both in its resident memory although only one is alive. `release_free_memory` asks glibc to return
its free pages (malloc_trim; elsewhere -- macOS, Windows, musl -- that part does nothing), and pyarrow's
memory pool the memory it keeps after a table is converted.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Return the process's free memory to the OS: pyarrow's own pool (mimalloc keeps what a decoded
    Parquet table freed, where numpy cannot reuse it) and glibc's heap (Linux only). No values change."""
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
