"""`trendflow serve`: run the daily flow on a cron schedule after the close, skipping days the
exchange is closed (exchange_calendars), until stopped with Ctrl-C (SIGINT)."""
from __future__ import annotations

import argparse
import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo

from stages.common.cli import add_common_arguments, run_command, setup_logging
from stages.common.errors import ConfigError

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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow serve", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--data", help="price folder (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"cron expression (default '{DEFAULT_CRON}': weekdays 15:30)")
    parser.add_argument("--timezone", default=DEFAULT_TIMEZONE, help=f"time zone of the cron (default {DEFAULT_TIMEZONE})")
    parser.add_argument("--calendar", default=DEFAULT_CALENDAR, help="exchange calendar for skipping holidays (default XSHG; e.g. XNYS)")
    parser.add_argument("--name", default="trendflow-daily", help="deployment name shown in the Prefect UI")

    def body(args: argparse.Namespace) -> int:
        from flows.pipeline import trend_pipeline
        from stages.common.config import load_config

        load_config(args.config, args.overrides)  # fail fast on a bad config
        try:  # ...and on a bad time zone or calendar
            is_trading_day(today_in(args.timezone), args.calendar)
        except Exception as exc:  # noqa: BLE001 -- zoneinfo and exchange_calendars raise their own types
            raise ConfigError(f"--timezone {args.timezone!r} / --calendar {args.calendar!r}: {exc}") from None
        parameters = {"config_path": args.config, "overrides": args.overrides, "data": args.data, "out": args.out,
                      "mode": "daily", "timezone": args.timezone, "calendar": args.calendar}
        print(f"serving '{args.name}': cron '{args.cron}' ({args.timezone}), {args.calendar} trading days only; Ctrl-C to stop")
        trend_pipeline.serve(name=args.name, cron=args.cron, timezone=args.timezone, parameters=parameters)
        return 0

    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_command(body, args)
