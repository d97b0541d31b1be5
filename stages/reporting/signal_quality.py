"""Is the momentum score worth anything? Rank IC against forward returns, buy-signal hit rate, and
forward return by score quintile -- all on date x symbol arrays, vectorised over symbols and dates.

The forward return for date t uses closes after t. That is the point of an evaluation, and it only
ever feeds this report: no decision of the signal or trading stage reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

QUANTILES = 5
MIN_SYMBOLS = 5  # fewer symbols with a score and a forward return on a date: no IC that date


@dataclass(frozen=True)
class SignalPanel:
    """close, score and trend signal on the full date x symbol grid (NaN where a symbol has no row)."""

    dates: pd.DatetimeIndex
    symbols: pd.Index
    close: np.ndarray
    score: np.ndarray
    trend: np.ndarray


def signal_panel(signals: pd.DataFrame, score: str = "momentum_score") -> SignalPanel:
    """Long signals_output rows ((date, symbol) unique) -> wide arrays in one scatter each."""
    rows, dates = pd.factorize(signals["date"], sort=True)
    cols, symbols = pd.factorize(signals["symbol"], sort=True)
    dates, symbols = pd.DatetimeIndex(dates, name="date"), pd.Index(symbols, name="symbol")
    grids = []
    for column in ("close", score, "trend_signal"):
        grid = np.full((len(dates), len(symbols)), np.nan)
        grid[rows, cols] = signals[column].to_numpy(dtype=float, na_value=np.nan)
        grids.append(grid)
    return SignalPanel(dates, symbols, *grids)


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """close[t + h] / close[t] - 1 per symbol, h rows (sessions) ahead; NaN when either end has no
    close (suspended, not yet listed, or past the last date)."""
    out = np.full(close.shape, np.nan)
    if horizon < len(close):
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def row_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..k within each row over its k non-NaN values, ties sharing their average rank
    (scipy.stats.rankdata(method='average') per row); NaN stays NaN."""
    n_rows, n_cols = values.shape
    order = np.argsort(_sort_keys(values), axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    position = np.tile(np.arange(1, n_cols + 1, dtype=float), (n_rows, 1))
    _average_ties(position, ordered)
    position[np.isnan(ordered)] = np.nan
    ranks = np.empty(n_rows * n_cols)
    ranks[(order + np.arange(n_rows)[:, None] * n_cols).ravel()] = position.ravel()  # scatter back by flat index
    return ranks.reshape(n_rows, n_cols)


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """`values` with NaN as +inf: the same order with NaN last, but numpy's vectorised (SIMD) argsort
    only runs on NaN-free rows, about twice as fast. Kept as is when a real +inf would tie with them."""
    missing = np.isnan(values)
    if not missing.any() or np.isposinf(values).any():
        return values
    return np.where(missing, np.inf, values)


def _average_ties(position: np.ndarray, ordered: np.ndarray) -> None:
    """In place: every run of equal values in a sorted row gets the mean of its positions (the
    'average' rule). Touches only the tied entries, a few thousand of a million in real data."""
    same = np.zeros(ordered.shape, dtype=bool)  # same[r, j]: ordered[r, j] == ordered[r, j + 1]; last column False
    np.equal(ordered[:, 1:], ordered[:, :-1], out=same[:, :-1])  # NaN never equals NaN
    pairs = np.flatnonzero(same)
    if not len(pairs):
        return
    flat, same = position.reshape(-1), same.reshape(-1)
    members = np.union1d(pairs, pairs + 1)  # flat indices of every tied entry, in order
    # a run starts at an entry not equal to the one before it (for entry 0, index -1 is the last entry: False)
    run = np.cumsum(~same[members - 1]) - 1
    flat[members] = (np.bincount(run, weights=flat[members]) / np.bincount(run))[run]


def paired_ranks(score: np.ndarray, fwd: np.ndarray, min_symbols: int = MIN_SYMBOLS) -> tuple[np.ndarray, np.ndarray]:
    """Row ranks of score and of forward return over the symbols that have both, on dates with at
    least `min_symbols` such symbols (NaN elsewhere): the common input of rank IC and quantiles."""
    both = ~np.isnan(score) & ~np.isnan(fwd)
    both[both.sum(axis=1) < min_symbols] = False
    return row_ranks(np.where(both, score, np.nan)), row_ranks(np.where(both, fwd, np.nan))


def rank_ic(score_ranks: np.ndarray, fwd_ranks: np.ndarray) -> np.ndarray:
    """Per date: Spearman rank correlation between score and forward return = the Pearson correlation
    of their (tie-averaged) ranks over the symbols that have both (see `paired_ranks`); NaN on dates
    without enough symbols or without variation."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rs, rf = _demeaned(score_ranks), _demeaned(fwd_ranks)
        return (rs * rf).sum(axis=1) / np.sqrt((rs * rs).sum(axis=1) * (rf * rf).sum(axis=1))


def _demeaned(x: np.ndarray) -> np.ndarray:
    """x minus its row mean over the non-NaN values, NaN entries as 0: plain row sums of it and of
    its products then equal np.nansum's (same values, same order) without nansum's copies."""
    missing = np.isnan(x)
    filled = np.where(missing, 0.0, x)
    count = x.shape[1] - missing.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, filled.sum(axis=1, keepdims=True) / count, np.nan)
    filled -= mean
    filled[missing] = 0.0
    return filled


def newey_west_t(x: np.ndarray, lags: int) -> float:
    """mean(x) / sqrt(S / n) with S = g0 + 2 sum_{l=1..L} (1 - l/(L+1)) g_l, g_l the lag-l autocovariance
    (Bartlett kernel): a t-statistic that stays honest when forward windows overlap (L = horizon - 1)."""
    n = len(x)
    if n < 2:
        return math.nan
    d = x - x.mean()
    s = float(d @ d) / n
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - lag / (lags + 1)) * float(d[lag:] @ d[:-lag]) / n
    return float(x.mean() / math.sqrt(s / n)) if s > 0 else math.nan


def ic_statistics(ic: np.ndarray, horizon: int) -> dict[str, float | int]:
    """Mean, std, naive t = mean / (std / sqrt(n)), Newey-West t, and share of dates with IC > 0."""
    x = ic[~np.isnan(ic)]
    n = len(x)
    if n < 2:
        return {"ic_days": n, "ic_mean": float(x.mean()) if n else math.nan, "ic_std": math.nan, "ic_t_stat": math.nan,
                "ic_t_stat_nw": math.nan, "ic_positive_share": float((x > 0).mean()) if n else math.nan}
    sd = float(x.std(ddof=1))
    return {"ic_days": n, "ic_mean": float(x.mean()), "ic_std": sd,
            "ic_t_stat": float(x.mean() / sd * math.sqrt(n)) if sd > 0 else math.nan,
            "ic_t_stat_nw": newey_west_t(x, horizon - 1), "ic_positive_share": float((x > 0).mean())}


def quantile_returns(score_ranks: np.ndarray, fwd: np.ndarray, quantiles: int = QUANTILES) -> np.ndarray:
    """Mean forward return per score quantile (1 = lowest scores), averaged over dates with equal weight.

    Each date, the k ranked symbols (see `paired_ranks`) get quantile ceil(rank / k x q)."""
    ranked = ~np.isnan(score_ranks)
    k = ranked.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # on the whole grid, then the ranked entries (row-major)
        q = np.clip(np.ceil(score_ranks / k * quantiles), 1, quantiles)[ranked].astype(int)
    bucket = np.repeat(np.arange(len(k)), k.ravel()) * quantiles + q - 1  # date of each ranked entry, row-major
    size = len(score_ranks) * quantiles
    sums = np.bincount(bucket, weights=fwd[ranked], minlength=size).reshape(-1, quantiles)
    counts = np.bincount(bucket, minlength=size).reshape(-1, quantiles)
    with np.errstate(invalid="ignore", divide="ignore"):
        daily = sums / counts
    return _row_mean(daily.T).ravel()


def _row_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each row's non-NaN values as a column (NaN for an empty row), without warnings."""
    count = (~np.isnan(x)).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.nansum(x, axis=1, keepdims=True) / count, np.nan)


def new_buy_signals(trend: np.ndarray) -> np.ndarray:
    """True where the trend signal is 1 and the symbol's previous row (skipping days without a row)
    was not 1: the day a buy signal starts."""
    previous = pd.DataFrame(trend).ffill().shift(1).to_numpy()
    return (trend == 1) & (previous != 1)


def buy_signal_outcomes(trend: np.ndarray, fwd: np.ndarray) -> dict[str, float | int]:
    """Over new buy signals with a known forward return: count, hit rate (fwd > 0), excess hit rate
    (fwd > the same date's mean forward return over all symbols), mean and mean excess return."""
    return _buy_outcomes(new_buy_signals(trend), fwd)


def _buy_outcomes(starts: np.ndarray, fwd: np.ndarray) -> dict[str, float | int]:
    """buy_signal_outcomes from the new-buy mask, which does not depend on the horizon (made once)."""
    universe = _row_mean(fwd)
    events = starts & ~np.isnan(fwd)
    outcome, excess = fwd[events], (fwd - universe)[events]
    n = int(events.sum())
    if n == 0:
        return {"buy_signals": 0, "buy_hit_rate": math.nan, "buy_excess_hit_rate": math.nan, "buy_mean_return": math.nan,
                "buy_mean_excess_return": math.nan}
    return {"buy_signals": n, "buy_hit_rate": float((outcome > 0).mean()), "buy_excess_hit_rate": float((excess > 0).mean()),
            "buy_mean_return": float(outcome.mean()), "buy_mean_excess_return": float(excess.mean())}


def signal_quality(signals: pd.DataFrame, horizons: list[int] | tuple[int, ...] = (5, 20),
                   score: str = "momentum_score") -> tuple[dict, dict[int, pd.Series]]:
    """All signal-quality figures from signals_output (close, score and trend signal per date x symbol),
    plus the daily rank-IC series per horizon (for the chart).

    Horizons run one after the other: on two threads side by side (500 symbols x 10 years) they took
    no less wall time (0.33-0.51 s vs 0.30-0.33 s), 10-60% more CPU (their page faults on fresh
    (date x symbol) arrays contend in the kernel) and 80 MiB more peak memory."""
    panel = signal_panel(signals, score)
    starts = new_buy_signals(panel.trend)
    results = [_horizon_quality(panel, starts, int(h)) for h in horizons]
    summary = {"score": score, "symbols": len(panel.symbols), "dates": len(panel.dates),
               "horizons": [figures for figures, _ in results]}
    return summary, {figures["horizon_days"]: ic for figures, ic in results}


def _horizon_quality(panel: SignalPanel, starts: np.ndarray, h: int) -> tuple[dict, pd.Series]:
    """One horizon's figures (IC statistics, quintile means, buy outcomes) and its daily IC series."""
    fwd = forward_returns(panel.close, h)
    score_ranks, fwd_ranks = paired_ranks(panel.score, fwd)
    ic = rank_ic(score_ranks, fwd_ranks)
    quintiles = quantile_returns(score_ranks, fwd)
    figures = {"horizon_days": h, **ic_statistics(ic, h), "quintile_returns": [float(v) for v in quintiles],
               "top_minus_bottom": float(quintiles[-1] - quintiles[0]), **_buy_outcomes(starts, fwd)}
    return figures, pd.Series(ic, index=panel.dates, name=f"ic_{h}d")
