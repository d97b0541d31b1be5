"""Signal stage timings: full stage (load + compute + write) at 100 and 500 symbols x 10 years,
and a daily run (--as-of-date, prices read back from a saved prices.parquet) for 100 symbols: the
evening run, whose folder holds the previous evening's outputs and signal_state.npz, and the same
run in an empty folder (the whole history recomputed).

Each size runs in its own process, so the printed peak RSS is that size's own peak memory; wall
times are measured without tracemalloc (it slows numpy-heavy code 2x). Targets (issue 3): 500 x
10y whole stage < 3 s on 2 cores; daily run for 100 symbols < 0.3 s.

Run by hand: .venv/bin/python benchmarks/bench_signal.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import demo_folder, max_rss_mib


def best_of(repeat: int, fn):
    """Smallest wall time of `repeat` calls (the machine is shared: the minimum is the fair figure)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def cpu_of(fn) -> float:
    """CPU seconds of one call, all threads (less sensitive than wall time to other load on the box)."""
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def one_size(n: int, repeat: int) -> None:
    import pandas as pd

    from stages.common.config import load_config
    from stages.common.market_data import load_market_data
    from stages.signal import compute_signals, run_signal_stage

    logging.disable(logging.INFO)
    folder = demo_folder(n)
    twins, no_twins = load_config(), load_config(None, ["output.csv_twins=false"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        seconds, market = best_of(repeat, lambda: load_market_data(folder))
        print(f"{n:>4} x 10y  load CSV folder                      {seconds:7.3f} s  ({len(market.prices):,} rows)")
        seconds, _ = best_of(repeat, lambda: compute_signals(market.prices, twins))
        cpu = cpu_of(lambda: compute_signals(market.prices, twins))
        print(f"{n:>4} x 10y  compute_signals                      {seconds:7.3f} s  (CPU {cpu:.3f} s)")
        for label, config, sub in (("whole stage, CSV twin", twins, "a"), ("whole stage, no CSV twin", no_twins, "b")):
            seconds, result = best_of(repeat, lambda: run_signal_stage(config, folder, out / sub))
            t = result.summary["timings"]
            cpu = cpu_of(lambda: run_signal_stage(config, folder, out / sub))
            print(f"{n:>4} x 10y  {label:<36} {seconds:7.3f} s  (CPU {cpu:.3f}; load {t['load']:.3f}, compute {t['compute']:.3f}, write {t['write']:.3f})")
        if n <= 100:
            long_file = out / "a" / "prices.parquet"
            days = sorted(pd.read_parquet(long_file, columns=["date"])["date"].unique())
            last, before = days[-1].date(), days[-2].date()
            for label, config, sub in (("daily run, CSV twin", twins, "twin"), ("daily run, no CSV twin", no_twins, "plain")):
                # the evening run: the folder holds the previous evening's outputs and signal state
                yesterday = out / f"yesterday-{sub}"
                run_signal_stage(config, long_file, yesterday, as_of_date=before)
                evenings = max(repeat, 10)  # a daily run is short: more samples for a fair minimum
                tonight = [out / f"tonight-{sub}-{i}" for i in range(evenings + 1)]
                for folder_i in tonight:
                    shutil.copytree(yesterday, folder_i)
                runs = iter(tonight)
                seconds, result = best_of(evenings, lambda: run_signal_stage(config, long_file, next(runs), as_of_date=last))
                assert result.summary["computed"] == "from saved state", result.summary["computed"]
                t = result.summary["timings"]
                cpu = cpu_of(lambda: run_signal_stage(config, long_file, next(runs), as_of_date=last))
                print(f"{n:>4}        {label:<36} {seconds:7.3f} s  (CPU {cpu:.3f}; load {t['load']:.3f}, compute {t['compute']:.3f}, write {t['write']:.3f})")
            seconds, result = best_of(repeat, lambda: run_signal_stage(no_twins, long_file, out / "cold", as_of_date=last))
            t = result.summary["timings"]
            print(f"{n:>4}        {'daily run, whole history recomputed':<36} {seconds:7.3f} s  (load {t['load']:.3f}, compute {t['compute']:.3f}, write {t['write']:.3f})")
    import os

    print(f"{n:>4} x 10y  load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{n:>4} x 10y  peak RSS of this process             {max_rss_mib():7.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is printed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_size(args.one, args.repeat)
        return
    for n in args.sizes:
        demo_folder(n)  # build the cached universe outside the timed child
        subprocess.run([sys.executable, __file__, "--one", str(n), "--repeat", str(args.repeat)], check=True)


if __name__ == "__main__":
    main()
