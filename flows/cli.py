"""`trendflow <command> ...`: one entry point that dispatches to each command's own `main(argv)`.

Commands are imported lazily, so `trendflow signal` never pays for importing Prefect.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Sequence

# command -> ("module:function", one-line help). Each function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("flows.commands:main", "run the Prefect flow: signal -> trading -> reporting"),
    "daily": ("flows.commands:daily_main", "the daily run for one date (flow in daily mode)"),
    "fetch": ("stages.data.__main__:main", "data stage: fetch prices (akshare / yfinance) into the local store -> adjusted_prices.parquet"),
    "signal": ("stages.signal.__main__:main", "signal stage alone (no Prefect)"),
    "trade": ("stages.trading.__main__:main", "trading stage alone (no Prefect)"),
    "report": ("stages.reporting.__main__:main", "reporting stage alone (no Prefect)"),
    "demo-data": ("stages.common.demo:main", "write the built-in demo universe as per-symbol CSVs"),
    "config": ("stages.common.legacy:main", "config import OLD.json: convert an older signal_pipeline config (prints the new one)"),
    "validate": ("stages.common.validate:main", "check artifact files against their schemas"),
    "serve": ("flows.schedule:main", "serve the flow on a cron schedule (exchange trading days only)"),
    "server": ("flows.local_server:server_main", "the shared local Prefect server: status | start | stop"),
    "sweep": ("flows.sweep:main", "parameter sweep / walk-forward, optionally on Dask"),
    "execute": ("stages.trading.execution.cli:execute_main", "send a daily run's orders to a broker under risk controls"),
    "risk": ("stages.trading.execution.cli:risk_main", "risk controls: reset-breaker, show"),
    "reconcile": ("stages.trading.execution.cli:reconcile_main", "executed book vs model: accept a broker position, load the IBKR book"),
    "status": ("stages.trading.execution.cli:status_main", "terminal dashboard: positions, cash, breaker, today's executions"),
    "warm": ("flows.warm:warm_main", "warm processes: daily/signal/trade/report without their imports each time: start | stop | status"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: trendflow <command> [options]   (trendflow <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[name][0].split(":")
    command = getattr(import_module(module_name), function_name)
    return int(command(rest, prog=f"trendflow {name}") or 0)


# The cyclic garbage collector's thresholds for a command's process. With CPython's (700, 10, 10)
# the imports alone (pandas, pydantic, pandera, Prefect: a few million objects, nearly all kept for
# the life of the process) set off ~500 collections, four of them full ones that walk every object:
# 0.3-0.6 s of a 4 s `trendflow daily`, 0.2-0.3 s of each stage command (measured with gc.callbacks).
# A young generation of 50,000 objects makes that ~7 collections (0.15 s); cyclic garbage is still
# collected, only in larger batches.
GC_THRESHOLDS = (50_000, 20, 10)

# commands whose process ends with os._exit once they have returned (see entry)
QUICK_EXIT = ("signal", "trade", "report")

# The stage commands run OpenBLAS on one thread (unless OPENBLAS_NUM_THREADS is set): their matrix
# products are small (a 60-day correlation, a few covariances), so a second BLAS thread has nothing
# to do but spin after each call -- 1.9-3.5% of each stage's CPU samples in `blas_thread_server`
# (perf, 500 symbols x 10 years), 0.06 CPU-s for one np.cov in a bare process. Read by OpenBLAS
# when numpy loads, so set before any command is imported. `trendflow daily` runs the same stages for
# one evening (a median 0.2 CPU-s less per 100-symbol run, alternated; same artifacts).
ONE_BLAS_THREAD = (*QUICK_EXIT, "daily")

# The commands a warm process may run (flows/warm.py), by warm process: the stage commands' never
# imports Prefect, the daily run's does.
WARM_FLAVORS = {"stages": QUICK_EXIT, "daily": ("daily",)}
WARM_COMMANDS = tuple(command for commands in WARM_FLAVORS.values() for command in commands)


def entry() -> None:
    """The `trendflow` console script and `python -m flows.cli`: exit with main()'s code. After a
    command that ran Prefect, Prefect's log and event queues are drained to the server and the
    process then ends without the interpreter's teardown of a few hundred MB of frames and
    threads (0.5-3 s measured on 2 busy cores, during which nothing is printed). A stage command
    (QUICK_EXIT) skips that teardown too: its artifacts are committed (fsync'd, renamed, manifest
    written) and its threads joined before it returns; the teardown would only free its memory and
    modules one object at a time (0.05-0.2 CPU-s per stage at 500 symbols x 10 years)."""
    import gc
    import os

    gc.set_threshold(*GC_THRESHOLDS)
    if len(sys.argv) > 1 and sys.argv[1] in ONE_BLAS_THREAD:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in WARM_COMMANDS:
        from flows.warm import run_warm

        warm_code = run_warm(sys.argv)  # None: no usable warm process, so the command runs here
        if warm_code is not None:
            sys.exit(warm_code)
    finish(main(), command)


def finish(code: int, command: str) -> None:
    """End the process of `command` with `code` (see entry); also how a warm process's child ends."""
    import os

    prefect = "prefect.logging.handlers" in sys.modules
    if prefect:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)
    if prefect or command in QUICK_EXIT:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
