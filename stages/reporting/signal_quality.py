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
    order = np.argsort(values, axis=1)  # NaN sorts last; ties get their average rank, so order among them is moot
    ordered = np.take_along_axis(values, order, axis=1)
    position = np.broadcast_to(np.arange(1, n_cols + 1, dtype=float), (n_rows, n_cols))
    tied = ordered[:, 1:] == ordered[:, :-1]  # NaN never equals NaN
    if tied.any():  # average the positions within each run of equal values
        starts = np.ones((n_rows, n_cols), dtype=bool)
        starts[:, 1:] = ~tied
        group = np.cumsum(starts.ravel()) - 1
        position = (np.bincount(group, weights=position.ravel()) / np.bincount(group))[group].reshape(n_rows, n_cols)
    ranks = np.empty((n_rows, n_cols))
    np.put_along_axis(ranks, order, np.where(np.isnan(ordered), np.nan, position), axis=1)
    return ranks


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
        rs = score_ranks - _row_mean(score_ranks)
        rf = fwd_ranks - _row_mean(fwd_ranks)
        return np.nansum(rs * rf, axis=1) / np.sqrt(np.nansum(rs**2, axis=1) * np.nansum(rf**2, axis=1))


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
    day, col = np.nonzero(ranked)
    q = np.clip(np.ceil(score_ranks[day, col] / k[day, 0] * quantiles), 1, quantiles).astype(int)
    bucket = day * quantiles + q - 1
    size = len(score_ranks) * quantiles
    sums = np.bincount(bucket, weights=fwd[day, col], minlength=size).reshape(-1, quantiles)
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
    universe = _row_mean(fwd)
    events = new_buy_signals(trend) & ~np.isnan(fwd)
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
    plus the daily rank-IC series per horizon (for the chart)."""
    panel = signal_panel(signals, score)
    horizons_out, ic_series = [], {}
    for h in horizons:
        fwd = forward_returns(panel.close, h)
        score_ranks, fwd_ranks = paired_ranks(panel.score, fwd)
        ic = rank_ic(score_ranks, fwd_ranks)
        quintiles = quantile_returns(score_ranks, fwd)
        horizons_out.append({"horizon_days": int(h), **ic_statistics(ic, h),
                             "quintile_returns": [float(v) for v in quintiles],
                             "top_minus_bottom": float(quintiles[-1] - quintiles[0]),
                             **buy_signal_outcomes(panel.trend, fwd)})
        ic_series[int(h)] = pd.Series(ic, index=panel.dates, name=f"ic_{h}d")
    summary = {"score": score, "symbols": len(panel.symbols), "dates": len(panel.dates), "horizons": horizons_out}
    return summary, ic_series
