"""Shared helpers for the benchmark scripts: demo universes cached on disk, timing, peak memory."""
from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.common.demo import DemoSpec, ensure_demo_universe  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "trendflow_bench"


def demo_folder(n_symbols: int, years: float = 10) -> Path:
    return ensure_demo_universe(CACHE / f"demo_{n_symbols}x{years:g}", DemoSpec(n_symbols=n_symbols, years=years))


@contextmanager
def timed(label: str, track_memory: bool = True):
    """Print wall time and peak Python-allocated memory (tracemalloc) of the block."""
    if track_memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    yield
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if track_memory else float("nan")
    if track_memory:
        tracemalloc.stop()
    print(f"{label:<55} {seconds:8.3f} s   peak {peak:8.1f} MiB")


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
