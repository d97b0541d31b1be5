"""Carrying the signal computation forward by a few days without recomputing the history.

A full run records, for every series a later day depends on (the inputs, each recursion's output,
each running prefix sum), its last rows per symbol. A step run puts those rows on top of the new
days' rows and computes only the new rows: each recursion continues from its recorded value, each
prefix sum from its recorded total, each shift or window reads the recorded rows. The additions and
multiplications happen in the same order as in a full run, so a step's values are bit-for-bit those
a full recompute would give (tests/test_signal_step.py proves it), not merely close.

Arrays are on the packed grid (see `indicators.pack`): row i of a symbol's column is its i-th
trading day. In a step the first `rows` rows of every array are the recorded history.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def last_rows(series: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """For each column j, rows end[j]-length+1 .. end[j] of `series` (NaN where that is above row 0)."""
    idx = end[None, :] - np.arange(length - 1, -1, -1)[:, None]
    taken = np.take_along_axis(series, np.clip(idx, 0, None), axis=0).astype(float)
    taken[idx < 0] = np.nan
    return taken


@dataclass
class Carry:
    """The recorded rows of a computation: `previous` (None in a full run) in, `kept` out.

    `counts[j]` is how many rows of column j hold observations in this run's arrays (a step: the
    recorded rows plus the symbol's new days); `rows` is how many rows each series records."""

    counts: np.ndarray
    rows: int
    previous: dict[str, np.ndarray] | None = None
    kept: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def stepping(self) -> bool:
        return self.previous is not None

    def before(self, key: str) -> np.ndarray:
        """What the last run recorded for `key` (a step only)."""
        assert self.previous is not None
        return self.previous[key]

    def keep(self, key: str, series: np.ndarray, *, prefix: bool = False) -> None:
        """Record the last `rows` rows of `series` per symbol; a prefix-sum array (one row longer than
        the data, row i = sum of rows < i) keeps `rows` + 1 rows ending with the total."""
        if key in self.kept:
            raise ValueError(f"carried series {key!r} recorded twice")
        if prefix:
            self.kept[key] = last_rows(series, self.counts, self.rows + 1)
        else:
            self.kept[key] = last_rows(series, self.counts - 1, self.rows)


def record(carry: Carry | None, key: str, series: np.ndarray, *, prefix: bool = False) -> None:
    """carry.keep, for code that runs with or without a carry."""
    if carry is not None:
        carry.keep(key, series, prefix=prefix)


def stepping(carry: Carry | None) -> bool:
    return carry is not None and carry.stepping
