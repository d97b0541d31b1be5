"""Market-data loader and demo-universe timings.

For each input (demo universes of 40 / 100 / 500 symbols x 10 years, the real folders in
../shared/data, and a 500-symbol long file), one child process prints: the first call, the best
of --repeat calls (wall and CPU; the machine may be shared, so the minimum is the fair figure),
the peak Python allocation of one call (tracemalloc, timed separately: it slows numpy code) and the
child's peak RSS. Then the demo generator and writer for 40 and 500 symbols.

Targets (issue 2 / signal stage): load 500 x 10y well under 1 s, 40 x 10y < 0.15 s.

Run by hand: .venv/bin/python benchmarks/bench_loader.py [--repeat 5] [--only demo_500 cn_etf ...]
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import CACHE, demo_folder, max_rss_mib

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def sources() -> dict[str, Path]:
    """Name -> folder or file to load (demo universes are built and cached on first use)."""
    found = {f"demo_{n}": demo_folder(n) for n in (40, 100, 500)}
    for market in ("cn_etf", "us_etf", "cn_ashare"):
        if (SHARED / market).is_dir():
            found[market] = SHARED / market
    long_file = CACHE / "demo_500x10_long.parquet"
    if not long_file.exists():
        from stages.common.market_data import load_market_data

        load_market_data(found["demo_500"]).prices.sort_values(["date", "symbol"]).to_parquet(long_file)
    found["long_500.parquet"] = long_file
    return found


def measure(name: str, source: Path, repeat: int) -> None:
    from stages.common.market_data import load_market_data

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    data = load_market_data(source)
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        load_market_data(source)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    tracemalloc.start()
    load_market_data(source)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rows, symbols = len(data.prices), data.prices["symbol"].nunique()
    print(f"load {name:<17} {symbols:>4} sym {rows:>9,} rows   first {first:6.3f} s   best {min(walls):6.3f} s"
          f"   median {sorted(walls)[len(walls) // 2]:6.3f} s   CPU {min(cpus):6.3f} s   py-peak {peak:6.0f} MiB"
          f"   RSS {max_rss_mib():5.0f} MiB")


def measure_demo(n: int) -> None:
    from stages.common.demo import DemoSpec, generate_demo_prices, write_demo_universe

    spec = DemoSpec(n_symbols=n)
    t0 = time.perf_counter()
    generate_demo_prices(spec)
    generate = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_demo_universe(tmp, spec)
        write = time.perf_counter() - t0
    print(f"demo {n:>4} symbols x 10y   generate {generate:6.3f} s   generate + write CSVs {write:6.3f} s"
          f"   RSS {max_rss_mib():5.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per input after the first")
    parser.add_argument("--only", nargs="+", help="input names to run (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--demo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], Path(args.child[1]), args.repeat)
        return
    if args.demo:
        measure_demo(args.demo)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for name, source in sources().items():
        if args.only is None or name in args.only:
            subprocess.run([sys.executable, __file__, "--child", name, str(source), "--repeat", str(args.repeat)], check=True)
    for n in (40, 500):
        if args.only is None or f"demo_write_{n}" in args.only:
            subprocess.run([sys.executable, __file__, "--demo", str(n)], check=True)


if __name__ == "__main__":
    main()
