"""The Prefect flow: signal -> trading -> reporting, one task per stage (thin wrappers over
`stages`), file paths between tasks, retries only for transient I/O faults, an alert on every
failed run and after every daily run (flows/alerts.py, as state hooks).

`trendflow run` and `trendflow daily` (flows/commands.py) check their inputs and then call it;
`trendflow serve` and `prefect deploy` (prefect.yaml) schedule it.
"""

import logging
import os
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator

from flows.local_server import use_prefect_defaults

use_prefect_defaults()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import Flow, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from flows.alerts import alert_on_completion, alert_on_failure  # noqa: E402
from flows.commands import ALL_STAGES, _parser, daily_main, default_stages, main  # noqa: E402,F401 -- older entry points
from flows.folder_guard import preserved  # noqa: E402
from stages.common.artifacts import verify_against_manifest  # noqa: E402
from stages.common.config import load_config  # noqa: E402
from stages.common.lineage import plan_stages  # noqa: E402
from stages.common.errors import ArtifactMissingError, ConfigError, TransientIOError, TrendflowError  # noqa: E402
from stages.common.stage import StageResult, resolve_out_dir  # noqa: E402

log = logging.getLogger("trendflow.flow")
__all__ = ["trend_pipeline", "default_stages", "is_transient", "check_inputs"]
STAGE_INPUTS = {
    "signal": (),
    "trading": ("prices.parquet", "signals_output.parquet"),
    "reporting": ("equity_curve.parquet", "trade_log.csv", "positions.parquet"),
}


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: our TransientIOError, or an OS-level I/O fault that is not a missing/permission problem."""
    if isinstance(exc, TransientIOError):
        return True
    if isinstance(exc, TrendflowError):
        return False
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError))


def _retry_transient(task_, task_run, state) -> bool:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 -- we only classify it
        return is_transient(exc)
    return False


def check_inputs(stage: str, folder: Path, *, hashes: bool = True) -> None:
    """Before a stage runs: its inputs exist and (`hashes`) still match the hashes in manifest.json.

    The tasks pass hashes=False: the trading and reporting stages check every input they read
    against the manifest themselves (StageRun.read, the file hashed while it is read), so hashing
    them here first read each file twice (signals_output.parquet + prices.parquet: 25 MB, 0.04-0.08 s
    of every 100-symbol daily run)."""
    for name in STAGE_INPUTS[stage]:
        path = folder / name
        if not path.exists():
            raise ArtifactMissingError(f"{stage} stage needs {path}: run the stage that writes it first "
                                       f"(e.g. --stages signal,{stage})")
        if hashes:
            verify_against_manifest(path)


def _config(config_path: str | None, overrides: list[str]):
    return load_config(config_path, overrides)


def _announce(result: StageResult, k: int, n: int) -> dict:
    log.info("[%d/%d] %s", k, n, result.log_line())
    return {"stage": result.stage, "seconds": round(result.seconds, 3), "rows": result.rows, "summary": result.summary}


@task(name="data", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def data_task(config_path, overrides, out, as_of_date, k=1, n=4) -> dict:
    """Fetch data.symbols into the store (fetch.store); the signal stage then reads its adjusted_prices.parquet."""
    from stages.data.fetch import run_fetch

    log.info("[%d/%d] data stage starting", k, n)
    config = _config(config_path, overrides)
    summary, result = run_fetch(config, list(config.data.symbols or []), end=as_of_date)
    for line in summary.lines():
        (log.warning if line.lstrip().startswith("FAILED") else log.info)(line)
    return _announce(result, k, n)


@task(name="signal", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def signal_task(config_path, overrides, data, out, as_of_date, k=1, n=3) -> dict:
    from stages.signal import run_signal_stage

    log.info("[%d/%d] signal stage starting", k, n)
    return _announce(run_signal_stage(_config(config_path, overrides), data, Path(out), as_of_date=as_of_date), k, n)


@task(name="trading", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def trading_task(config_path, overrides, out, as_of_date, fresh, k=2, n=3, allow_stale=False, portfolio=None,
                 accept_edited_snapshot=False) -> dict:
    from stages.trading import run_trading_stage

    log.info("[%d/%d] trading stage starting", k, n)
    check_inputs("trading", Path(out), hashes=False)  # the stage checks the hashes as it reads
    result = run_trading_stage(_config(config_path, overrides), Path(out), Path(out), as_of_date=as_of_date, fresh=fresh,
                               allow_stale=allow_stale, portfolio=portfolio,
                               accept_edited_snapshot=accept_edited_snapshot)
    return _announce(result, k, n)


@task(name="reporting", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def reporting_task(config_path, overrides, out, k=3, n=3) -> dict:
    from stages.reporting import run_reporting_stage

    log.info("[%d/%d] reporting stage starting", k, n)
    check_inputs("reporting", Path(out), hashes=False)  # the stage checks the hashes as it reads
    return _announce(run_reporting_stage(_config(config_path, overrides), Path(out), Path(out)), k, n)


@task(name="sync", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def sync_task(config_path, overrides, out, broker, k=1, n=3) -> dict:
    """An IBKR daily run's first step, before any stage writes: the broker's book into the execution
    database (our open orders' fills and states, then positions and cash), as `trendflow reconcile
    --sync ibkr` does. No broker reachable: nothing is written; retried as transient."""
    from stages.trading.book import sync_folder_book

    log.info("[%d/%d] sync stage starting (%s broker)", k, n, broker)
    t0 = time.perf_counter()
    loaded = sync_folder_book(Path(out), _config(config_path, overrides), broker, say=log.info)
    seconds = time.perf_counter() - t0
    log.info("[%d/%d] sync stage finished in %.2fs", k, n, seconds)
    return {"stage": "sync", "seconds": round(seconds, 3), "rows": {"positions": len(loaded["positions"])}, "summary": loaded}


@task(name="execute", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def execute_task(config_path, overrides, out, as_of_date, broker, profile, k=3, n=3) -> dict:
    """Daily mode's optional last step: send orders_{D}.csv to the broker (paper or ibkr) under a risk profile.

    Idempotent: client order ids derive from (date, symbol, side, run id), so a retried or repeated
    run never submits an order twice."""
    from stages.common.folder_lock import writing
    from stages.trading.execution.cli import _default_db, load_profile
    from stages.trading.execution.executor import execute_orders_file
    from stages.trading.execution.notify import Notifier

    log.info("[%d/%d] execute stage starting (%s broker, %s profile)", k, n, broker, profile)
    t0 = time.perf_counter()
    folder = Path(out)
    orders_path = folder / f"orders_{as_of_date.isoformat()}.csv"
    if not orders_path.exists():
        raise ArtifactMissingError(f"execute step needs {orders_path}: run the trading stage for {as_of_date} first")
    verify_against_manifest(orders_path)
    config = _config(config_path, overrides)
    risk = load_profile(profile)
    db = _default_db(folder)
    with writing(db.parent):  # the execution store's folder has one writer too
        result = execute_orders_file(orders_path, config=config, broker=broker, profile=risk, db=db, notifier=Notifier(),
                                     connection_alerts=False)  # the flow's failure hook alerts, once
    seconds = time.perf_counter() - t0
    rows = {"orders": result.orders, "filled": result.filled, "working": result.working, "rejected": result.rejected}
    log.info("[%d/%d] execute stage finished in %.2fs (%s)", k, n, seconds,
             ", ".join(f"{key}={v}" for key, v in sorted(rows.items())))
    if result.failed:
        raise TrendflowError(f"execute: {result.failed} order(s) in {orders_path.name} got no fill from the broker "
                             f"(see {db.parent / 'audit.jsonl'})")
    summary = {"broker": broker, "profile": risk.name, "approved": result.approved, "filled": result.filled,
               "working": result.working, "rejected": result.rejected, "already_done": result.skipped_already_done,
               "breaker_tripped": result.breaker_tripped, "rejections": dict(result.rejections), "db": str(db)}
    return {"stage": "execute", "seconds": round(seconds, 3), "rows": rows, "summary": summary}


class PlainParametersFlow(Flow):
    """A Prefect flow whose run records its parameters without importing FastAPI when they are plain values.

    Prefect turns a flow's parameters into JSON for the run's record with FastAPI's jsonable_encoder;
    importing fastapi.encoders builds FastAPI's OpenAPI models (0.1-0.15 CPU-s, 0.2-0.3 s of wall
    under load, measured at the start of every `trendflow daily`). trend_pipeline's parameters are
    strings, numbers, booleans, dates and lists of strings, which that encoder gives as they are,
    dates as ISO strings and tuples as lists: the same record is built here; anything else is left
    to Prefect."""

    def serialize_parameters(self, parameters: dict) -> dict:
        if all(_is_plain(value) for value in parameters.values()):
            return {key: _plain_json(value) for key, value in parameters.items()}
        return super().serialize_parameters(parameters)


_SCALARS = (str, bool, int, float, type(None))


def _is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(type(item) in _SCALARS for item in value)
    return type(value) in _SCALARS or type(value) is date


def _plain_json(value):
    """What fastapi.encoders.jsonable_encoder gives for a plain value."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return value.isoformat() if type(value) is date else value


def _flow(**options):
    return lambda fn: PlainParametersFlow(fn=fn, **options)


@_flow(name="trend_pipeline", log_prints=False, on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
       on_completion=[alert_on_completion])
def trend_pipeline(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
    out: str | None = None,
    stages: list[str] | None = None,
    mode: str = "backtest",
    as_of_date: date | None = None,
    fresh: bool = False,
    allow_stale: bool = False,
    accept_edited_snapshot: bool = False,
    retry_delay_seconds: float = 5.0,
    timezone: str = "Asia/Shanghai",
    calendar: str = "XSHG",
    execute: str | None = None,
    risk_profile: str = "balanced",
    portfolio: str | None = None,
) -> dict:
    """Run the chosen stages in order; each reads the previous one's files from `out`.

    A daily run without an as-of date (a scheduled run) uses today in `timezone`, and does
    nothing on a day the exchange `calendar` has no session. A daily run that fails puts back every
    file of `out` as it was (flows/folder_guard.py). `portfolio` replaces the default snapshot
    <out>/portfolio_<previous session>.json. `execute="paper"` or `"ibkr"` (daily mode only) sends the
    day's orders to that broker under `risk_profile` as a last step; with "ibkr" a daily run that trades
    first loads the broker's book into the execution database (sync), before any stage writes."""
    overrides = list(overrides or [])
    if execute is not None and mode != "daily":
        raise ConfigError("--execute is for a daily run (--mode daily or `trendflow daily`)")
    config = _config(config_path, overrides)  # fail fast on a bad config, before any stage
    out_dir = resolve_out_dir(out, config)
    if execute is not None:  # a bad profile, webhook URL or a missing database fails before any stage runs
        from stages.trading.execution.brokers import check_broker
        from stages.trading.execution.cli import _default_db, load_profile
        from stages.trading.execution.notify import Notifier

        check_broker(execute)  # the broker's name, and IBKR's TRENDFLOW_IB_* settings
        load_profile(risk_profile)
        Notifier()
        if not _default_db(out_dir).is_file():
            raise ConfigError(f"--execute: no execution database at {_default_db(out_dir)}; create the account once with "
                              f"`trendflow execute --init --out {out_dir}`")
    requested = [s for s in ALL_STAGES if s in (stages if stages is not None else default_stages(mode))]
    chosen, notes = plan_stages([s for s in requested if s != "data"], out_dir, config)  # --stages means "at least these"
    chosen = (["data"] if "data" in requested else []) + chosen  # fetch first: the signal stage reads its panel
    for note in notes:
        log.info(note)
    if mode == "daily" and as_of_date is None:
        from flows.schedule import is_trading_day, today_in

        as_of_date = today_in(timezone)
        if not is_trading_day(as_of_date, calendar):
            log.info("%s is not a %s trading day: nothing to do", as_of_date, calendar)
            return {"mode": mode, "out": str(out_dir), "stages": [], "seconds": 0.0, "skipped": str(as_of_date)}
    day = as_of_date if mode == "daily" else None
    t0 = time.perf_counter()
    done: list[dict] = []
    sync = execute == "ibkr" and "trading" in chosen  # the step starts from the broker's book
    n = len(chosen) + (execute is not None) + sync
    opts = {"retry_delay_seconds": retry_delay_seconds}
    from stages.common.folder_lock import writing

    # one writer per folder for served and deployed runs too (a command's own run already holds it: reentrant)
    with writing(out_dir, command=f"trendflow {mode} flow run"), (
            preserved(out_dir) if mode == "daily" and chosen else _nothing()):
        if sync:  # first: a broker that cannot be reached stops the run before any stage writes
            done.append(sync_task.with_options(**opts)(config_path, overrides, str(out_dir), execute, 1, n))
        for k, stage in enumerate(chosen, start=1 + sync):
            if stage == "data":
                done.append(data_task.with_options(**opts)(config_path, overrides, str(out_dir), day, k, n))
                data = done[-1]["summary"]["panel"]
            elif stage == "signal":
                done.append(signal_task.with_options(**opts)(config_path, overrides, data, str(out_dir), day, k, n))
            elif stage == "trading":
                done.append(trading_task.with_options(**opts)(config_path, overrides, str(out_dir), day, fresh, k, n,
                                                              allow_stale, portfolio, accept_edited_snapshot))
            else:
                done.append(reporting_task.with_options(**opts)(config_path, overrides, str(out_dir), k, n))
    if execute is not None:
        done.append(execute_task.with_options(**opts)(config_path, overrides, str(out_dir), day, execute, risk_profile, n, n))
    summary = {"mode": mode, "out": str(out_dir), "stages": done, "seconds": round(time.perf_counter() - t0, 3),
               "as_of_date": day.isoformat() if day else None}
    _publish(summary, out_dir, day)
    return summary


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _publish(summary: dict, out_dir: Path, day: date | None) -> None:
    """A markdown artifact in the Prefect UI: stage timings, key metrics, today's orders."""
    lines = [f"# trendflow {summary['mode']} run", "", f"Output folder: `{out_dir}`", "", "| stage | seconds | rows |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['seconds']:.2f} | {s['rows']} |" for s in summary["stages"]]
    for s in summary["stages"]:
        if s["stage"] == "reporting":
            lines += ["", "## Key metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in s["summary"].items()]
        if s["stage"] == "execute":
            x = s["summary"]
            lines += ["", f"## Execution ({x['broker']} broker, {x['profile']} profile)", "",
                      f"approved {x['approved']}, filled {x['filled']}, rejected {x['rejected']}, already done {x['already_done']}"
                      + (", **circuit breaker tripped**" if x["breaker_tripped"] else "")]
            lines += [f"- rejected {sym}: {why}" for sym, why in sorted(x["rejections"].items())]
    orders = sorted(out_dir.glob(f"orders_{day.isoformat()}.csv" if day else "orders_????-??-??.csv"))
    if orders:
        lines += ["", f"## Orders ({orders[-1].name})", "", "```", orders[-1].read_text(encoding="utf-8").strip()[:4000], "```"]
    create_markdown_artifact(markdown="\n".join(lines), key="trendflow-run", description="trendflow pipeline summary")
