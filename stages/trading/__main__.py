"""python -m stages.trading [--config F] [--set k=v] [--in DIR] --out DIR [--weights F]
[--as-of-date D [--portfolio F | --fresh]] [--dry-run]"""
from __future__ import annotations

import argparse
from datetime import date

from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.common.stage import resolve_out_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stages.trading",
        description="Trading stage: backtest over saved signals, or one daily step from a portfolio snapshot",
    )
    add_common_arguments(parser)
    parser.add_argument("--in", dest="in_dir", help="folder with prices.parquet + signals_output.parquet (default: --out)")
    parser.add_argument("--out", help="output folder (default: config output.folder)")
    parser.add_argument("--weights", metavar="FILE", help="external target weights (wide: date x symbol, Parquet or CSV)")
    parser.add_argument("--as-of-date", type=date.fromisoformat, metavar="YYYY-MM-DD", help="daily run for this date")
    parser.add_argument("--portfolio", metavar="FILE", help="snapshot of the previous day (default: <out>/portfolio_<prev>.json)")
    parser.add_argument("--fresh", action="store_true", help="daily run: start from cash instead of a snapshot")
    parser.add_argument("--dry-run", action="store_true", default=False, help="print the orders, write nothing")

    def body(args: argparse.Namespace) -> int:
        from stages.trading.stage import run_trading_stage

        if (args.portfolio or args.fresh) and args.as_of_date is None:
            parser.error("--portfolio/--fresh need --as-of-date")
        config = config_from_args(args)
        result = run_trading_stage(config, args.in_dir, resolve_out_dir(args.out, config), weights=args.weights,
                                   as_of_date=args.as_of_date, portfolio=args.portfolio, fresh=args.fresh,
                                   dry_run=args.dry_run)
        print(result.log_line())
        return 0

    return parse_and_run(parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
