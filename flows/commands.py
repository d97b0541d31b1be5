"""`trendflow run` and `trendflow daily`: check everything a person can get wrong (arguments, config,
data folder, as-of date, portfolio snapshot) BEFORE Prefect is imported or a server is contacted,
say what will run, then run the Prefect flow (flows/pipeline.py) against the shared local server
(flows/local_server.py) or the one PREFECT_API_URL names.

This module imports neither Prefect nor pandas at import time, so its first line of output comes
at once; `--dry-run` never starts Prefect at all.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from stages.common.cli import add_common_arguments, add_market_data_argument, run_command, setup_logging
from stages.common.errors import ConfigError, DataError, SnapshotError, TrendflowError

log = logging.getLogger("trendflow.flow")
ALL_STAGES = ("data", "signal", "trading", "reporting")  # data (trendflow fetch) only when asked for
SERVER_ENV = "TRENDFLOW_PREFECT_SERVER"  # "shared" (default) | "ephemeral": Prefect's own temporary server


def default_stages(mode: str) -> tuple[str, ...]:
    """A backtest runs all three stages; a daily run makes signals and orders (the report covers backtests)."""
    return ("signal", "trading", "reporting") if mode == "backtest" else ("signal", "trading")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _parser(prog: str, daily: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Daily run for one date: signals up to D, one trading step from portfolio_{D-1}.json -> orders_{D}.csv"
        if daily else "Run the pipeline (signal -> trading -> reporting) as a Prefect flow"))
    add_common_arguments(parser)
    parser.add_argument("--data", help="price folder or long file (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder = v4_trace_outputs)")
    parser.add_argument("--stages", help="comma-separated subset of data,signal,trading,reporting (default: signal,trading,reporting; "
                             "daily: signal,trading; data = trendflow fetch of data.symbols first; "
                             "'' with --execute: only send the existing orders_{D}.csv)")
    if not daily:
        parser.add_argument("--mode", choices=["backtest", "daily"], default="backtest")
    parser.add_argument("--as-of-date", type=_day, metavar="YYYY-MM-DD",
                        help="daily mode: the date whose close the orders are decided at (default: the latest session in the data)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--portfolio", metavar="FILE",
                       help="daily mode: the snapshot to resume from (default: <out>/portfolio_<previous session>.json)")
    start.add_argument("--fresh", action="store_true", help="daily mode: start from cash instead of the previous snapshot")
    parser.add_argument("--force", action="store_true", help="with --fresh: overwrite an existing portfolio_<D>.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="daily mode: print the orders and write nothing (runs the stages without Prefect)")
    add_market_data_argument(parser)
    parser.add_argument("--accept-edited-snapshot", action="store_true", help="daily run: resume from a portfolio snapshot that was edited after the run that wrote it (its sha256 no longer matches manifest.json); the override is recorded in the log")
    parser.add_argument("--allow-stale", action="store_true",
                        help="daily mode: carry the last close of holdings without a price on the as-of date (default: an error naming them)")
    parser.add_argument("--execute", choices=["paper", "ibkr"],
                        help="daily mode: send the day's orders to this broker as a last step (ibkr: the run first loads "
                             "the broker's fills, positions and cash; TRENDFLOW_IB_* settings)")
    parser.add_argument("--profile", default="balanced", help="risk profile for --execute: conservative | balanced | aggressive | FILE")
    parser.add_argument("--no-dry-run", dest="no_dry_run", action="store_true",
                        help="accepted for signal_pipeline's habit: runs write their files unless --dry-run")
    parser.add_argument("--retry-delay", type=float, default=5.0, help="seconds between retries of a transient fault")
    return parser


@dataclass
class Plan:
    """What a run will do, decided and checked before Prefect starts."""

    mode: str
    stages: list[str] | None
    out_dir: Path
    as_of_date: date | None
    portfolio: str | None


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {message}", flush=True)


def preflight(args: argparse.Namespace, mode: str, prog: str) -> Plan:
    """Every check that needs no Prefect: stages, flags, config, data path, as-of date, snapshot."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages is not None else None
    unknown = [s for s in stages or [] if s not in ALL_STAGES]
    if unknown:
        raise TrendflowError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(ALL_STAGES)}")
    if stages == [] and not args.execute:
        raise TrendflowError("--stages is empty: name at least one of signal,trading,reporting "
                             "(an empty --stages only makes sense with --execute)")
    if args.execute and mode != "daily":
        raise ConfigError("--execute is for a daily run: add --mode daily (or use `trendflow daily`)")
    daily_only = [flag for flag, on in (("--as-of-date", args.as_of_date), ("--portfolio", args.portfolio),
                                        ("--fresh", args.fresh), ("--dry-run", args.dry_run)) if on]
    if mode != "daily" and daily_only:
        raise ConfigError(f"{', '.join(daily_only)}: for a daily run only (add --mode daily, or use `trendflow daily`)")
    if args.force and not args.fresh:
        raise ConfigError("--force only goes with --fresh (it allows overwriting an existing portfolio_<D>.json)")
    if args.dry_run and args.no_dry_run:
        raise ConfigError("--dry-run and --no-dry-run contradict each other: give one")
    if args.dry_run and args.execute:
        raise ConfigError("--dry-run writes nothing and sends nothing: drop --execute")
    if args.execute:
        from stages.trading.execution.brokers import check_broker
        from stages.trading.execution.cli import load_profile

        load_profile(args.profile)  # a bad profile fails before anything runs
        check_broker(args.execute)  # ...and bad TRENDFLOW_IB_* settings, before Prefect starts

    from stages.common.config import load_config
    from stages.common.stage import resolve_out_dir

    config = load_config(args.config, args.overrides)
    out_dir = resolve_out_dir(args.out, config)
    if args.data is not None and not Path(args.data).exists():
        raise DataError(f"--data {args.data}: no such file or folder")
    if args.data is None and config.data.source is not None and not Path(config.data.source).exists():
        raise ConfigError(f"data.source {config.data.source}: no such file or folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    from stages.common.stage import check_data_apart

    check_data_apart(args.data, config, out_dir)  # price files and artifacts never share a folder
    if args.portfolio is not None and not Path(args.portfolio).is_file():
        raise SnapshotError(f"--portfolio {args.portfolio}: no such file")
    if args.execute:
        from stages.trading.execution.cli import _default_db

        if not _default_db(out_dir).is_file():
            raise ConfigError(f"--execute: no execution database at {_default_db(out_dir)}; create the account once with "
                              f"`trendflow execute --init --out {out_dir}`")
    plan = Plan(mode, stages, out_dir, args.as_of_date, args.portfolio)
    chosen = [s for s in ALL_STAGES if s in (stages if stages is not None else default_stages(mode))]
    if mode == "daily" and "data" not in chosen and (chosen or args.as_of_date is None):  # fetched data: planned in the flow
        _plan_daily(plan, args, config, chosen, prog)
    return plan


def _plan_daily(plan: Plan, args: argparse.Namespace, config, chosen: list[str], prog: str) -> None:
    """The as-of date (default: the latest session in the data) and the snapshot the step resumes from."""
    import pandas as pd

    from stages.common.stage import resolve_data_source

    if "signal" in chosen or not (plan.out_dir / "prices.parquet").exists():
        from stages.common.market_data import load_market_data

        source = resolve_data_source(args.data, config, plan.out_dir)
        d = config.data
        # kept for the signal stage of this process: it takes this load instead of reading the files again
        # when they are unchanged and its date range selects the same rows (market_data._take_kept)
        prices = load_market_data(source, d.symbols, d.start_date, d.end_date, d.bad_rows, d.min_history_days,
                                  keep="signal" in chosen).prices
        sessions = pd.DatetimeIndex(prices["date"].unique()).sort_values()
    else:
        source, prices = plan.out_dir / "prices.parquet", None
        sessions = pd.DatetimeIndex(pd.read_parquet(source, columns=["date"])["date"].unique()).sort_values()
    where = str(source)
    if plan.as_of_date is None:
        plan.as_of_date = sessions[-1].date()
        _say(prog, f"as of {plan.as_of_date}, the latest session in {where} (--as-of-date D for another day)")
    elif pd.Timestamp(plan.as_of_date) not in sessions:
        raise DataError(f"--as-of-date {plan.as_of_date}: no prices on that date in {where} "
                        f"(last date with prices: {sessions[-1].date()})")
    if "trading" not in chosen:
        return
    day = plan.as_of_date
    target = plan.out_dir / f"portfolio_{day.isoformat()}.json"
    if args.fresh:
        if target.exists() and not args.force:
            raise SnapshotError(f"--fresh would overwrite {target} (the portfolio after {day}): add --force to start "
                                "that day again from cash, or leave out --fresh to continue from it")
        _say(prog, f"starting from cash on {day} (--fresh)")
        return
    from stages.trading.legacy import read_any_snapshot

    t = sessions.get_loc(pd.Timestamp(day))
    if t == 0:
        raise SnapshotError(f"{day} is the first session in {where}: there is no previous snapshot to resume; "
                            "start with --fresh")
    previous = sessions[t - 1].date()
    path = Path(plan.portfolio) if plan.portfolio is not None else plan.out_dir / f"portfolio_{previous.isoformat()}.json"
    read_any_snapshot(path, previous, config, prices, accept_edited=args.accept_edited_snapshot)  # an older signal_pipeline snapshot is converted, as the stage does
    _say(prog, f"resuming from {path}")


def _dry_run(plan: Plan, args: argparse.Namespace) -> int:
    """Both daily stages in a temporary folder seeded with links to the saved state; the trading
    stage prints the orders. The output folder is only read."""
    import tempfile

    from flows.folder_guard import link_or_copy
    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    config = load_config(args.config, args.overrides)
    chosen = [s for s in ALL_STAGES if s in (plan.stages if plan.stages is not None else default_stages("daily"))]
    with tempfile.TemporaryDirectory(prefix="trendflow-dry-run-") as tmp:
        work = Path(tmp)
        for name in ("manifest.json", "prices.parquet", "signals_output.parquet", "signal_state.npz"):
            if (plan.out_dir / name).exists():
                link_or_copy(plan.out_dir / name, work / name)
        if "signal" in chosen:
            from stages.common.stage import resolve_data_source

            source = args.data if args.data is not None else resolve_data_source(None, config, plan.out_dir)
            run_signal_stage(config, source, work, as_of_date=plan.as_of_date)
        if "trading" in chosen:
            run_trading_stage(config, work, plan.out_dir, as_of_date=plan.as_of_date, portfolio=plan.portfolio,
                              fresh=args.fresh, dry_run=True, allow_stale=args.allow_stale,
                              accept_edited_snapshot=args.accept_edited_snapshot)
    print(f"dry run: nothing written to {plan.out_dir}")
    return 0


def _alert_not_started(args: argparse.Namespace, mode: str, exc: TrendflowError) -> None:
    if not os.environ.get("TRENDFLOW_WEBHOOK_URL"):
        return
    from flows.alerts import failure_message
    from stages.trading.execution.notify import Notifier

    parameters = {"mode": mode, "out": args.out, "as_of_date": args.as_of_date, "config_path": args.config,
                  "overrides": args.overrides}
    Notifier().critical(failure_message(parameters, str(exc)))


def _api_url(prog: str) -> str | None:
    """The Prefect API this run reports to: PREFECT_API_URL if configured (environment or Prefect
    profile), else the shared local server (started on first use); None = Prefect's temporary server."""
    from flows.local_server import use_prefect_defaults

    use_prefect_defaults()  # before Prefect reads its settings
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:  # (no temporary server, so no watchdog for one: see _run_flow)
        return configured
    if os.environ.get(SERVER_ENV, "shared") == "ephemeral":
        return None
    from flows.local_server import ensure_server

    return ensure_server(say=lambda message: _say(prog, message))


def _run(args: argparse.Namespace, mode: str, prog: str) -> int:
    _say(prog, "checking the config, data and snapshot ...")
    try:
        plan = preflight(args, mode, prog)
    except TrendflowError as exc:  # the flow never started, so its failure hook cannot tell anyone
        _alert_not_started(args, mode, exc)
        raise
    if args.dry_run:
        return _dry_run(plan, args)
    from stages.common.folder_lock import writing

    with writing(plan.out_dir, wait=args.wait):
        return _run_flow(args, mode, prog, plan)


def _run_flow(args: argparse.Namespace, mode: str, prog: str, plan: Plan) -> int:
    """The Prefect flow, while holding the output folder's write lock (one writer per folder)."""
    log_file = plan.out_dir / "logs" / f"trendflow_{datetime.now():%Y%m%d_%H%M%S}.log"
    setup_logging(args.log_level, log_file)
    url = _api_url(prog)
    from flows.pipeline import trend_pipeline

    # Prefect logs a failed task with its traceback; a user error is reported once, as one clear line.
    logging.getLogger("prefect").setLevel(logging.INFO if args.log_level == "DEBUG" else logging.CRITICAL)
    kwargs = dict(config_path=args.config, overrides=args.overrides, data=args.data, out=str(plan.out_dir),
                  stages=plan.stages, mode=mode, as_of_date=plan.as_of_date, fresh=args.fresh, portfolio=plan.portfolio,
                  allow_stale=args.allow_stale, accept_edited_snapshot=args.accept_edited_snapshot,
                  retry_delay_seconds=args.retry_delay, execute=args.execute, risk_profile=args.profile)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = _flow_run_settings()
    if url is None:  # Prefect starts a temporary server as a child of this process: it dies with us
        from flows.orphan_guard import guard_children

        guard_children()
    else:
        settings[PREFECT_API_URL] = url
    try:
        with temporary_settings(settings):
            summary = trend_pipeline(**kwargs)
    except TrendflowError as exc:  # the log file records why the run stopped, not only the terminal
        _to_log_file(logging.ERROR, f"trendflow {mode} run failed: {exc}")  # the terminal gets it once, as `error: ...`
        raise
    log.info("trendflow %s run finished in %.2fs", mode, summary["seconds"])
    print(f"trendflow {mode} run finished in {summary['seconds']:.1f}s; artifacts in {plan.out_dir}")
    for stage in summary["stages"]:
        if stage["stage"] == "reporting":
            print(f"report: {stage['summary']['report']}")
        if stage["stage"] == "trading" and mode == "daily":
            print(orders_line(stage["summary"]))
        if stage["stage"] == "sync":
            x = stage["summary"]
            print(f"book loaded from {x['broker']} before the run: cash {x['cash']:,.2f}, {len(x['positions'])} positions, "
                  f"{x['open_orders']} open orders")
        if stage["stage"] == "execute":
            x = stage["summary"]
            working = ("paper: fills at the next session's open, settled by that day's run" if x["broker"] == "paper" else
                       "still working at the broker: the next daily run records their fills")
            print(f"executed on {x['broker']} ({x['profile']}): filled {x['filled']}, working {x['working']} ({working}), "
                  f"rejected {x['rejected']}, already done {x['already_done']}; orders database {x['db']}")
    print(f"log: {log_file}")
    return 0


def _flow_run_settings() -> dict:
    """Prefect settings for a run started by `trendflow run`/`daily`: no flow-run heartbeats, unless
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY asks for them.

    Why: Prefect's heartbeat thread sleeps in 1 s steps and the flow engine joins it when the run
    ends, so every run waited 0-1 s (0.5 s on average, measured) after its last stage, with nothing
    left to do. The heartbeats (one at the start, the next after 180 s) let an automation notice a
    run whose process died; a command in the foreground reports its own end (exit code, the failure
    alert, the run's final state). Served and deployed runs (`trendflow serve`, workers) keep them."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") or os.environ.get("PREFECT_RUNNER_HEARTBEAT_FREQUENCY"):
        return {}
    return {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}


def orders_line(summary: dict) -> str:
    """`orders for the next session: BUY 300 510300.SH, ...`, or why there are none."""
    orders = summary.get("order_list") or []
    if not orders:
        return f"no orders after the close of {summary.get('as_of_date')}: {summary.get('no_orders_reason', 'none decided')}"
    return f"orders after the close of {summary.get('as_of_date')}: " + ", ".join(orders)


def _to_log_file(level: int, message: str) -> None:
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow run`."""
    prog = prog or "trendflow run"
    args = _parser(prog, daily=False).parse_args(argv)
    setup_logging(args.log_level)
    return run_command(lambda a: _run(a, a.mode, prog), args)


def daily_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow daily [--as-of-date D]`."""
    prog = prog or "trendflow daily"
    args = _parser(prog, daily=True).parse_args(argv)
    setup_logging(args.log_level)
    return run_command(lambda a: _run(a, "daily", prog), args)


if __name__ == "__main__":
    sys.exit(main())
