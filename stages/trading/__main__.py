"""python -m stages.trading [SIGNALS_FILE] [--config F] [--set k=v] [--in DIR] --out DIR [--weights F]
[--as-of-date D [--portfolio F | --fresh]] [--dry-run]   (same as `trendflow trade`)"""
from __future__ import annotations

import argparse
import contextlib
from datetime import date
from pathlib import Path

from stages.common.cli import add_common_arguments, add_market_data_argument, config_from_args, parse_and_run
from stages.common.stage import resolve_out_dir


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stages.trading",
        description="Trading stage: backtest over saved signals (prices.parquet + signals_output.parquet), or one "
                    "daily step from the previous day's portfolio snapshot.",
    )
    add_common_arguments(parser)
    parser.add_argument("signals", nargs="?", metavar="SIGNALS_FILE",
                        help="as V4's run_trading_phase.py took it: a wide date x symbol weights file (= --weights), or "
                             "a folder's signals_output.parquet; either way its folder is --in when it holds prices.parquet")
    parser.add_argument("--in", dest="in_dir", metavar="DIR",
                        help="folder with prices.parquet + signals_output.parquet (default: --out)")
    parser.add_argument("--out", "--output-dir", metavar="DIR", help="output folder (default: config output.folder)")
    parser.add_argument("--weights", metavar="FILE",
                        help="external target weights instead of the signal rules: wide date x symbol, Parquet or CSV")
    parser.add_argument("--as-of-date", type=_day, metavar="YYYY-MM-DD",
                        help="daily run: one step for this date -> orders_<D>.csv (to fill at the next open) and "
                             "portfolio_<D>.json")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--portfolio", metavar="FILE",
                       help="daily run: snapshot of the previous trading day (default: <out>/portfolio_<prev>.json)")
    start.add_argument("--fresh", action="store_true", default=False,
                       help="daily run: start from cash (execution.initial_cash) instead of a snapshot")
    add_market_data_argument(parser)
    parser.add_argument("--accept-edited-snapshot", action="store_true", help="daily run: resume from a portfolio snapshot that was edited after the run that wrote it (its sha256 no longer matches manifest.json); the override is recorded in the log")
    parser.add_argument("--allow-stale", action="store_true",
                        help="daily run: carry the last close of holdings without a price on the as-of date "
                             "(default: an error naming them)")
    parser.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                        help="print the orders and write nothing (--no-dry-run, the default, writes the files)")
    return parser


def _positional_signals(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(--in, --weights) with V4's positional signals file folded in."""
    from stages.common.errors import ConfigError
    from stages.trading.weights import is_long_signals_file

    if args.signals is None:
        return args.in_dir, args.weights
    if args.weights is not None:
        raise ConfigError(f"{args.signals} and --weights {args.weights}: give the signals file once")
    path = Path(args.signals)
    in_dir = args.in_dir
    if in_dir is None and (path.parent / "prices.parquet").exists():
        in_dir = str(path.parent)
    if not is_long_signals_file(path):
        return in_dir, str(path)
    if path.name != "signals_output.parquet":
        raise ConfigError(f"{path} is a long signals file: the trading stage reads <--in>/signals_output.parquet; "
                          "rename it, or give a wide date x symbol weights file")
    if args.in_dir is not None and Path(args.in_dir).resolve() != path.parent.resolve():
        raise ConfigError(f"{path} is not in --in {args.in_dir}: give one of them")
    return str(path.parent), None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)

    def body(args: argparse.Namespace) -> int:
        from stages.trading.stage import run_trading_stage

        from stages.common.folder_lock import writing

        config = config_from_args(args)
        in_dir, weights = _positional_signals(args)
        out_dir = resolve_out_dir(args.out, config)
        with writing(out_dir, wait=args.wait) if not args.dry_run else contextlib.nullcontext():
            result = run_trading_stage(config, in_dir, out_dir, weights=weights,
                                       as_of_date=args.as_of_date, portfolio=args.portfolio, fresh=args.fresh,
                                       dry_run=args.dry_run, allow_stale=args.allow_stale,
                                       accept_edited_snapshot=args.accept_edited_snapshot)
        print(result.log_line())
        return 0

    return parse_and_run(parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
