"""signal_state.npz: where the signal computation stood at the end of a run, so the next evening's
run can compute one new day instead of the whole history (see `carry`).

The state is a cache, never a source of truth: it is used only when the prices up to its last day
hash to the fingerprint it was made from, the config hash is the same and it was written by this
version of trendflow. Anything else, a damaged or edited file included, means a full recompute
(which gives the same numbers, just slower) and a log line saying why.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.panel import OHLCV, Panel

STATE_NAME = "signal_state.npz"
STATE_FORMAT = 1
_META = "meta"


class StateUnusable(Exception):
    """The saved state cannot carry this run forward (the message says why); recompute in full.

    `damaged`: the file itself is broken (worth a warning), not merely out of date."""

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


def _code_version() -> str:
    """The running source tree's version (stages/common/version.py), never the installed metadata."""
    from stages.common.version import VERSION

    return VERSION


def panel_fingerprints(panel: Panel, prefix_days: int | None = None) -> tuple[str, str | None]:
    """sha256 of the panel's symbols and its OHLCV rows in date order: of all days, and of the
    first `prefix_days` (one pass: the rows are hashed day-major, so the prefix is a prefix of the bytes).

    A row is the day (int64 bits) then each symbol's open, high, low, close, volume. The rows are
    laid out and hashed a block of days at a time: the same bytes as one (days x ...) array, without
    holding that array (and a stacked copy) beside the panel."""
    digest = hashlib.sha256("\x1f".join(map(str, panel.symbols)).encode())
    fields = [getattr(panel, f) for f in OHLCV]
    day_bits = panel.dates.asi8.view(np.float64)
    width = 1 + len(OHLCV) * len(panel.symbols)

    def feed(start: int, stop: int) -> None:
        for a in range(start, stop, _FINGERPRINT_DAYS):
            b = min(a + _FINGERPRINT_DAYS, stop)
            rows = np.empty((b - a, width))
            rows[:, 0] = day_bits[a:b]
            for k, values in enumerate(fields):
                rows[:, 1 + k::len(OHLCV)] = values[a:b]
            digest.update(memoryview(rows))

    prefix = None
    if prefix_days is not None:
        feed(0, prefix_days)
        prefix = digest.copy().hexdigest()
        feed(prefix_days, len(panel.dates))
    else:
        feed(0, len(panel.dates))
    return digest.hexdigest(), prefix


_FINGERPRINT_DAYS = 256


@dataclass
class SignalState:
    """The carried rows of every packed series plus the calendar-side cluster state, as of `last_date`."""

    last_date: pd.Timestamp
    n_days: int                 # calendar days so far (day numbers drive the cluster refresh schedule)
    symbols: list[str]
    counts: np.ndarray          # trading days per symbol so far
    fingerprint: str            # panel_fingerprints of the prices it was computed from
    config_hash: str
    rows: int                   # carried rows per series
    arrays: dict[str, np.ndarray]
    version: str = ""

    def to_bytes(self) -> bytes:
        meta = {"format": STATE_FORMAT, "version": self.version or _code_version(), "last_date": self.last_date.isoformat(),
                "n_days": self.n_days, "fingerprint": self.fingerprint, "config_hash": self.config_hash, "rows": self.rows}
        buffer = io.BytesIO()
        np.savez(buffer, **{_META: np.array(json.dumps(meta, sort_keys=True)), "symbols": np.array(self.symbols, dtype=str),
                            "counts": self.counts.astype(np.int64)},
                 **{f"carry.{k}": v for k, v in sorted(self.arrays.items())})
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> SignalState:
        """Read and check the file; StateUnusable names what is wrong."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                files = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise StateUnusable(f"{path} cannot be read ({exc})", damaged=True) from None
        try:
            meta = json.loads(str(files.pop(_META)))
            symbols = [str(s) for s in files.pop("symbols")]
            counts = files.pop("counts")
            state = cls(last_date=pd.Timestamp(meta["last_date"]), n_days=int(meta["n_days"]), symbols=symbols,
                        counts=counts, fingerprint=str(meta["fingerprint"]), config_hash=str(meta["config_hash"]),
                        rows=int(meta["rows"]), arrays={k.removeprefix("carry."): v for k, v in files.items()},
                        version=str(meta["version"]))
            fmt = int(meta["format"])
        except (KeyError, ValueError, TypeError) as exc:
            raise StateUnusable(f"{path} is not a trendflow signal state ({type(exc).__name__}: {exc})", damaged=True) from None
        if fmt != STATE_FORMAT or state.version != _code_version():
            raise StateUnusable(f"{path} was written by another trendflow (format {fmt}, version {state.version})")
        n = len(symbols)
        if counts.shape != (n,) or counts.dtype.kind != "i":
            raise StateUnusable(f"{path}: 'counts' should be {n} integers, found {counts.dtype} {counts.shape}", damaged=True)
        for key, array in state.arrays.items():
            if array.ndim != 2 or array.shape[1] != n or array.dtype != np.float64:
                raise StateUnusable(f"{path}: carried series {key!r} should be float64 rows x {n} symbols, found {array.dtype} {array.shape}",
                                    damaged=True)
        return state
