"""python -m stages.data --symbols 510300.SH,SPY [--provider auto|akshare|yfinance] [--store DIR] [--end D]
(same as `trendflow fetch`)"""
from __future__ import annotations

import argparse
from datetime import date

from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.data.adapters import SOURCES


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    sources = "\n".join(f"  {name}: {text}" for name, text in SOURCES.items())
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stages.data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Data stage: fetch daily prices into a local Parquet store of raw (unadjusted) bars + "
                    "adjustment factors, then write <store>/adjusted_prices.parquet (data.adjust: forward | back) "
                    "for the signal stage (--data <store>/adjusted_prices.parquet).",
        epilog=f"sources (fetch.provider; auto = akshare for .SH/.SZ, yfinance otherwise):\n{sources}\n\n"
               "Only sessions after the last stored one (plus fetch.recheck_sessions before it) are asked for; "
               "requests are spaced by fetch.min_interval_seconds and transient failures retried fetch.retries "
               "times. A failing symbol is reported and the others go on (exit 1); all failing: exit 3 "
               "(network) or 2. Needs the network: the live path is exercised by hand only.",
    )
    add_common_arguments(parser)
    parser.add_argument("--symbols", help="comma-separated symbols, e.g. 510300.SH,159915.SZ,SPY (default: config data.symbols)")
    parser.add_argument("--provider", choices=["auto", *SOURCES], help="source for every symbol (default: config fetch.provider)")
    parser.add_argument("--store", metavar="DIR", help="the price store folder (default: config fetch.store)")
    parser.add_argument("--end", type=date.fromisoformat, metavar="YYYY-MM-DD", help="last date to fetch (default: today)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)

    def body(args: argparse.Namespace) -> int:
        from stages.common.folder_lock import writing
        from stages.data.fetch import run_fetch

        overrides = list(args.overrides) + ([f"fetch.provider={args.provider}"] if args.provider else [])
        args.overrides = overrides
        config = config_from_args(args)
        symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else list(config.data.symbols or [])
        with writing(args.store or config.fetch.store, wait=args.wait) as store:
            summary, result = run_fetch(config, symbols, store_dir=store, end=args.end)
        print("\n".join(summary.lines()))
        print(f"{result.log_line()}; prices for the signal stage: {result.outputs.get('adjusted_prices.parquet')}")
        return 1 if summary.failed else 0

    return parse_and_run(parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
