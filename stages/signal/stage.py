"""The signal stage as a unit of work: load prices, compute signals, write validated artifacts."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from schemas.data import DataQualitySchema
from schemas.prices import PricesSchema
from schemas.signals import DailyScoresSchema, DailySignalsSchema, SignalsSchema, SignalWeightsSchema
from stages.common.artifacts import StageRun, manifest_entry, read_manifest, stage_run, validate_frame
from stages.common.calendar import check_price_sessions
from stages.common.corporate_actions import adjusted_prices, adjustment_factors, read_corporate_actions
from stages.common.memory import release_free_memory
from stages.common.panel import to_panel
from stages.common.errors import DataError, IntegrityError
from stages.common.lineage import Lineage
from stages.common.market_data import load_market_data
from stages.common.stage import StageResult, resolve_data_source
from stages.data.quality import check_close_only, quality_report
from stages.signal.compute import compute_signals_and_state, step_signals
from stages.signal.state import STATE_NAME, SignalState, StateUnusable
from stages.signal.target_weights import target_weights_table, weights_csv

log = logging.getLogger(__name__)


def run_signal_stage(
    config: TrendflowConfig, data_dir: str | Path | None, out_dir: str | Path, *, as_of_date: date | None = None
) -> StageResult:
    """Write prices.parquet, signals_output.parquet, its readable twin signals_output.csv (wide target
    weights, when `output.csv_twins`) and signal_state.npz; with `as_of_date` D use prices up to D
    only and also write signals_D.csv and scores_D.csv.

    A daily run whose folder holds the state of an earlier run on the same prices and config
    computes only the days after it (bit-for-bit what a full run gives) and appends them."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    source = resolve_data_source(data_dir, config, out_dir)
    d = config.data
    end = d.end_date if as_of_date is None else min(filter(None, [d.end_date, as_of_date]))
    market = load_market_data(source, d.symbols, d.start_date, end, d.bad_rows, d.min_history_days)
    prices, skipped = market.prices, market.skipped
    del market  # the long prices frame is let go before the full computation (see below)
    n_prices, n_symbols, last_price_day = len(prices), int(prices["symbol"].nunique()), prices["date"].max().date()
    t_load = time.perf_counter()

    if as_of_date is not None and not (prices["date"] == pd.Timestamp(as_of_date)).any():
        last = prices["date"].max().date()
        raise DataError(f"--as-of-date {as_of_date}: no prices on that date in {source} (last date with prices: {last})")

    quality = quality_report(prices, as_of=as_of_date, ended_sessions=config.risk.data_ended_sessions,
                             close_only=check_close_only(prices, config))
    _warn_short_histories(prices, config)
    if d.calendar is not None:
        check_price_sessions(prices, d.calendar, source)

    with stage_run("signal", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins,
                   lineage=Lineage("signal", config)) as run:
        run.notes["data_source"] = str(source)  # the report's provenance names it (as the user gave it)
        if source.is_file() and manifest_entry(source.parent, source.name) is not None:
            run.record_input(source)  # the data stage's panel: a re-fetch then makes these outputs stale
        run.write(quality, "data_quality.csv", DataQualitySchema)
        # encoded on a writer thread while the signals are computed
        run.write(prices, "prices.parquet", PricesSchema, csv_twin=False, already_validated=True)  # by load_market_data
        indicator_prices, factor = on_adjusted_scale(prices, config)
        step = _step_from_saved_state(run, out_dir, indicator_prices, config) if as_of_date is not None else None
        if step is None:
            panel = to_panel(indicator_prices)
            del indicator_prices
            if factor is None:  # (raw units need the prices again afterwards)
                del prices  # only the writer thread still holds it, until prices.parquet is encoded
            release_free_memory()  # what the loader freed, before the computation's own peak
            signals, state = compute_signals_and_state(panel, config)
            del panel
            n_rows = len(signals)
        else:
            previous, signals, state = step  # signals: the new days' rows only
            n_rows = previous.num_rows + len(signals)
        if factor is not None:
            signals = back_to_raw_units(signals, prices, factor)
        t_compute = time.perf_counter()

        if as_of_date is None:
            run.write(signals, "signals_output.parquet", SignalsSchema, csv_twin=False, owned=True)
            run.retire_dated_after(last_price_day, ("signals", "scores"))
            if config.output.csv_twins:
                weights = validate_frame(target_weights_table(signals, config), SignalWeightsSchema, "signals_output.csv")
                run.write_bytes(weights_csv(weights), "signals_output.csv", "SignalWeightsSchema", rows=len(weights))
        else:
            # The evening run's readable output is the day's two CSVs; the whole-history weights twin
            # needs every day's signals, which a step does not hold. The trading stage reads the
            # Parquet, and a twin left by an earlier run would now be stale.
            if step is None:
                run.write(signals, "signals_output.parquet", SignalsSchema, csv_twin=False)
            else:
                run.write_extended(previous, signals, "signals_output.parquet", SignalsSchema)
            run.retire("signals_output.csv")
            day = signals[signals["date"] == pd.Timestamp(as_of_date)]
            tag = as_of_date.isoformat()
            run.write(daily_signals(day), f"signals_{tag}.csv", DailySignalsSchema)
            run.write(day[["date", "symbol", "momentum_score", "rank", "cluster"]], f"scores_{tag}.csv", DailyScoresSchema)
        run.write_bytes(state.to_bytes(), STATE_NAME, "SignalState", rows=len(state.symbols))
    t_write = time.perf_counter()

    last_day = signals[signals["date"] == signals["date"].max()]
    counts = last_day["trend_signal"].value_counts()
    buys, sells = int(counts.get(1, 0)), int(counts.get(-1, 0))
    log.info("Signal scan complete: Buy=%d, Sell=%d, Hold=%d (as of %s)", buys, sells, len(last_day) - buys - sells,
             last_day["date"].iat[0].date())
    log.info("signal timings: load %.2fs, compute %.2fs (%s), write %.2fs", t_load - t0, t_compute - t_load,
             "whole history" if step is None else f"{signals['date'].nunique()} new day(s) from the saved state",
             t_write - t_compute)
    return StageResult(
        stage="signal",
        outputs=dict(run.written),
        rows={"prices": n_prices, "signals_output": n_rows},
        seconds=time.perf_counter() - t0,
        summary={"symbols": n_symbols, "last_date": str(last_day["date"].iat[0].date()),
                 "buy": buys, "sell": sells, "hold": len(last_day) - buys - sells, "skipped_symbols": skipped,
                 "computed": "whole history" if step is None else "from saved state",
                 "timings": {"load": round(t_load - t0, 3), "compute": round(t_compute - t_load, 3),
                             "write": round(t_write - t_compute, 3)}},
    )


def _warn_short_histories(prices: pd.DataFrame, config: TrendflowConfig) -> None:
    """A symbol with fewer sessions than the longest momentum window never gets a full score: say
    which, with how many days and the first day it could, rather than let it sit silently unranked."""
    needed = max(config.scoring.windows) + 1
    days = prices.groupby("symbol", sort=True)["date"].agg(["size", "min", "max"])
    short = days[days["size"] < needed]
    for symbol, row in short.head(20).iterrows():
        log.warning("short history: %s has %d session(s) (%s..%s); its momentum score needs %d, so it is not ranked "
                    "before %d more session(s)", symbol, row["size"], row["min"].date(), row["max"].date(), needed,
                    needed - row["size"])
    if len(short) > 20:
        log.warning("short history: %d more symbols (%s ...)", len(short) - 20, ", ".join(short.index[20:25]))


def on_adjusted_scale(prices: pd.DataFrame, config: TrendflowConfig) -> tuple[pd.DataFrame, np.ndarray | None]:
    """With `data.corporate_actions` (raw prices): the prices the indicators read, adjusted for the
    dividends and splits (stages/common/corporate_actions.py), and each row's factor; else the prices
    as they are and None."""
    if config.data.corporate_actions is None:
        return prices, None
    factor = adjustment_factors(prices, read_corporate_actions(config.data.corporate_actions))
    return adjusted_prices(prices, factor), factor


def back_to_raw_units(signals: pd.DataFrame, prices: pd.DataFrame, factor: np.ndarray) -> pd.DataFrame:
    """Signals computed on adjusted prices, with `close` and `atr` in the raw prices' units again (the
    trading stage fills, marks and trails its stops on raw prices); the other indicator values stay
    on the adjusted scale (scores, ranks and signals do not depend on the scale)."""
    keys = pd.MultiIndex.from_arrays([prices["date"], prices["symbol"].astype(str)])
    at = keys.get_indexer(pd.MultiIndex.from_arrays([signals["date"], signals["symbol"].astype(str)]))
    out = signals.copy()
    out["close"] = prices["close"].to_numpy(dtype=float)[at]
    out["atr"] = signals["atr"].to_numpy(dtype=float) / factor[at]
    return out


def _step_from_saved_state(run: StageRun, out_dir: Path, prices: pd.DataFrame, config: TrendflowConfig):
    """(previous signals table, the new days' rows, the new state) when the folder's signal state and
    signals_output.parquet can carry these prices forward; None (and a log line saying why) when not."""
    import pyarrow as pa_arrow
    import pyarrow.parquet as pq

    state_path, signals_path = out_dir / STATE_NAME, out_dir / "signals_output.parquet"
    if not state_path.exists():
        log.info("no %s in %s: computing the whole history", STATE_NAME, out_dir)
        return None
    inputs_before = dict(run.inputs)
    try:
        entries = read_manifest(out_dir)["artifacts"]
        made_by = [entries.get(name, {}).get("started_at") for name in (STATE_NAME, signals_path.name)]
        if None in made_by or made_by[0] != made_by[1]:
            raise StateUnusable(f"{state_path} and {signals_path} were not written by the same run")
        state = run.read_with(state_path, SignalState.load)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="previous-signals") as pool:
            reading = pool.submit(run.read_with, signals_path, pq.read_table)  # decodes beside the step
            new_rows, after = step_signals(prices, config, state)
            previous = reading.result()
        last = previous.column("date")[-1].as_py() if previous.num_rows else None  # the file is sorted by date
        if previous.num_rows != int(state.counts.sum()) or pd.Timestamp(last) != state.last_date:
            raise StateUnusable(f"{signals_path} ({previous.num_rows} rows up to {last}) does not end where the state does", damaged=True)
    except (StateUnusable, IntegrityError, OSError, pa_arrow.ArrowException) as exc:
        run.inputs.clear()
        run.inputs.update(inputs_before)
        damaged = getattr(exc, "damaged", True)
        (log.warning if damaged else log.info)("signal state not used (%s): computing the whole history", exc)
        return None
    log.info("signal state of %s carried forward: %d new day(s)", state.last_date.date(), new_rows["date"].nunique())
    return previous, new_rows, after


def daily_signals(day: pd.DataFrame) -> pd.DataFrame:
    """signals_{D}.csv rows: every symbol traded on D with 1 buy / -1 sell / 0 hold."""
    return day[["date", "symbol", "trend_signal", "signal_strength", "close"]].rename(columns={"trend_signal": "signal"})
