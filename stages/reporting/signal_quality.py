"""Is the momentum score worth anything? Rank IC against forward returns, buy-signal hit rate,
and forward return by score quintile. Forward returns look after t by design: this evaluates
the signal, it never feeds a decision."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

HORIZONS = (5, 20)


def forward_returns(close: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """close_{t+h} / close_t - 1 on the date x symbol grid (NaN when either end has no price)."""
    return close.shift(-horizon) / close - 1.0


def rank_ic(score: pd.DataFrame, fwd: pd.DataFrame, min_symbols: int = 5) -> pd.Series:
    """Per date: Spearman correlation between score and forward return over symbols with both."""
    both = score.notna() & fwd.notna()
    s = score.where(both).rank(axis=1)
    f = fwd.where(both).rank(axis=1)
    s = s.sub(s.mean(axis=1), axis=0)
    f = f.sub(f.mean(axis=1), axis=0)
    denom = np.sqrt((s ** 2).sum(axis=1) * (f ** 2).sum(axis=1))
    ic = (s * f).sum(axis=1) / denom.replace(0, np.nan)
    return ic[both.sum(axis=1) >= min_symbols].dropna()


def ic_summary(ic: pd.Series) -> dict[str, float]:
    """Mean IC and its t-statistic mean / (std / sqrt(n)) (overlapping horizons inflate t; read with care)."""
    n = len(ic)
    if n < 2:
        return {"mean": math.nan, "t_stat": math.nan, "days": n}
    sd = ic.std(ddof=1)
    return {"mean": float(ic.mean()), "t_stat": float(ic.mean() / sd * math.sqrt(n)) if sd > 0 else math.nan, "days": n}


def quintile_returns(score: pd.DataFrame, fwd: pd.DataFrame) -> pd.Series:
    """Average forward return per score quintile (1 = lowest scores, 5 = highest), pooled over dates."""
    both = score.notna() & fwd.notna()
    pct = score.where(both).rank(axis=1, pct=True)
    quintile = np.ceil(pct * 5).clip(1, 5)
    frame = pd.DataFrame({"q": quintile.stack(), "r": fwd.where(both).stack()}).dropna()
    return frame.groupby("q")["r"].mean().rename(index=lambda q: int(q))


def buy_hit_rate(signal: pd.DataFrame, fwd: pd.DataFrame) -> tuple[float, int]:
    """Share of new buy signals (signal turns 1) followed by a positive forward return; and their count."""
    new_buy = (signal == 1) & (signal.shift(1) != 1)
    outcomes = fwd.where(new_buy).stack().dropna()
    return (float((outcomes > 0).mean()) if len(outcomes) else math.nan), int(len(outcomes))


def signal_quality(signals: pd.DataFrame) -> dict:
    """All signal-quality figures from signals_output (score, trend signal and close per date x symbol)."""
    close = signals.pivot(index="date", columns="symbol", values="close")
    score = signals.pivot(index="date", columns="symbol", values="momentum_score")
    trend = signals.pivot(index="date", columns="symbol", values="trend_signal")
    out: dict = {}
    for h in HORIZONS:
        fwd = forward_returns(close, h)
        out[f"ic_{h}d"] = ic_summary(rank_ic(score, fwd))
        out[f"quintiles_{h}d"] = {int(k): float(v) for k, v in quintile_returns(score, fwd).items()}
        rate, count = buy_hit_rate(trend, fwd)
        out[f"buy_hit_rate_{h}d"] = rate
        out[f"buy_signals_{h}d"] = count
    return out
