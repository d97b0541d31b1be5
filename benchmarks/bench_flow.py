"""The Prefect flow's own overhead: flow wall time minus the sum of the stages' times.

Run 1 includes starting Prefect's ephemeral server (no PREFECT_API_URL set); run 2 is the steady
per-run cost (three tasks, their state transitions, the markdown artifact). With PREFECT_API_URL
pointing at a running `prefect server start`, run 1 has no start-up cost."""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import demo_folder

from flows.pipeline import trend_pipeline

folder = demo_folder(40)
for attempt in (1, 2):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = trend_pipeline(data=str(folder), out=out)
        wall = time.perf_counter() - t0
        stages = sum(s["seconds"] for s in summary["stages"])
        print(f"run {attempt}: flow wall {wall:6.2f} s, stages {stages:6.2f} s, overhead {wall - stages:6.2f} s")
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
