"""`trendflow serve`: run the daily flow on a cron schedule after the close, in the exchange's time
zone, skipping days the exchange is closed (exchange_calendars), until stopped with Ctrl-C (SIGINT).

The schedule is a Prefect deployment (`prefect.schedules.Cron` with its time zone) served by this
process against the shared local server or PREFECT_API_URL; each due run happens here, in a
subprocess. Stopping leaves the schedule active (runs due while nothing serves it wait as Late and
start when `serve` is back) unless --pause-on-shutdown.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from stages.common.cli import add_common_arguments, run_command, setup_logging
from stages.common.errors import ConfigError, DataError

log = logging.getLogger("trendflow.schedule")
DEFAULT_CRON = "30 15 * * 1-5"
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_CALENDAR = "XSHG"


def is_trading_day(day: date, calendar: str = DEFAULT_CALENDAR) -> bool:
    """True when `calendar` (an exchange_calendars code such as XSHG or XNYS) has a session on `day`."""
    import exchange_calendars as xcals

    cal = xcals.get_calendar(calendar)
    ts = datetime(day.year, day.month, day.day)
    if ts < cal.first_session.tz_localize(None) or ts > cal.last_session.tz_localize(None):
        raise ValueError(f"{day} is outside the {calendar} calendar's range")
    return bool(cal.is_session(ts.strftime("%Y-%m-%d")))


def today_in(timezone: str) -> date:
    """Today's date where the exchange is (the schedule fires after its close)."""
    return datetime.now(ZoneInfo(timezone)).date()


def check_cron(cron: str) -> None:
    """Five fields (minute hour day month weekday); Prefect's own parser checks the values later."""
    if len(cron.split()) != 5 or not re.fullmatch(r"[0-9A-Za-z*/,\- ]+", cron):
        raise ConfigError(f"--cron {cron!r}: not a cron expression (five fields: minute hour day month weekday)")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "trendflow serve", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--data", help="price folder (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"cron expression (default '{DEFAULT_CRON}': weekdays 15:30)")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE, help=f"time zone of the cron (default {DEFAULT_TIMEZONE})")
    parser.add_argument("--calendar", default=DEFAULT_CALENDAR, help="exchange calendar for skipping holidays (default XSHG; e.g. XNYS)")
    parser.add_argument("--name", default="trendflow-daily", help="deployment name shown in the Prefect UI")
    parser.add_argument("--execute", choices=["paper", "ibkr"],
                        help="send each day's orders to this broker as a last step (ibkr: each run first loads the "
                             "broker's book)")
    parser.add_argument("--profile", default="balanced", help="risk profile for --execute")
    parser.add_argument("--pause-on-shutdown", action="store_true",
                        help="pause the schedule when serve stops (default: it stays active)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    prog = prog or "trendflow serve"

    def body(args: argparse.Namespace) -> int:
        from stages.common.config import load_config

        print(f"{prog}: checking the config, data folder and schedule ...", flush=True)
        config = load_config(args.config, args.overrides)  # fail fast on a bad config
        try:  # ...on a bad time zone or calendar
            is_trading_day(today_in(args.timezone), args.calendar)
        except Exception as exc:  # noqa: BLE001 -- zoneinfo and exchange_calendars raise their own types
            raise ConfigError(f"--timezone {args.timezone!r} / --calendar {args.calendar!r}: {exc}") from None
        check_cron(args.cron)
        source = args.data or config.data.source
        if source is not None and not Path(source).exists():
            raise DataError(f"{'--data' if args.data else 'data.source'} {source}: no such file or folder")
        if args.execute:
            from stages.trading.execution.brokers import check_broker
            from stages.trading.execution.cli import load_profile

            load_profile(args.profile)
            check_broker(args.execute)
        serve(args, prog)
        return 0

    return run_command(body, args)


def serve(args: argparse.Namespace, prog: str) -> None:
    """Register the deployment with its Cron schedule and poll for due runs until Ctrl-C."""
    from flows.commands import _api_url

    url = _api_url(prog)
    if url is not None:
        from flows.local_server import keep_alive

        keep_alive()  # the shared server must not stop as idle while this process serves from it
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.alerts import one_line
    from flows.pipeline import trend_pipeline

    logging.getLogger("prefect").setLevel(logging.INFO if args.log_level == "DEBUG" else logging.WARNING)

    def absolute(path: str | None) -> str | None:  # the runs, and the UI, see where the files are
        return str(Path(path).resolve()) if path else None

    parameters = {"config_path": absolute(args.config), "overrides": args.overrides, "data": absolute(args.data),
                  "out": absolute(args.out),
                  "mode": "daily", "timezone": args.timezone, "calendar": args.calendar, "execute": args.execute,
                  "risk_profile": args.profile}
    try:
        schedule = Cron(args.cron, timezone=args.timezone)
    except ValueError as exc:
        raise ConfigError(f"--cron {args.cron!r}: {one_line(exc)}") from None
    print(f"{prog}: serving '{args.name}': cron '{args.cron}' ({args.timezone}), {args.calendar} sessions only; "
          f"Ctrl-C to stop", flush=True)
    settings = {PREFECT_API_URL: url} if url else {}
    with temporary_settings(settings):
        try:
            trend_pipeline.serve(name=args.name, schedules=[schedule], parameters=parameters,
                                 pause_on_shutdown=args.pause_on_shutdown, print_starting_message=False)
        except KeyboardInterrupt:  # Ctrl-C while the deployment is still being registered: the same clean stop
            pass
    state = "paused" if args.pause_on_shutdown else "left active"
    print(f"{prog}: stopped serving '{args.name}' (schedule {state})", file=sys.stderr)
