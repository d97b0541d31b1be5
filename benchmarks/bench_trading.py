"""Trading stage timings: full backtest of 500 symbols x 10 years; one daily step for 100 symbols."""
from __future__ import annotations

import tempfile
from pathlib import Path

import _common  # noqa: F401
from _common import demo_folder, max_rss_mib, timed

import pandas as pd

from stages.common.config import load_config
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage
from stages.trading.backtest import run_backtest, to_snapshot, from_snapshot
from stages.trading.engine import step
from stages.trading.market import build_market

config = load_config()
for n in (100, 500):
    with tempfile.TemporaryDirectory() as out:
        out = Path(out)
        run_signal_stage(config, demo_folder(n), out)
        prices, signals = pd.read_parquet(out / "prices.parquet"), pd.read_parquet(out / "signals_output.parquet")
        with timed(f"{n} symbols x 10y: build market arrays"):
            market = build_market(prices, signals, config)
        with timed(f"{n} symbols x 10y: backtest (engine fold)"):
            result = run_backtest(market, config)
        with timed(f"{n} symbols x 10y: whole trading stage (read, run, write)", track_memory=False):
            run_trading_stage(config, out, out)
        t = len(market.dates) - 1
        snapshot = to_snapshot(run_backtest(market, config, end=t).state, market, t - 1, config)
        with timed(f"{n} symbols: one daily step from a snapshot (engine only)"):
            step(from_snapshot(snapshot, market, config, "bench"), market, t, config)
        day = market.dates[t].date()
        with timed(f"{n} symbols: daily trading stage (files in, files out)", track_memory=False):
            run_trading_stage(config, out, out / "daily", as_of_date=day, fresh=True)
print(f"max RSS {max_rss_mib():.0f} MiB")
