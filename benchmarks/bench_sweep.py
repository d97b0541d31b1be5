"""Sweep: 100 combinations x 100 symbols x 10 years -- local process pool and Dask (Prefect tasks on a
LocalCluster) with 1 and 2 workers.

Each run is a fresh `trendflow sweep` command in its own process and output folder, as a user would run
it: imports, loading prices, the signals, the Prefect temporary server and the Dask cluster (Dask runs)
and the result files are all in its wall time. Runs are interleaved (l1, l2, d1, d2, l1, ...) so that
load from other work on the machine falls on every case alike; the best of --repeat runs is reported.
"CPU" is user+system seconds of the whole process tree (main process, Prefect server, nannies, workers);
"peak RSS" is the largest sum of resident memory over that tree (sampled every 0.2 s).

    python benchmarks/bench_sweep.py                  # all four cases, best of 2
    python benchmarks/bench_sweep.py dask --repeat 3  # only the Dask cases
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

import _common  # noqa: F401
from _common import demo_folder

GRID = {"risk.atr_multiplier": [1.5, 2.0, 2.5, 3.0, 3.5], "scoring.buy_top_n": [5, 8, 10, 12, 15],
        "scoring.rebalance_frequency": [5, 10, 20, 40]}
CASES = [("local, 1 process", ["--processes", "1"]), ("local, 2 processes", ["--processes", "2"]),
         ("dask, 1 worker", ["--workers", "1"]), ("dask, 2 workers", ["--workers", "2"])]
ROOT = Path(__file__).resolve().parents[1]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(grid: Path, data: Path, out: Path, flags: list[str]) -> dict:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    cmd = [sys.executable, "-m", "flows.cli", "sweep", "--grid", str(grid), "--data", str(data), "--out", str(out),
           "--no-progress", *flags]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        proc = psutil.Process(child.pid)
        while child.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{output[-3000:]}")
    match = re.search(r"sweep: (\d+) combinations .*?, ([\d.]+)s", output)
    return {"wall": wall, "combos_s": float(match.group(2)) if match else float("nan"),
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_mib": peak[0] / 2**20, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="run only the cases whose label contains one of these words (e.g. dask)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best is reported (default 2)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or any(o in c[0] for o in args.only)]
    folder = demo_folder(100)
    print(f"{len(GRID['risk.atr_multiplier']) * len(GRID['scoring.buy_top_n']) * len(GRID['scoring.rebalance_frequency'])} "
          f"combinations x 100 symbols x 10 years, {os.cpu_count()} CPUs, best of {args.repeat}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[dict]] = {label: [] for label, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "grid.json"
        grid.write_text(json.dumps(GRID))
        for round_ in range(args.repeat):
            for i, (label, flags) in enumerate(cases):
                r = run_once(grid, folder, Path(tmp) / f"run{round_}_{i}", flags)
                runs[label].append(r)
                print(f"  {label:<20} wall {r['wall']:6.1f} s  (combinations {r['combos_s']:5.1f} s)  CPU {r['cpu']:6.1f} s  "
                      f"peak RSS {r['peak_mib']:6.0f} MiB  load {r['load']:.2f}", flush=True)
    print(f"\n{'case':<20} {'best wall':>10} {'runs':>16} {'CPU':>8} {'peak RSS':>10}")
    best = {}
    for label, rs in runs.items():
        top = min(rs, key=lambda r: r["wall"])
        best[label] = top["wall"]
        walls = "/".join(f"{r['wall']:.1f}" for r in rs)
        print(f"{label:<20} {top['wall']:8.1f} s {walls:>16} {top['cpu']:6.1f} s "
              f"{top['peak_mib']:6.0f} MiB")
    for kind, one, two in [("local", "local, 1 process", "local, 2 processes"), ("dask", "dask, 1 worker", "dask, 2 workers")]:
        if one in best and two in best:
            print(f"speed-up 1 -> 2 ({kind}): {best[one] / best[two]:.2f}x")
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
