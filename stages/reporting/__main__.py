"""python -m stages.reporting [--config F] [--set k=v] [--in DIR] --out DIR [--benchmark S] [--data DIR]"""
from __future__ import annotations

import argparse

from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.common.stage import resolve_out_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "python -m stages.reporting",
                                     description="Reporting stage: performance_summary.json (+csv) and report.html")
    add_common_arguments(parser)
    parser.add_argument("--in", dest="in_dir", metavar="DIR", help="folder with the trading artifacts (default: --out)")
    parser.add_argument("--out", "--output-dir", metavar="DIR", help="output folder (default: config output.folder)")
    parser.add_argument("--benchmark", metavar="SYMBOL_OR_FILE", help="a symbol in prices.parquet or a price file (default: config reporting.benchmark)")
    parser.add_argument("--data", metavar="DIR", help="the price folder the signals came from: shown in the report, and "
                                                      "its names.csv gives display names (default: config data.source)")

    def body(args: argparse.Namespace) -> int:
        from stages.reporting.stage import run_reporting_stage

        from stages.common.folder_lock import writing

        config = config_from_args(args)
        with writing(resolve_out_dir(args.out, config), wait=args.wait) as out_dir:
            result = run_reporting_stage(config, args.in_dir, out_dir, benchmark=args.benchmark, data=args.data)
        print(result.log_line())
        print(f"report: {result.summary['report']}")
        return 0

    return parse_and_run(parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
