"""The one interface every price source implements: a third source is one more file like akshare.py."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import pandas as pd

BAR_FIELDS = ["date", "open", "high", "low", "close", "volume"]
EVENT_FIELDS = ["date", "dividend", "split"]


@dataclass
class Fetched:
    """What a source returns for one symbol and span.

    bars: date (naive midnight), open, high, low, close, volume -- as traded, never adjusted;
    events: date (ex-date), dividend (cash per share, 0 if none), split (new shares per old share, 1 if none).
    """

    bars: pd.DataFrame
    events: pd.DataFrame


class Source(Protocol):
    """A vendor adapter. `fetch` asks the vendor for the sessions [start, end] of one symbol; it raises
    on failure (the caller retries what `is_transient` accepts)."""

    name: str

    def fetch(self, symbol: str, start: date, end: date) -> Fetched: ...

    def is_transient(self, exc: BaseException) -> bool: ...


def connection_trouble(exc: BaseException) -> bool:
    """Network faults worth a retry: connection reset/refused/timeouts (requests' errors are OSErrors;
    Eastmoney's blocks show up as RemoteDisconnected, a ConnectionResetError)."""
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, (FileNotFoundError, PermissionError))


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "dividend": pd.Series(dtype=float),
                         "split": pd.Series(dtype=float)})


def vendor_library(name: str):
    """Import a vendor library, or one clear error saying how to install it."""
    import importlib

    from stages.common.errors import ConfigError

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"fetch.provider needs the {name} package ({exc}): pip install \"trendflow[data]\"") from None

