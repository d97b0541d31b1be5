"""Volatility-weighted multi-period momentum and its per-date rank.

For each window w: the w-day return divided by the volatility over the same w days scaled to w
days (std of daily log returns x sqrt(w)) -- a return in units of its own risk. The score is the
weighted sum over windows. A symbol is eligible only when it has every window's history: a young
ETF is not scored on partial weights (it enters the ranking once its longest window is full).
"""
from __future__ import annotations

import numpy as np

from stages.signal.indicators import rolling_mean, shift


def window_momentum(close: np.ndarray, log_ret: np.ndarray, window: int) -> np.ndarray:
    """(close_t / close_{t-w} - 1) / (std of the last w log returns x sqrt(w)); packed arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = close / shift(close, window) - 1.0
        mean = rolling_mean(log_ret, window)
        var = np.maximum(rolling_mean(log_ret ** 2, window) - mean ** 2, 0.0) * window / (window - 1)
        vol = np.sqrt(var * window)
        return np.where(vol > 1e-12, ret / vol, np.nan)


def momentum_score(close: np.ndarray, log_ret: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """Weighted sum of window momenta; NaN unless every window is available."""
    total = sum(weights.values())
    score = np.zeros(close.shape)
    for window, weight in sorted(weights.items()):
        score = score + (weight / total if total else 0.0) * window_momentum(close, log_ret, window)
    return score


def rank_by_date(score: np.ndarray) -> np.ndarray:
    """Rank per row (date) among non-NaN scores, 1 = best; ties broken by column (symbol) order."""
    keyed = np.where(np.isnan(score), np.inf, -score)
    order = np.argsort(keyed, axis=1, kind="stable")
    ranks = np.empty(score.shape)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, score.shape[1] + 1, dtype=float), score.shape), axis=1)
    return np.where(np.isnan(score), np.nan, ranks)
