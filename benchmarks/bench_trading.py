"""Trading stage timings at 100 and 500 symbols x 10 years of the demo universe.

Targets (issue 4): full backtest of 500 symbols x 10 years < 5 s on 2 cores; the daily step for
100 symbols < 0.1 s. Printed: the engine alone (fold over every day; one step from a snapshot), and
the whole stage as a user runs it (read + validate the artifacts, run, validate + write them).

Each size runs in its own process so the peak RSS printed is that size's own; wall times are the
best of --repeat runs (the machine is shared), without tracemalloc (it slows numpy code 2x).
The signal stage's outputs are cached under the benchmark cache folder (they take a while at 500).

Run by hand: .venv/bin/python benchmarks/bench_trading.py [--repeat 3] [--sizes 100 500]
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import CACHE, demo_folder, max_rss_mib


CPU_SECONDS: list[float] = []  # CPU time of the fastest wall-clock run of the last best_of


def best_of(repeat: int, fn):
    """Smallest wall time of `repeat` calls, and the last result (its CPU time in CPU_SECONDS: on a
    shared machine wall time also counts other processes' turns)."""
    times, result = [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    wall, cpu = min(times)
    CPU_SECONDS[:] = [cpu]
    return wall, result


def signal_outputs(n: int, config) -> Path:
    from stages.signal import run_signal_stage

    folder = CACHE / f"signals_{n}x10_{config.signal_hash()[:12]}"
    if not (folder / "signals_output.parquet").exists():
        run_signal_stage(config, demo_folder(n), folder)
    return folder


def one_size(n: int, repeat: int) -> None:
    import shutil


    from schemas.prices import PricesSchema
    from schemas.signals import SignalsSchema
    from schemas.trading import PortfolioSnapshot
    from stages.common.artifacts import read_artifact
    from stages.common.config import load_config
    from stages.trading import run_trading_stage
    from stages.trading.backtest import fold
    from stages.trading.engine import step
    from stages.trading.market import build_market
    from stages.trading.snapshot import from_snapshot, to_snapshot

    logging.disable(logging.INFO)
    config = load_config()
    src = signal_outputs(n, config)
    label = f"{n:>4} x 10y"
    seconds, (prices, signals) = best_of(repeat, lambda: (read_artifact(src / "prices.parquet", PricesSchema),
                                                          read_artifact(src / "signals_output.parquet", SignalsSchema)))
    print(f"{label}  read + validate prices & signals            {seconds:7.3f} s  ({len(signals):,} signal rows)")
    seconds, market = best_of(repeat, lambda: build_market(prices, signals, config))
    print(f"{label}  build market arrays                         {seconds:7.3f} s  ({len(market.dates)} days)")
    seconds, result = best_of(repeat, lambda: fold(market, config))
    print(f"{label}  engine: backtest fold over every day        {seconds:7.3f} s  ({len(result.trade_log):,} fills, "
          f"{seconds / len(market.dates) * 1e6:.0f} us/day, cpu {CPU_SECONDS[0]:.3f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        for twins in (True, False):
            out = Path(tmp) / f"run_{twins}"
            out.mkdir()
            for name in ("prices.parquet", "signals_output.parquet"):
                shutil.copy(src / name, out / name)
            cfg = config if twins else load_config(None, ["output.csv_twins=false"])
            seconds, _ = best_of(repeat, lambda: run_trading_stage(cfg, out, out))
            what = "with CSV twins" if twins else "no CSV twins  "
            print(f"{label}  whole backtest stage, {what}        {seconds:7.3f} s  (read, run, write; cpu {CPU_SECONDS[0]:.3f} s)")
        t = len(market.dates) - 1
        snapshot = to_snapshot(fold(market, config, end=t).state, market, t - 1, config, "signals")
        text = snapshot.model_dump_json()

        def daily_step():
            state = from_snapshot(PortfolioSnapshot.model_validate_json(text), market, config, "signals", "bench")
            return step(state, market.day(t), config)

        seconds, record = best_of(max(repeat, 20), daily_step)
        print(f"{label}  engine: one daily step from a snapshot      {seconds * 1000:7.2f} ms ({len(record.orders)} orders)")
        daily = Path(tmp) / "daily"
        shutil.copytree(Path(tmp) / "run_True", daily)
        previous = market.dates[t - 1].date()
        (daily / f"portfolio_{previous}.json").write_text(text)
        day = market.dates[t].date()
        seconds, _ = best_of(repeat, lambda: run_trading_stage(config, daily, daily, as_of_date=day,
                                                               portfolio=daily / f"portfolio_{previous}.json"))
        print(f"{label}  whole daily stage (files in, files out)     {seconds:7.3f} s  (reads the full history; cpu "
              f"{CPU_SECONDS[0]:.3f} s)")
    print(f"{label}  peak RSS {max_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_size(args.one, args.repeat)
        return
    print("targets: 500 x 10y backtest < 5 s on 2 cores; daily step for 100 symbols < 0.1 s")
    for n in args.sizes:
        subprocess.run([sys.executable, __file__, "--one", str(n), "--repeat", str(args.repeat)], check=True)


if __name__ == "__main__":
    main()
