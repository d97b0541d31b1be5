"""Reporting stage timing on a 10-year x 500-symbol run (target: < 2 s).

Prints: the first call in this process (it also pays pandera's one-off schema set-up, which imports
dask when dask is installed), then the steady state (best of 10), the phases of one call, peak
Python memory of one call (tracemalloc, timed separately since tracing slows it), and the report size.
Usage: .venv/bin/python benchmarks/bench_reporting.py [n_symbols]
"""
from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _common  # noqa: F401
from _common import demo_folder, max_rss_mib

from stages.common.config import load_config
from stages.reporting import run_reporting_stage
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage


def main() -> None:
    n_symbols = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "run", Path(tmp) / "report"
        t0 = time.perf_counter()
        run_signal_stage(config, demo_folder(n_symbols), src)
        run_trading_stage(config, src, src)
        print(f"setup: signal + trading on {n_symbols} symbols x 10y in {time.perf_counter() - t0:.1f} s")
        import pandas as pd

        benchmark = sorted(pd.read_parquet(src / "prices.parquet", columns=["symbol"])["symbol"].unique())[0]

        def once() -> float:
            start = time.perf_counter()
            run_reporting_stage(config, src, out, benchmark=benchmark)
            return time.perf_counter() - start

        first = once()
        steady = min(once() for _ in range(10))  # best of 10: other jobs on the machine only ever add time
        print(f"{n_symbols} symbols x 10y, benchmark {benchmark}: reporting stage")
        print(f"  first call in the process   {first:6.2f} s  (includes pandera's one-off set-up)")
        print(f"  steady state (best of 10)   {steady:6.2f} s  target < 2 s: {'OK' if steady < 2 else 'MISSED'}")
        _phases(config, src, out, benchmark)
        tracemalloc.start()
        once()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"  peak Python memory          {peak:6.0f} MiB (tracemalloc), process max RSS {max_rss_mib():.0f} MiB")
        print(f"  report.html                 {(out / 'report.html').stat().st_size / 1024:6.0f} KiB")


def _phases(config, src: Path, out: Path, benchmark: str) -> None:
    """Wall time per phase of one call, by wrapping the stage's own functions."""
    from stages.reporting import report, stage

    spent: dict[str, float] = {}
    originals = {}
    targets = [(stage, "_read_signals", "read signals_output (5 columns)"), (stage, "compute_metrics", "metrics"),
               (stage, "signal_quality", "signal quality"), (report, "_performance_charts", "charts: equity, underwater"),
               (report, "_rolling", "chart: rolling Sharpe/vol"), (report, "_exposure_charts", "charts: exposure, turnover"),
               (report, "_signal_quality", "signal-quality tables + chart"), (stage, "render_report", "render report.html (all)")]
    for module, name, label in targets:
        original = getattr(module, name)
        originals[(module, name)] = original

        def timed(*args, _f=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - start
        setattr(module, name, timed)
    try:
        start = time.perf_counter()
        run_reporting_stage(config, src, out, benchmark=benchmark)
        total = time.perf_counter() - start
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)
    for label, seconds in spent.items():
        print(f"    {label:<34} {seconds:6.3f} s")
    print(f"    {'total':<34} {total:6.3f} s")


if __name__ == "__main__":
    main()
