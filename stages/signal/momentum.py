"""Volatility-weighted multi-period momentum and its per-date rank.

For each window w: the w-day return divided by the volatility over the same w days scaled to w
days (std of daily log returns x sqrt(w)) -- a return in units of its own risk. The score is the
weighted sum over windows. A symbol is eligible only when it has every window's history: a young
ETF is not scored on partial weights (it enters the ranking once its longest window is full).
"""
from __future__ import annotations

import logging

import numpy as np

from stages.signal.carry import Carry
from stages.signal.indicators import prefix_sum, shift

log = logging.getLogger(__name__)


class _PrefixSums:
    """Cumulative sums of x, x^2 and of missing values, so every window's rolling moments cost O(n)."""

    def __init__(self, x: np.ndarray, carry: Carry | None = None) -> None:
        missing = np.isnan(x)
        clean = np.where(missing, 0.0, x)
        self.s1 = prefix_sum(clean, carry, "momentum.sum")
        self.s2 = prefix_sum(clean * clean, carry, "momentum.squares")
        self.miss = prefix_sum(missing.astype(float), carry, "momentum.missing")

    def mean_and_var(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Rolling mean and sample variance (ddof=1) of the last `window` rows; NaN unless all present."""
        mean = np.full(self.s1[1:].shape, np.nan)
        var = np.full(self.s1[1:].shape, np.nan)
        if window < self.s1.shape[0]:
            full = (self.miss[window:] - self.miss[:-window]) == 0
            m = (self.s1[window:] - self.s1[:-window]) / window
            sq = (self.s2[window:] - self.s2[:-window]) / window
            mean[window - 1:] = np.where(full, m, np.nan)
            var[window - 1:] = np.where(full, np.maximum(sq - m * m, 0.0) * window / (window - 1), np.nan)
        return mean, var


def window_momentum(close: np.ndarray, log_ret: np.ndarray, window: int, _sums: _PrefixSums | None = None) -> np.ndarray:
    """(close_t / close_{t-w} - 1) / (std of the last w log returns x sqrt(w)); packed arrays."""
    sums = _sums if _sums is not None else _PrefixSums(log_ret)
    _, var = sums.mean_and_var(window)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = close / shift(close, window) - 1.0
        vol = np.sqrt(var * window)
        return np.where(vol > 1e-12, ret / vol, np.nan)


def momentum_score(
    close: np.ndarray, log_ret: np.ndarray, weights: dict[int, float], carry: Carry | None = None
) -> np.ndarray:
    """Weighted sum of window momenta with the weights normalised to sum to 1 (`normalised_weights`);
    NaN unless every window is available."""
    sums = _PrefixSums(log_ret, carry)
    score = np.zeros(close.shape)
    for window, weight in sorted(normalised_weights(weights).items()):
        score += weight * window_momentum(close, log_ret, window, sums)
    return score


def normalised_weights(weights: dict[int, float]) -> dict[int, float]:
    """w_k / sum(w): the weights the score uses. Weights that do not sum to 1 are normalised, with a
    warning naming the weights used (the config forbids all-zero weights)."""
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-9:
        used = {w: v / total for w, v in weights.items()}
        log.warning("scoring.momentum_weights sum to %g, not 1: normalised to %s", total,
                    {w: round(v, 6) for w, v in sorted(used.items())})
        return used
    return dict(weights)


def rank_by_date(score: np.ndarray) -> np.ndarray:
    """Rank per row (date) among non-NaN scores, 1 = best; ties broken by column (symbol) order."""
    keyed = np.where(np.isnan(score), np.inf, -score)
    order = np.argsort(keyed, axis=1, kind="stable")
    ranks = np.empty(score.shape)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, score.shape[1] + 1, dtype=float), score.shape), axis=1)
    return np.where(np.isnan(score), np.nan, ranks)
