"""`trendflow sweep`: parameter sweeps and walk-forward validation.

The signal stage runs once per distinct signal setting (TrendflowConfig.signal_hash) and is shared
by every combination with that setting; each combination runs trading + metrics. Locally the
combinations run in a process pool; with --workers N (a dask LocalCluster) or --dask-address they
run as Prefect tasks on Dask workers (prefect-dask's DaskTaskRunner). Finished combinations are
recorded one file each, so an interrupted sweep resumes without redoing them.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.sweep import (SWEEP_METRICS, OverfittingSummary, SweepResultsSchema, SweepReturnsSchema, WalkForwardEquitySchema,
                           WalkForwardSchema)
from stages.common.artifacts import atomic_write_bytes, stage_run
from stages.common.cli import add_common_arguments, run_command, setup_logging
from stages.common.config import load_config
from stages.common.errors import ConfigError, TransientIOError
from stages.common.market_data import load_market_data
from stages.common.stage import resolve_data_source, resolve_out_dir
from stages.reporting.metrics import per_period_rate
from stages.sweep.grid import base_config_dict, combo_id, config_for, expand, load_grid
from stages.sweep.overfitting import assess, returns_matrix, select_best
from stages.sweep.report import important_axes, sweep_report  # noqa: F401 -- important_axes: tests and callers
from stages.sweep.runner import (SELECTION_METRICS, ResumeStore, backtest, evaluate, metrics_of, selection_score, stitch,
                                 walk_forward_windows)

log = logging.getLogger("trendflow.sweep")
STATE_DIR = "sweep_state"
TRANSIENT_ATTEMPTS = 3  # a combination failing with a transient I/O error is tried this many times


# --------------------------------------------------------------------------- one combination (runs anywhere)
@lru_cache(maxsize=8)
def _frame(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


def job_key(combo: dict, span: tuple[int, int] | None = None) -> str:
    """Resume-store key: the combination id, plus the day span for a walk-forward training run."""
    return combo_id(combo) if span is None else f"{combo_id(combo)}_{span[0]}_{span[1]}"


def evaluate_combination(prices_path: str, signals_path: str, base: dict, combo: dict, state_dir: str | None,
                         span: tuple[int, int] | None = None) -> dict:
    """Trading + metrics for one combination from saved prices/signals files, over the whole history or
    the trading days [span[0], span[1]); records the result when done."""
    cid = combo_id(combo)
    row = {"combo_id": cid, "params": combo}
    if span is not None:
        row["span"] = [int(span[0]), int(span[1])]
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            config = config_for(base, combo)
            row.update(evaluate(_frame(prices_path), _frame(signals_path), config, *(span or ())), status="ok", error=None)
            break
        except (TransientIOError, OSError) as exc:  # e.g. a shared folder briefly unavailable: retried
            if attempt < TRANSIENT_ATTEMPTS:
                log.warning("combination %s: %s (attempt %d of %d, retrying)", cid, exc, attempt, TRANSIENT_ATTEMPTS)
                _frame.cache_clear()
                time.sleep(0.2 * attempt)
                continue
            row.update({k: math.nan for k in SWEEP_METRICS}, status="failed",
                       error=f"{type(exc).__name__}: {exc} (after {attempt} attempts)")
        except Exception as exc:  # noqa: BLE001 -- a failed combination is reported, never dropped
            row.update({k: math.nan for k in SWEEP_METRICS}, status="failed", error=f"{type(exc).__name__}: {exc}")
            break
    if state_dir is not None:
        atomic_write_bytes(Path(state_dir) / f"{job_key(combo, span)}.json", json.dumps(row, sort_keys=True).encode())
    return row


def evaluate_batch(prices_path: str, jobs: list[tuple[str, dict, tuple[int, int] | None]], base: dict,
                   state_dir: str | None) -> list[dict]:
    """Several jobs (signals file, combination, span) in one task, each recorded as it finishes, so a
    retry or resume skips it."""
    done = {p.stem for p in Path(state_dir).glob("*.json")} if state_dir else set()
    rows = []
    for signals_path, combo, span in jobs:
        key = job_key(combo, span)
        if state_dir is not None and key in done:
            rows.append(json.loads((Path(state_dir) / f"{key}.json").read_text()))
            continue
        rows.append(evaluate_combination(prices_path, signals_path, base, combo, state_dir, span))
    return rows


# --------------------------------------------------------------------------- progress
class Progress:
    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.t0, self.enabled = total, 0, time.perf_counter(), enabled and total > 0

    def tick(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}  {elapsed:5.1f}s  ETA {eta:5.1f}s")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------- the sweep
def compute_signals(prices: pd.DataFrame, config) -> pd.DataFrame:
    """stages.signal.compute_signals, imported on first use: Dask workers import this module but never
    compute signals, and the signal stage's imports (scipy.signal) cost each worker about a second."""
    from stages.signal import compute_signals as compute

    return compute(prices, config)


def prepare_signals(prices: pd.DataFrame, base: dict, combos: list[dict], state: Path) -> dict[str, str]:
    """Signals once per distinct signal setting, saved as Parquet for the workers; combo id -> signals file."""
    by_hash: dict[str, str] = {}
    paths: dict[str, str] = {}
    for combo in combos:
        config = config_for(base, combo)
        key = config.signal_hash()[:16]
        if key not in by_hash:
            path = state / f"signals_{key}.parquet"
            if not path.exists():
                compute_signals(prices, config).to_parquet(path, index=False)
            by_hash[key] = str(path)
        paths[combo_id(combo)] = by_hash[key]
    log.info("%d combinations share %d signal setting(s)", len(combos), len(by_hash))
    return paths


def run_sweep(grid_path: str, *, config_path: str | None = None, overrides: list[str] | None = None, data: str | None = None,
              out: str | None = None, workers: int | None = None, dask_address: str | None = None,
              walk_forward: str | None = None, metric: str = "sharpe", keep_artifacts: bool = False,
              progress: bool = True, local_processes: int | None = None, pbo_splits: int = 16) -> dict:
    overrides = list(overrides or [])
    config = load_config(config_path, overrides)
    base = base_config_dict(config_path, overrides)
    if metric not in SELECTION_METRICS:
        raise ConfigError(f"--metric {metric!r}: choose one of {', '.join(SELECTION_METRICS)}")
    if pbo_splits < 2 or pbo_splits % 2:
        raise ConfigError(f"--pbo-splits {pbo_splits}: use an even number >= 2 (16 or more recommended)")
    grid = load_grid(grid_path, base)
    combos = expand(grid)
    out_dir = resolve_out_dir(out, config)
    source = resolve_data_source(data, config, out_dir)
    d = config.data
    prices = load_market_data(source, d.symbols, d.start_date, d.end_date, d.bad_rows, d.min_history_days).prices
    # Finished combinations are valid only for the same prices and the same base config (a different
    # --config/--set must not reuse them): both go into the key of the resume folder.
    fingerprint = hashlib.sha256(pd.util.hash_pandas_object(prices, index=False).to_numpy().tobytes()
                                 + json.dumps(base, sort_keys=True).encode()).hexdigest()
    store = ResumeStore(out_dir / STATE_DIR, fingerprint)
    prices_path = store.folder / "prices.parquet"
    if not prices_path.exists():
        prices.to_parquet(prices_path, index=False)
    windows = walk_forward_windows(pd.DatetimeIndex(np.unique(prices["date"])), walk_forward) if walk_forward else []
    # a full-history record without its daily returns (written before the sweep kept them) is run again
    finished = {key for key, row in store.done().items() if "span" in row or row.get("status") != "ok" or "returns" in row}
    pending = [c for c in combos if combo_id(c) not in finished]
    # Walk-forward training runs (every combination on every training span) go through the same
    # workers and resume store as the sweep itself; the test spans (one per window) run here after.
    training = [(c, w.train) for w in windows for c in combos if job_key(c, w.train) not in finished]
    on_dask = bool(workers or dask_address) and bool(pending or training)
    with DaskBackend(workers, dask_address) if on_dask else contextlib.nullcontext() as backend:
        # the cluster and the Prefect API start in the background while the signals are computed
        signal_paths = prepare_signals(prices, base, combos, store.folder)
        jobs = [(signal_paths[combo_id(c)], c, None) for c in pending]
        jobs += [(signal_paths[combo_id(c)], c, span) for c, span in training]
        log.info("sweep: %d combinations, %d already done, %d to run; %d walk-forward training run(s) to do", len(combos),
                 len(combos) - len(pending), len(pending), len(training))
        t0 = time.perf_counter()
        if backend is not None:
            _run_on_dask(jobs, str(prices_path), base, str(store.folder), backend, progress)
        elif jobs:
            _run_locally(jobs, str(prices_path), base, str(store.folder), local_processes, progress)
        seconds = time.perf_counter() - t0
    records = store.done()
    rows = [records[combo_id(c)] for c in combos]
    results = results_frame(rows, list(grid), signal_paths)
    rp = config.reporting
    overfit, logits = assess(rows, metric, per_period_rate(rp.risk_free_rate, rp.periods_per_year), rp.periods_per_year,
                             pbo_splits)
    wf_table = wf_equity = None
    with stage_run("sweep", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins) as run:
        run.write(results, "sweep_results.parquet", SweepResultsSchema)
        run.write_json(overfit, "sweep_overfitting.json", OverfittingSummary)
        returns = returns_frame(rows, pd.DatetimeIndex(np.unique(prices["date"])))
        if returns is not None:  # what DSR and PBO were computed from, for anyone who wants to recompute them
            run.write(returns, "sweep_returns.parquet", SweepReturnsSchema, csv_twin=False)
        if walk_forward:
            wf_table, wf_equity = run_walk_forward(prices, base, combos, signal_paths, windows, metric, records)
            wf_equity = with_comparisons(wf_equity, prices, select_best(rows, metric), float(base["execution"]["initial_cash"]))
            run.write(wf_table, "walk_forward_results.parquet", WalkForwardSchema)
            run.write(wf_equity, "walk_forward_equity.parquet", WalkForwardEquitySchema)
        run.write_text(sweep_report(results, list(grid), metric, overfit, wf_table, wf_equity, float(base["execution"]["initial_cash"]),
                                    logits, per_period_rate(rp.risk_free_rate, rp.periods_per_year), rp.periods_per_year),
                       "sweep_report.html", kind="html")
        if keep_artifacts:
            _keep_artifacts(prices, base, combos, signal_paths, out_dir)
    failed = int((results["status"] == "failed").sum())
    if failed:
        log.warning("%d combination(s) failed: see the error column of sweep_results.csv", failed)
    return {"combinations": len(combos), "ran": len(pending), "failed": failed, "seconds": round(seconds, 3),
            "signal_settings": len(set(signal_paths.values())), "results": results, "overfitting": overfit, "out": str(out_dir)}


def _run_locally(jobs, prices_path, base, state_dir, processes, progress) -> None:
    """In this process for one worker; else a process pool (each worker caches the frames it reads)."""
    bar = Progress(len(jobs), progress)
    processes = processes if processes is not None else min(len(jobs), os.cpu_count() or 1)
    if processes <= 1:
        for signals_path, combo, span in jobs:
            evaluate_combination(prices_path, signals_path, base, combo, state_dir, span)
            bar.tick()
        return
    with ProcessPoolExecutor(max_workers=processes) as pool:
        futures = [pool.submit(evaluate_combination, prices_path, signals_path, base, combo, state_dir, span)
                   for signals_path, combo, span in jobs]
        for _ in as_completed(futures):
            bar.tick()


def batches_of(jobs: list, n_batches: int) -> list[list]:
    """Contiguous slices of the jobs sorted by signals file (a worker reads few signal files and reuses
    their aligned market), balanced in size."""
    ordered = sorted(jobs, key=lambda j: j[0])
    n = max(1, min(len(ordered), n_batches))
    edges = np.linspace(0, len(ordered), n + 1).round().astype(int)
    return [ordered[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


# Dask settings for the LocalCluster's worker processes. By default a worker's event loop wakes every
# 10 ms to sample the running task's stack (the dashboard's profile), every 20 ms to time itself and
# every 100 ms to read its memory; each wake-up takes the GIL from the batch in the worker's task
# thread, and together they made each combination 15-20% slower than in a plain process.
QUIET_WORKER = {"distributed": {"worker": {"profile": {"enabled": False}, "memory": {"monitor-interval": "1s"}},
                                "admin": {"tick": {"interval": "1s"}, "system-monitor": {"interval": "5s"}}}}
WORKER_PRELOAD = ["prefect.task_engine", __name__]  # imported by each worker process as it starts, not by its first task
WORKER_START_TIMEOUT = 120  # seconds for the first worker process to come up


class DaskBackend:
    """What the Dask path runs on, started on entering and ready (`ready()`) only when first needed, so
    that its start-up overlaps computing the signals:

    - a LocalCluster of `workers` worker processes with one thread each (the trading loop is pure
      Python: two batches in one process would share a GIL), QUIET_WORKER, importing the task code
      while they start -- or an existing scheduler at `address`;
    - one Prefect API for the flow and all its task runs: PREFECT_API_URL when set, else Prefect's
      temporary server for this process, whose URL reaches the workers in each task's settings. (Left
      to Prefect, every worker process started a temporary server of its own -- a uvicorn process on
      the shared database, ~8 s of CPU each, competing with the batches -- and recorded its task runs
      there rather than beside their flow run.) A remote cluster cannot reach a temporary server on
      this machine: with `address` and no PREFECT_API_URL the workers still start their own.
    """

    def __init__(self, workers: int | None, address: str | None):
        self.workers, self.address = workers, address
        self._cluster = None
        self._api: Future | None = None

    def __enter__(self) -> "DaskBackend":
        try:
            if self.address is None:
                import dask.config
                from distributed import LocalCluster

                # (a Nanny merges `config` over dask's settings one level deep only: it gets the whole tree)
                self._cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                             config=dask.config.merge(dask.config.config, QUIET_WORKER),
                                             preload=WORKER_PRELOAD)
                self._cluster.scale(self.workers)  # returns at once: the worker processes start in the background
                self.address = self._cluster.scheduler_address
            # Importing Prefect's server (~3.5 s) then booting it (~5 s, in its own process) is the longest
            # path to the first batch: the import runs here while the workers start, the boot while the
            # signals are computed.
            server = _temporary_prefect_server(reachable=self._cluster is not None)
        except BaseException:
            self.__exit__()
            raise
        if server is None:
            self._api = Future()
            self._api.set_result(None)
        else:
            pool = ThreadPoolExecutor(1, thread_name_prefix="prefect-server")
            self._api = pool.submit(lambda: server.start() or server.api_url)
            pool.shutdown(wait=False)
        return self

    def __exit__(self, *exc) -> None:
        if self._api is not None:
            concurrent.futures.wait([self._api])  # never leave the server half-started
        if self._cluster is not None:
            self._cluster.close()

    @contextlib.contextmanager
    def ready(self):
        """Waits for the API and the first worker; within, Prefect's settings name the API."""
        url = self._api.result()
        if self._cluster is not None:
            try:
                self._cluster.wait_for_workers(1, timeout=WORKER_START_TIMEOUT)
            except TimeoutError as exc:  # a worker that cannot start is logged by distributed; never hang
                raise RuntimeError(f"no Dask worker process started within {WORKER_START_TIMEOUT} s "
                                   "(see distributed's errors above)") from exc
        if url is None:
            yield
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):
            yield


def _temporary_prefect_server(reachable: bool):
    """Prefect's temporary server for this process (not started yet) when the flow and the workers need
    one; None when PREFECT_API_URL names a server (the workers receive it with each task's settings), or
    the workers could not reach a server on this machine (`reachable` False), or Prefect forbids one."""
    from flows.local_server import use_prefect_defaults

    use_prefect_defaults()
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value():
        return None
    if not reachable:
        log.warning("no PREFECT_API_URL: each Dask worker starts a temporary Prefect server of its own; set "
                    "PREFECT_API_URL to a server the workers can reach to see their task runs")
        return None
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None  # Prefect itself says what is missing
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer()  # the one Prefect would start for this process (stopped at exit)


def _run_on_dask(jobs, prices_path, base, state_dir, backend: DaskBackend, progress) -> None:
    """Batches of jobs as Prefect tasks on Dask workers; a failed batch is retried by Prefect (a batch
    skips the jobs it already recorded). Workers get file paths, never frames: each reads the prices and
    its signal files once and keeps them, with the market arrays built from them, for its later batches."""
    from prefect import flow, task  # imported while the Prefect server may still be booting
    from prefect.artifacts import create_table_artifact
    from prefect.futures import as_completed as prefect_completed
    from prefect_dask import DaskTaskRunner

    batch_task = task(evaluate_batch, name="sweep-combinations", retries=2, retry_delay_seconds=1)
    # A few batches per worker: enough to balance load, few enough that Prefect's per-task cost is small.
    batches = batches_of(jobs, (backend.workers or 4) * 4)

    @flow(name="trendflow_sweep", task_runner=DaskTaskRunner(address=backend.address))
    def sweep_flow() -> list[dict]:
        futures = [batch_task.submit(prices_path, batch, base, state_dir) for batch in batches]
        bar = Progress(len(jobs), progress)
        rows = []
        for future in prefect_completed(futures):
            for row in future.result():
                rows.append(row)
                bar.tick()
        full = [r for r in rows if r["status"] == "ok" and "span" not in r]
        best = sorted(full, key=lambda r: (-np.nan_to_num(r["sharpe"], nan=-1e9), r["combo_id"]))[:10]
        create_table_artifact(key="sweep-best", table=[{"combo_id": r["combo_id"], **r["params"], "sharpe": r["sharpe"],
                                                        "cagr": r["cagr"], "max_drawdown": r["max_drawdown"]} for r in best],
                              description="best combinations by Sharpe")
        return rows

    with backend.ready():
        sweep_flow()


def results_frame(rows: list[dict], keys: list[str], signal_paths: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame([{
        "combo_id": r["combo_id"], "signal_hash": Path(signal_paths[r["combo_id"]]).stem.removeprefix("signals_"),
        "status": r["status"], "error": r.get("error"), **{k: r.get(k, math.nan) for k in SWEEP_METRICS},
        **{f"param:{k}": json.dumps(r["params"][k]) for k in keys},
    } for r in rows])
    return frame


def run_walk_forward(prices, base, combos, signal_paths, windows, metric, records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best combination on each training span by `metric` (from the recorded training runs: selection
    sees only days [train start, train end)), then traded fresh from cash on the test span (its signals
    may use earlier prices: each day's signal uses closes up to that day only)."""
    dates = pd.DatetimeIndex(np.unique(prices["date"]))
    rows, curves = [], []
    for w in windows:
        scored = []
        for combo in combos:
            cid = combo_id(combo)
            record = records[job_key(combo, w.train)]  # recorded by the run above (failed runs too)
            m = {k: (math.nan if record.get(k) is None else float(record[k])) for k in SWEEP_METRICS}
            scored.append((selection_score(m, metric), cid, combo, m))
        # best score; ties go to the smallest combo id so the choice is reproducible
        _, cid, combo, in_sample = min(scored, key=lambda s: (-s[0], s[1]))
        config = config_for(base, combo)
        test = backtest(prices, _frame(signal_paths[cid]), config, *w.test)
        out_sample = metrics_of(test, config)
        rows.append({"window": w.index, "train_start": dates[w.train[0]], "train_end": dates[w.train[1] - 1],
                     "test_start": dates[w.test[0]], "test_end": dates[w.test[1] - 1], "combo_id": cid,
                     "params": json.dumps(combo), "metric": metric,
                     "in_sample": in_sample[metric], "out_of_sample": out_sample[metric],
                     "in_sample_total_return": in_sample["total_return"], "out_of_sample_total_return": out_sample["total_return"]})
        curves.append((w.index, test.equity_curve))
    return pd.DataFrame(rows), stitch(curves, float(base["execution"]["initial_cash"]))


def returns_frame(rows: list[dict], sessions: pd.DatetimeIndex) -> pd.DataFrame | None:
    """sweep_returns.parquet: date, then one column of daily returns per successful combination (by id)."""
    found = returns_matrix(rows)
    if found is None or found[1].shape[0] != len(sessions):
        return None
    ids, matrix = found
    return pd.concat([pd.DataFrame({"date": sessions}), pd.DataFrame(matrix, columns=ids)], axis=1)


def with_comparisons(equity: pd.DataFrame, prices: pd.DataFrame, best: dict | None, initial: float) -> pd.DataFrame:
    """The stitched out-of-sample curve beside two yardsticks on the same dates, both starting from `initial`
    at the close before the first test day: the combination that is best over the whole history (chosen
    with hindsight: what the sweep's top row promises) and an equal-weight buy-and-hold of every symbol
    with a close at that start."""
    dates = pd.DatetimeIndex(equity["date"])
    sessions = pd.DatetimeIndex(np.unique(prices["date"]))
    out = equity.copy()
    out["in_sample_best"] = np.nan
    if best is not None and best.get("returns") is not None and len(best["returns"]) == len(sessions):
        r = pd.Series(best["returns"], index=sessions).reindex(dates)
        out["in_sample_best"] = initial * np.cumprod(1.0 + r.to_numpy())
    closes = prices.pivot(index="date", columns="symbol", values="close").sort_index().ffill()
    start = sessions.searchsorted(dates[0]) - 1
    if start >= 0:
        base = closes.loc[sessions[start]]
        held = base.notna()
        out["buy_and_hold"] = initial * (closes.loc[dates, held] / base[held]).mean(axis=1).to_numpy()
    else:
        out["buy_and_hold"] = np.nan
    return out


def _keep_artifacts(prices, base, combos, signal_paths, out_dir: Path) -> None:
    from schemas.trading import EquityCurveSchema, TradeLogSchema

    for combo in combos:
        cid = combo_id(combo)
        config = config_for(base, combo)
        result = backtest(prices, _frame(signal_paths[cid]), config)
        with stage_run("sweep-combination", out_dir / "combos" / cid, config_hash=config.config_hash()) as run:
            run.write(result.equity_curve, "equity_curve.parquet", EquityCurveSchema)
            run.write(result.trade_log, "trade_log.csv", TradeLogSchema)


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow sweep", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--grid", required=True, help="JSON: config key -> list of values or {start, stop, step}")
    parser.add_argument("--data", help="price folder (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="start a dask LocalCluster with N workers (Prefect tasks on Dask)")
    where.add_argument("--dask-address", help="run on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--processes", type=int, help="local process pool size when not on Dask (default: CPU count)")
    parser.add_argument("--walk-forward", metavar="SPEC", help="e.g. train=3y,test=1y,step=1y (units y, m, d)")
    parser.add_argument("--metric", default="sharpe", help="metric that picks the best combination (default sharpe)")
    parser.add_argument("--pbo-splits", type=int, default=16,
                        help="blocks for the probability of backtest overfitting (CSCV; even, default 16)")
    parser.add_argument("--keep-artifacts", action="store_true", help="also write each combination's trade log and equity curve")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def body(args: argparse.Namespace) -> int:
        if args.workers is not None and args.workers < 1:
            raise ConfigError("--workers must be >= 1")
        from flows.orphan_guard import guard_children

        guard_children()  # Prefect's temporary server and Dask's workers die with this process, even when killed
        from stages.common.config import load_config
        from stages.common.folder_lock import writing

        out_dir = resolve_out_dir(args.out, load_config(args.config, args.overrides))
        with writing(out_dir, wait=args.wait):
            summary = run_sweep(args.grid, config_path=args.config, overrides=args.overrides, data=args.data,
                                out=str(out_dir), workers=args.workers, dask_address=args.dask_address,
                                walk_forward=args.walk_forward, metric=args.metric, keep_artifacts=args.keep_artifacts,
                                progress=not args.no_progress, local_processes=args.processes,
                                pbo_splits=args.pbo_splits)
        results = summary["results"]
        print(f"sweep: {summary['combinations']} combinations ({summary['ran']} run now, {summary['failed']} failed), "
              f"{summary['signal_settings']} signal setting(s), {summary['seconds']:.1f}s")
        best = results[results["status"] == "ok"].sort_values("sharpe", ascending=False).head(5)
        if len(best):
            print(best[["combo_id", *[c for c in results.columns if c.startswith("param:")], "sharpe", "cagr", "max_drawdown"]]
                  .to_string(index=False))
        print(f"overfitting: {summary['overfitting'].verdict}")
        print(f"results: {Path(summary['out']) / 'sweep_results.csv'}\nreport:  {Path(summary['out']) / 'sweep_report.html'}")
        return 0 if not summary["failed"] else 1

    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.workers or args.dask_address:
        import distributed  # noqa: F401 -- sets its loggers' levels when imported: import it before quietening them
    for noisy in ("prefect", "distributed"):  # their INFO lines (cluster start/stop, every task run) only with DEBUG
        logging.getLogger(noisy).setLevel(logging.INFO if args.log_level == "DEBUG" else logging.WARNING)
    return run_command(body, args)
