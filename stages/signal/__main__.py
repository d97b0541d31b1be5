"""python -m stages.signal [--config F] [--set k=v] [--data DIR] [--out DIR] [--as-of-date D]"""
from __future__ import annotations

import argparse
from datetime import date

from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.common.stage import resolve_out_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stages.signal",
        description="Signal stage: trend signals, momentum scores/ranks and clusters -> prices.parquet, signals_output.parquet",
    )
    add_common_arguments(parser)
    parser.add_argument("--data", help="folder of per-symbol price files or one long file (default: config data.source, else the demo universe)")
    parser.add_argument("--out", "--output-dir", help="output folder (default: config output.folder)")
    parser.add_argument("--as-of-date", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="daily run: use prices up to this date; also write signals_D.csv and scores_D.csv")

    def body(args: argparse.Namespace) -> int:
        from stages.signal.stage import run_signal_stage

        from stages.common.folder_lock import writing

        config = config_from_args(args)
        from stages.common.stage import check_data_apart

        check_data_apart(args.data, config, resolve_out_dir(args.out, config))  # before the lock makes --out
        with writing(resolve_out_dir(args.out, config), wait=args.wait) as out_dir:
            result = run_signal_stage(config, args.data, out_dir, as_of_date=args.as_of_date)
        print(result.log_line())
        return 0

    return parse_and_run(parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
