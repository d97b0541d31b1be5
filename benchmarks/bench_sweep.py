"""Sweep: 100 combinations x 100 symbols x 10 years, locally and on a Dask LocalCluster with 1 and 2 workers."""
from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import demo_folder

from flows.sweep import run_sweep


def main() -> None:
    logging.getLogger("prefect").setLevel(logging.WARNING)
    grid = {"risk.atr_multiplier": [1.5, 2.0, 2.5, 3.0, 3.5], "scoring.buy_top_n": [5, 8, 10, 12, 15],
            "scoring.rebalance_frequency": [5, 10, 20, 40]}
    folder = demo_folder(100)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.json"
        path.write_text(json.dumps(grid))
        runs = [("local, 1 process", {"local_processes": 1}), ("local, 2 processes", {"local_processes": 2}),
                ("dask, 1 worker", {"workers": 1}), ("dask, 2 workers", {"workers": 2})]
        only = sys.argv[1:]  # e.g. `python bench_sweep.py dask` runs only the Dask cases
        for label, kwargs in [r for r in runs if not only or any(o in r[0] for o in only)]:
            t0 = time.perf_counter()
            summary = run_sweep(str(path), data=str(folder), out=str(Path(tmp) / label.replace(" ", "_").replace(",", "")),
                                progress=False, **kwargs)
            print(f"{label:<20} {summary['combinations']} combinations: wall {time.perf_counter() - t0:6.1f} s "
                  f"(combinations alone {summary['seconds']:6.1f} s)")


if __name__ == "__main__":  # dask workers re-import this module
    main()
