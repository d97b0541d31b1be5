"""What every command line shares: --config/--set/--log-level, logging set-up, and turning a
TrendflowError into one clear stderr line and a non-zero exit code (no traceback for user errors)."""
from __future__ import annotations

import argparse
import logging
import re
import sqlite3
import sys
from pathlib import Path
from typing import Callable, Sequence

from schemas.config import TrendflowConfig
from stages.common.config import load_config
from stages.common.errors import TrendflowError
from stages.common.fs import is_os_fault, os_error

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NUMPY_REPR = re.compile(r"np\.(?:str_|bytes_|bool_|u?int\d*|float\d*|complex\d*|datetime64|timedelta64)\((.*?)\)")


def plain_text(text: str) -> str:
    """A message as a person writes it: `['159370.SZ']`, not numpy 2's `[np.str_('159370.SZ')]`."""
    return _NUMPY_REPR.sub(r"\1", text)


class PlainMessages(logging.Filter):
    """Log lines without numpy reprs (a list of symbols from an array prints as plain strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        plain = plain_text(message)
        if plain != message:
            record.msg, record.args = plain, None
        return True


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set (repeatable) and --log-level, spelled the same in every command."""
    parser.add_argument("--config", metavar="FILE", help="JSON config (default: config/default.json); may omit keys")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set risk.atr_multiplier=2.5 (repeatable; VALUE is JSON or a string)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--wait", action="store_true",
                        help="when another trendflow command is writing the same folder, wait for it instead of stopping")


class _SetKey(argparse.Action):
    """A flag that is shorthand for `--set <const>=VALUE` (applied in command-line order with the --set's)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, "overrides", [*(getattr(namespace, "overrides", None) or []), f"{self.const}={values}"])


def add_market_data_argument(parser: argparse.ArgumentParser) -> None:
    """--market-data FILE: a market index for the circuit breaker only (= --set risk.market_data=FILE)."""
    parser.add_argument("--market-data", metavar="FILE", action=_SetKey, const="risk.market_data",
                        help="price file of a market index for the circuit breaker only, never traded or ranked "
                             "(= --set risk.market_data=FILE)")


def config_from_args(args: argparse.Namespace) -> TrendflowConfig:
    return load_config(args.config, args.overrides)


def setup_logging(level: str = "INFO", log_file: str | Path | None = None) -> None:
    """Console logging at `level`; with `log_file`, also a file log (DEBUG detail kept there too)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        # ours from an earlier call, or Prefect's console handler (it would print every line twice)
        if getattr(handler, "_trendflow", False) or type(handler).__module__.startswith("prefect"):
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
    console._trendflow = True  # type: ignore[attr-defined]
    console.addFilter(PlainMessages())
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(level)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        file_handler._trendflow = True  # type: ignore[attr-defined]
        file_handler.addFilter(PlainMessages())
        root.addHandler(file_handler)
    for noisy in ("numba", "matplotlib", "distributed", "asyncio", "urllib3", "httpx", "httpcore", "websockets",
                  "aiosqlite", "alembic", "docket", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_command(body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command body; user errors become `error: <message>` on stderr and their exit code."""
    try:
        code = body(args)
    except TrendflowError as exc:
        logging.getLogger("trendflow").debug("failed", exc_info=True)
        print(f"error: {plain_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.OperationalError as exc:  # the execution database, busy beyond the store's own retries
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        print(f"error: a database is locked by another process ({exc}); try again", file=sys.stderr)
        return 3
    except OSError as exc:  # a full disk, a read-only folder...: one line naming the path, not a traceback
        if not is_os_fault(exc):
            raise
        logging.getLogger("trendflow").debug("failed", exc_info=True)
        error = os_error(exc, doing="cannot use")
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


def parse_and_run(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None,
) -> int:
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_command(body, args)
