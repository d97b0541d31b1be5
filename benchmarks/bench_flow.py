"""The Prefect flow's own overhead: flow wall time minus the sum of the stages' times (ephemeral server)."""
from __future__ import annotations

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
