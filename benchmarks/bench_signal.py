"""Signal stage timings: full stage (load + compute + write) at 100 and 500 symbols x 10 years,
and a daily run for 100 symbols. Run by hand: python benchmarks/bench_signal.py"""
from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import demo_folder, max_rss_mib, timed

import pandas as pd

from stages.common.config import load_config
from stages.common.market_data import load_market_data
from stages.signal import compute_signals, run_signal_stage

config = load_config()
no_twins = load_config(None, ["output.csv_twins=false"])
for n in (100, 500):
    folder = demo_folder(n)
    with tempfile.TemporaryDirectory() as out:
        with timed(f"{n} symbols x 10y: load CSV folder"):
            prices = load_market_data(folder).prices
        with timed(f"{n} symbols x 10y: compute_signals"):
            compute_signals(prices, config)
        with timed(f"{n} symbols x 10y: whole stage (with CSV twin)", track_memory=False):
            run_signal_stage(config, folder, Path(out))
        with timed(f"{n} symbols x 10y: whole stage (no CSV twin)", track_memory=False):
            run_signal_stage(no_twins, folder, Path(out) / "b")
        long_file = Path(out) / "prices.parquet"
        last = pd.read_parquet(long_file)["date"].max().date()
        if n == 100:
            with timed("100 symbols: daily run from a saved prices.parquet", track_memory=False):
                run_signal_stage(no_twins, long_file, Path(out) / "daily", as_of_date=last)
print(f"max RSS {max_rss_mib():.0f} MiB")
