"""The signal stage as a unit of work: load prices, compute signals, write validated artifacts."""
from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.prices import PricesSchema
from schemas.signals import DailyScoresSchema, DailySignalsSchema, SignalsSchema
from stages.common.artifacts import stage_run
from stages.common.errors import DataError
from stages.common.market_data import load_market_data
from stages.common.stage import StageResult, resolve_data_source
from stages.signal.compute import compute_signals

log = logging.getLogger(__name__)


def run_signal_stage(
    config: TrendflowConfig, data_dir: str | Path | None, out_dir: str | Path, *, as_of_date: date | None = None
) -> StageResult:
    """Write prices.parquet and signals_output.parquet (+csv); with `as_of_date` D use prices up to D
    only and also write signals_D.csv and scores_D.csv."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    source = resolve_data_source(data_dir, config, out_dir)
    d = config.data
    end = d.end_date if as_of_date is None else min(filter(None, [d.end_date, as_of_date]))
    market = load_market_data(source, d.symbols, d.start_date, end, d.bad_rows, d.min_history_days)
    prices = market.prices
    t_load = time.perf_counter()

    if as_of_date is not None and not (prices["date"] == pd.Timestamp(as_of_date)).any():
        last = prices["date"].max().date()
        raise DataError(f"--as-of-date {as_of_date}: no prices on that date in {source} (last date with prices: {last})")
    signals = compute_signals(prices, config)
    t_compute = time.perf_counter()

    with stage_run("signal", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins) as run:
        run.write(prices, "prices.parquet", PricesSchema, csv_twin=False)
        if as_of_date is None:
            run.write(signals, "signals_output.parquet", SignalsSchema)
        else:
            # The evening run's readable output is the day's two CSVs; re-rendering the whole history
            # as CSV every night would cost more than everything else the run does. The trading stage
            # reads the Parquet, and a whole-history twin left by an earlier run would now be stale.
            run.write(signals, "signals_output.parquet", SignalsSchema, csv_twin=False)
            run.retire("signals_output.csv")
            day = signals[signals["date"] == pd.Timestamp(as_of_date)]
            tag = as_of_date.isoformat()
            run.write(daily_signals(day), f"signals_{tag}.csv", DailySignalsSchema)
            run.write(day[["date", "symbol", "momentum_score", "rank", "cluster"]], f"scores_{tag}.csv", DailyScoresSchema)
    t_write = time.perf_counter()

    last_day = signals[signals["date"] == signals["date"].max()]
    counts = last_day["trend_signal"].value_counts()
    buys, sells = int(counts.get(1, 0)), int(counts.get(-1, 0))
    log.info("Signal scan complete: Buy=%d, Sell=%d, Hold=%d (as of %s)", buys, sells, len(last_day) - buys - sells,
             last_day["date"].iat[0].date())
    log.info("signal timings: load %.2fs, compute %.2fs, write %.2fs", t_load - t0, t_compute - t_load, t_write - t_compute)
    return StageResult(
        stage="signal",
        outputs=dict(run.written),
        rows={"prices": len(prices), "signals_output": len(signals)},
        seconds=time.perf_counter() - t0,
        summary={"symbols": int(prices["symbol"].nunique()), "last_date": str(last_day["date"].iat[0].date()),
                 "buy": buys, "sell": sells, "hold": len(last_day) - buys - sells, "skipped_symbols": market.skipped,
                 "timings": {"load": round(t_load - t0, 3), "compute": round(t_compute - t_load, 3),
                             "write": round(t_write - t_compute, 3)}},
    )


def daily_signals(day: pd.DataFrame) -> pd.DataFrame:
    """signals_{D}.csv rows: every symbol traded on D with 1 buy / -1 sell / 0 hold."""
    return day[["date", "symbol", "trend_signal", "signal_strength", "close"]].rename(columns={"trend_signal": "signal"})
