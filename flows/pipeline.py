"""The Prefect flow: signal -> trading -> reporting, one task per stage (thin wrappers over
`stages`), file paths between tasks, retries only for transient I/O faults.

`trendflow run` and `trendflow daily` call it; with no Prefect server configured it runs in
ephemeral mode (a temporary local server, ~5 s of start-up).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import date, datetime
from pathlib import Path

from stages.common.config import PROJECT_ROOT

os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import flow, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from stages.common.artifacts import verify_against_manifest  # noqa: E402
from stages.common.cli import add_common_arguments, run_command, setup_logging  # noqa: E402
from stages.common.config import load_config  # noqa: E402
from stages.common.lineage import plan_stages  # noqa: E402
from stages.common.errors import ArtifactMissingError, ConfigError, TransientIOError, TrendflowError  # noqa: E402
from stages.common.stage import StageResult, resolve_out_dir  # noqa: E402

log = logging.getLogger("trendflow.flow")
ALL_STAGES = ("signal", "trading", "reporting")
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


def check_inputs(stage: str, folder: Path) -> None:
    """Before a stage runs: its inputs exist and still match the hashes in manifest.json."""
    for name in STAGE_INPUTS[stage]:
        path = folder / name
        if not path.exists():
            raise ArtifactMissingError(f"{stage} stage needs {path}: run the stage that writes it first "
                                       f"(e.g. --stages signal,{stage})")
        verify_against_manifest(path)


def _config(config_path: str | None, overrides: list[str]):
    return load_config(config_path, overrides)


def _announce(result: StageResult, k: int, n: int) -> dict:
    log.info("[%d/%d] %s", k, n, result.log_line())
    return {"stage": result.stage, "seconds": round(result.seconds, 3), "rows": result.rows, "summary": result.summary}


@task(name="signal", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def signal_task(config_path, overrides, data, out, as_of_date, k=1, n=3) -> dict:
    from stages.signal import run_signal_stage

    log.info("[%d/%d] signal stage starting", k, n)
    return _announce(run_signal_stage(_config(config_path, overrides), data, Path(out), as_of_date=as_of_date), k, n)


@task(name="trading", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def trading_task(config_path, overrides, out, as_of_date, fresh, k=2, n=3, allow_stale=False) -> dict:
    from stages.trading import run_trading_stage

    log.info("[%d/%d] trading stage starting", k, n)
    check_inputs("trading", Path(out))
    result = run_trading_stage(_config(config_path, overrides), Path(out), Path(out), as_of_date=as_of_date, fresh=fresh,
                               allow_stale=allow_stale)
    return _announce(result, k, n)


@task(name="reporting", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def reporting_task(config_path, overrides, out, k=3, n=3, data=None) -> dict:
    from stages.reporting import run_reporting_stage

    log.info("[%d/%d] reporting stage starting", k, n)
    check_inputs("reporting", Path(out))
    return _announce(run_reporting_stage(_config(config_path, overrides), Path(out), Path(out), data=data), k, n)


@task(name="execute", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_transient)
def execute_task(config_path, overrides, out, as_of_date, broker, profile, k=3, n=3) -> dict:
    """Daily mode's optional last step: send orders_{D}.csv to the paper broker under a risk profile.

    Idempotent: client order ids derive from (date, symbol, side, run id), so a retried or repeated
    run never submits an order twice."""
    from schemas.prices import PricesSchema
    from schemas.trading import OrdersSchema
    from stages.common.artifacts import read_artifact
    from stages.trading.execution.brokers import PaperBroker
    from stages.trading.execution.cli import _default_db, load_profile
    from stages.trading.execution.executor import execute_orders
    from stages.trading.execution.notify import AuditLog, Notifier
    from stages.trading.execution.store import ExecutionStore

    if broker != "paper":
        raise ConfigError(f"--execute {broker!r}: only the paper broker runs inside the flow (use `trendflow execute` for others)")
    log.info("[%d/%d] execute stage starting (%s broker, %s profile)", k, n, broker, profile)
    t0 = time.perf_counter()
    folder = Path(out)
    orders_path = folder / f"orders_{as_of_date.isoformat()}.csv"
    if not orders_path.exists():
        raise ArtifactMissingError(f"execute step needs {orders_path}: run the trading stage for {as_of_date} first")
    verify_against_manifest(orders_path)
    config = _config(config_path, overrides)
    risk = load_profile(profile)
    orders = read_artifact(orders_path, OrdersSchema)
    prices_path = folder / "prices.parquet"
    prices = read_artifact(prices_path, PricesSchema) if prices_path.exists() else None
    db = _default_db(folder)
    from stages.common.folder_lock import writing

    with writing(db.parent):  # the execution store's folder has one writer too
        store = ExecutionStore(db, config.execution.initial_cash, create=False)
        try:
            result = execute_orders(orders, store=store, broker=PaperBroker(store, config), profile=risk, config=config,
                                    as_of=as_of_date, run_id="daily", prices=prices, notifier=Notifier(),
                                    audit=AuditLog(db.parent / "audit.jsonl"))
        finally:
            store.close()
    seconds = time.perf_counter() - t0
    rows = {"orders": len(orders), "filled": result.filled, "working": result.working, "rejected": result.rejected}
    log.info("[%d/%d] execute stage finished in %.2fs (%s)", k, n, seconds,
             ", ".join(f"{key}={v}" for key, v in sorted(rows.items())))
    if result.failed:
        raise TrendflowError(f"execute: {result.failed} order(s) in {orders_path.name} got no fill from the broker "
                             f"(see {db.parent / 'audit.jsonl'})")
    summary = {"broker": broker, "profile": risk.name, "approved": result.approved, "filled": result.filled,
               "working": result.working, "rejected": result.rejected, "already_done": result.skipped_already_done,
               "breaker_tripped": result.breaker_tripped, "rejections": dict(result.rejections), "db": str(db)}
    return {"stage": "execute", "seconds": round(seconds, 3), "rows": rows, "summary": summary}


@flow(name="trend_pipeline", log_prints=False)
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
    retry_delay_seconds: float = 5.0,
    timezone: str = "Asia/Shanghai",
    calendar: str = "XSHG",
    execute: str | None = None,
    risk_profile: str = "balanced",
) -> dict:
    """Run the chosen stages in order; each reads the previous one's files from `out`.

    A daily run without an as-of date (a scheduled run) uses today in `timezone`, and does
    nothing on a day the exchange `calendar` has no session. `execute="paper"` (daily mode only)
    sends the day's orders to the paper broker under `risk_profile` as a last step."""
    overrides = list(overrides or [])
    if execute is not None and mode != "daily":
        raise ConfigError("--execute is for a daily run (--mode daily or `trendflow daily`)")
    config = _config(config_path, overrides)  # fail fast on a bad config, before any stage
    out_dir = resolve_out_dir(out, config)
    if execute is not None:  # a bad profile, webhook URL or a missing database fails before any stage runs
        from stages.trading.execution.cli import _default_db, load_profile
        from stages.trading.execution.notify import Notifier

        load_profile(risk_profile)
        Notifier()
        if not _default_db(out_dir).is_file():
            raise ConfigError(f"--execute: no execution database at {_default_db(out_dir)}; create the account once with "
                              f"`trendflow execute --init --out {out_dir}`")
    chosen = [s for s in ALL_STAGES if s in (stages if stages is not None else default_stages(mode))]
    chosen, notes = plan_stages(chosen, out_dir, config)  # --stages means "at least these"
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
    n = len(chosen) + (execute is not None)
    opts = {"retry_delay_seconds": retry_delay_seconds}
    for k, stage in enumerate(chosen, start=1):
        if stage == "signal":
            done.append(signal_task.with_options(**opts)(config_path, overrides, data, str(out_dir), day, k, n))
        elif stage == "trading":
            done.append(trading_task.with_options(**opts)(config_path, overrides, str(out_dir), day, fresh, k, n, allow_stale))
        else:
            done.append(reporting_task.with_options(**opts)(config_path, overrides, str(out_dir), k, n, data=data))
    if execute is not None:
        done.append(execute_task.with_options(**opts)(config_path, overrides, str(out_dir), day, execute, risk_profile, n, n))
    summary = {"mode": mode, "out": str(out_dir), "stages": done, "seconds": round(time.perf_counter() - t0, 3)}
    _publish(summary, out_dir, day)
    return summary


def default_stages(mode: str) -> tuple[str, ...]:
    """A backtest runs all three stages; a daily run makes signals and orders (the report covers backtests)."""
    return ALL_STAGES if mode == "backtest" else ("signal", "trading")


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


# --------------------------------------------------------------------------- command lines
def _parser(prog: str, daily: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Daily run for one date: signals up to D, one trading step from portfolio_{D-1}.json -> orders_{D}.csv"
        if daily else "Run the pipeline (signal -> trading -> reporting) as a Prefect flow"))
    add_common_arguments(parser)
    parser.add_argument("--data", help="price folder or long file (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder = v4_trace_outputs)")
    parser.add_argument("--stages", help="comma-separated subset of signal,trading,reporting (default: all; daily: signal,trading; "
                             "'' with --execute: only send the existing orders_{D}.csv)")
    if not daily:
        parser.add_argument("--mode", choices=["backtest", "daily"], default="backtest")
    parser.add_argument("--as-of-date", type=date.fromisoformat, metavar="YYYY-MM-DD", required=daily,
                        help="daily mode: the date whose close the orders are decided at")
    parser.add_argument("--fresh", action="store_true", help="daily mode: start from cash instead of the previous snapshot")
    parser.add_argument("--allow-stale", action="store_true",
                        help="daily mode: carry the last close of holdings without a price on the as-of date (default: an error naming them)")
    parser.add_argument("--execute", choices=["paper"], help="daily mode: send the day's orders to the paper broker as a last step")
    parser.add_argument("--profile", default="balanced", help="risk profile for --execute: conservative | balanced | aggressive | FILE")
    parser.add_argument("--no-dry-run", dest="no_dry_run", action="store_true",
                        help="accepted for signal_pipeline's habit: runs always write their files (see `trendflow trade --dry-run`)")
    parser.add_argument("--retry-delay", type=float, default=5.0, help="seconds between retries of a transient fault")
    return parser


def _run(args: argparse.Namespace, mode: str) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages is not None else None
    unknown = [s for s in stages or [] if s not in ALL_STAGES]
    if unknown:
        raise TrendflowError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(ALL_STAGES)}")
    if stages == [] and not args.execute:
        raise TrendflowError("--stages is empty: name at least one of signal,trading,reporting "
                             "(an empty --stages only makes sense with --execute paper)")
    if args.execute and mode != "daily":
        raise ConfigError("--execute is for a daily run: add --mode daily --as-of-date D (or use `trendflow daily`)")
    config = load_config(args.config, args.overrides)
    out_dir = resolve_out_dir(args.out, config)
    from stages.common.folder_lock import writing

    with writing(out_dir, wait=args.wait):
        return _run_locked(args, mode, stages, out_dir)


def _run_locked(args: argparse.Namespace, mode: str, stages: list[str] | None, out_dir: Path) -> int:
    """`_run` while holding the output folder's write lock (one writer per folder)."""
    log_file = out_dir / "logs" / f"trendflow_{datetime.now():%Y%m%d_%H%M%S}.log"
    setup_logging(args.log_level, log_file)
    # Prefect logs a failed task with its traceback; a user error is reported once, as one clear line.
    logging.getLogger("prefect").setLevel(logging.INFO if args.log_level == "DEBUG" else logging.CRITICAL)
    try:
        summary = trend_pipeline(config_path=args.config, overrides=args.overrides, data=args.data, out=str(out_dir),
                                 stages=stages, mode=mode, as_of_date=args.as_of_date, fresh=args.fresh, allow_stale=args.allow_stale,
                                 retry_delay_seconds=args.retry_delay, execute=args.execute, risk_profile=args.profile)
    except TrendflowError as exc:  # the log file records why the run stopped, not only the terminal
        _to_log_file(logging.ERROR, f"trendflow {mode} run failed: {exc}")  # the terminal gets it once, as `error: ...`
        raise
    log.info("trendflow %s run finished in %.2fs", mode, summary["seconds"])
    print(f"trendflow {mode} run finished in {summary['seconds']:.1f}s; artifacts in {out_dir}")
    for stage in summary["stages"]:
        if stage["stage"] == "reporting":
            print(f"report: {stage['summary']['report']}")
        if stage["stage"] == "execute":
            x = stage["summary"]
            print(f"executed on {x['broker']} ({x['profile']}): filled {x['filled']}, working {x['working']} (paper: fills at "
                  f"the next session's open, settled by that day's run), rejected {x['rejected']}, "
                  f"already done {x['already_done']}; orders database {x['db']}")
    print(f"log: {log_file}")
    return 0


def _to_log_file(level: int, message: str) -> None:
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow run`."""
    parser = _parser(prog or "trendflow run", daily=False)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_command(lambda a: _run(a, a.mode), args)


def daily_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow daily --as-of-date D`."""
    parser = _parser(prog or "trendflow daily", daily=True)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_command(lambda a: _run(a, "daily"), args)
