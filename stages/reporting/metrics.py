"""Performance metrics, each defined once with its formula. Conventions follow empyrical
(sample std with ddof=1, per-period risk-free rate = annual / periods_per_year) so results can be
checked against it; `tests/test_reporting_metrics.py` does so to 1e-9."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NAN = float("nan")


def total_return(equity: pd.Series, initial: float) -> float:
    """E_end / E_0 - 1, with E_0 the initial capital."""
    return float(equity.iloc[-1] / initial - 1.0) if len(equity) else NAN


def cagr(returns: pd.Series, ppy: int) -> float:
    """(prod(1 + r))^(ppy / n) - 1: the constant annual rate with the same end value."""
    n = len(returns)
    if n == 0:
        return NAN
    growth = float(np.prod(1.0 + returns.to_numpy()))
    return growth ** (ppy / n) - 1.0 if growth > 0 else -1.0


def annual_volatility(returns: pd.Series, ppy: int) -> float:
    """std(r, ddof=1) x sqrt(ppy)."""
    return float(returns.std(ddof=1) * math.sqrt(ppy)) if len(returns) > 1 else NAN


def sharpe_ratio(returns: pd.Series, rf_per_period: float, ppy: int) -> float:
    """mean(r - rf) / std(r - rf, ddof=1) x sqrt(ppy)."""
    excess = returns - rf_per_period
    sd = excess.std(ddof=1) if len(excess) > 1 else NAN
    return float(excess.mean() / sd * math.sqrt(ppy)) if sd and sd > 0 else NAN


def sortino_ratio(returns: pd.Series, rf_per_period: float, ppy: int) -> float:
    """mean(r - rf) x ppy / (sqrt(mean(min(r - rf, 0)^2)) x sqrt(ppy))."""
    excess = (returns - rf_per_period).to_numpy()
    if len(excess) < 2:
        return NAN
    downside = math.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)) * math.sqrt(ppy)
    return float(excess.mean() * ppy / downside) if downside > 0 else NAN


@dataclass
class Drawdown:
    depth: float
    start: pd.Timestamp | None     # last peak before the trough
    trough: pd.Timestamp | None
    recovery: pd.Timestamp | None  # first day back at the peak; None if not recovered
    days: int                      # trading days from peak to recovery (or to the end)


def drawdown_series(equity: pd.Series, initial: float) -> pd.Series:
    """E_t / max(E_0, ..., E_t) - 1, counting the initial capital as the first peak."""
    peak = np.maximum.accumulate(np.concatenate([[initial], equity.to_numpy()]))[1:]
    return pd.Series(equity.to_numpy() / peak - 1.0, index=equity.index)


def top_drawdowns(equity: pd.Series, initial: float, n: int = 5) -> list[Drawdown]:
    """The n deepest non-overlapping drawdown episodes (peak -> trough -> recovery)."""
    dd = drawdown_series(equity, initial)
    values = dd.to_numpy()
    dates = equity.index
    episodes: list[Drawdown] = []
    in_dd = values < 0
    i = 0
    while i < len(values):
        if not in_dd[i]:
            i += 1
            continue
        j = i
        while j < len(values) and in_dd[j]:
            j += 1
        trough = i + int(np.argmin(values[i:j]))
        start = dates[i - 1] if i > 0 else None
        recovery = dates[j] if j < len(values) else None
        episodes.append(Drawdown(float(values[trough]), start, dates[trough], recovery, j - i + 1 if j < len(values) else j - i))
        i = j
    return sorted(episodes, key=lambda e: e.depth)[:n]


def max_drawdown(equity: pd.Series, initial: float) -> float:
    """min_t (E_t / running peak - 1)."""
    return float(drawdown_series(equity, initial).min()) if len(equity) else NAN


def calmar_ratio(cagr_value: float, max_dd: float) -> float:
    """CAGR / |max drawdown|."""
    return cagr_value / abs(max_dd) if max_dd < 0 else NAN


def period_returns(returns: pd.Series, freq: str) -> pd.Series:
    """Compounded returns per calendar period ('ME' month, 'YE' year)."""
    return (1.0 + returns).resample(freq).prod() - 1.0


def beta_alpha(returns: pd.Series, bench: pd.Series, rf_per_period: float, ppy: int) -> tuple[float, float]:
    """beta = cov(r - rf, b - rf) / var(b - rf) (ddof=1);
    alpha = (1 + mean((r - rf) - beta (b - rf)))^ppy - 1 (annualised, as empyrical)."""
    r, b = returns - rf_per_period, bench - rf_per_period
    var = b.var(ddof=1)
    if not var > 0:
        return NAN, NAN
    beta = float(np.cov(r, b, ddof=1)[0, 1] / var)
    alpha = float((1.0 + (r - beta * b).mean()) ** ppy - 1.0)
    return beta, alpha


def tracking_error(returns: pd.Series, bench: pd.Series, ppy: int) -> float:
    """std(r - b, ddof=1) x sqrt(ppy)."""
    return float((returns - bench).std(ddof=1) * math.sqrt(ppy))


def information_ratio(returns: pd.Series, bench: pd.Series, ppy: int) -> float:
    """mean(r - b) / std(r - b, ddof=1) x sqrt(ppy)."""
    active = returns - bench
    sd = active.std(ddof=1)
    return float(active.mean() / sd * math.sqrt(ppy)) if sd > 0 else NAN


# --------------------------------------------------------------------------- trades
def closed_trades(trade_log: pd.DataFrame) -> pd.DataFrame:
    """Every sell fill is a closed trade, valued against the average cost (commissions included) of the
    shares it closes: pnl = qty x sell price - sell commission - qty x average cost.
    Holding days: calendar days from the buy that opened the position to the sell."""
    rows = []
    book: dict[str, list[float]] = {}  # symbol -> [shares, cost, opened (ns)]
    for rec in trade_log.itertuples(index=False):  # one pass over fills, not over the panel
        held = book.setdefault(rec.symbol, [0.0, 0.0, 0])
        if rec.side == "BUY":
            if held[0] == 0:
                held[2] = rec.date.value
            held[0] += rec.quantity
            held[1] += rec.quantity * rec.price + rec.commission
            continue
        if held[0] <= 0:
            continue
        qty = min(rec.quantity, held[0])
        avg = held[1] / held[0]
        pnl = qty * rec.price - rec.commission - qty * avg
        rows.append((rec.date, rec.symbol, qty, pnl, pnl / (qty * avg), (rec.date.value - held[2]) / 86_400e9, rec.reason))
        held[0] -= qty
        held[1] -= qty * avg
    return pd.DataFrame(rows, columns=["date", "symbol", "quantity", "pnl", "return", "holding_days", "reason"])


def win_rate(trades: pd.DataFrame) -> float:
    """Share of closed trades with pnl > 0."""
    return float((trades["pnl"] > 0).mean()) if len(trades) else NAN


def profit_factor(trades: pd.DataFrame) -> float:
    """Sum of winning pnl / |sum of losing pnl|."""
    losses = -trades.loc[trades["pnl"] < 0, "pnl"].sum()
    return float(trades.loc[trades["pnl"] > 0, "pnl"].sum() / losses) if losses > 0 else NAN


def compute_metrics(
    equity_curve: pd.DataFrame,
    trade_log: pd.DataFrame,
    *,
    initial_cash: float,
    risk_free_rate: float = 0.0,
    periods_per_year: int = 252,
    benchmark_returns: pd.Series | None = None,
) -> dict[str, float | str | None]:
    """Every headline metric of the tear sheet, as a flat dict (NaN where undefined)."""
    ppy = periods_per_year
    curve = equity_curve.set_index("date")
    equity = curve["equity"]
    r = curve["daily_return"]
    rf = risk_free_rate / ppy
    m: dict[str, float | str | None] = {
        "start_date": str(equity.index[0].date()) if len(equity) else None,
        "end_date": str(equity.index[-1].date()) if len(equity) else None,
        "trading_days": int(len(equity)),
        "final_equity": float(equity.iloc[-1]) if len(equity) else NAN,
        "total_return": total_return(equity, initial_cash),
        "cagr": cagr(r, ppy),
        "annual_volatility": annual_volatility(r, ppy),
        "sharpe": sharpe_ratio(r, rf, ppy),
        "sortino": sortino_ratio(r, rf, ppy),
        "max_drawdown": max_drawdown(equity, initial_cash),
    }
    worst = top_drawdowns(equity, initial_cash, 1)
    if worst:
        w = worst[0]
        m.update(max_drawdown_start=_d(w.start), max_drawdown_trough=_d(w.trough), max_drawdown_recovery=_d(w.recovery),
                 max_drawdown_days=int(w.days))
    else:
        m.update(max_drawdown_start=None, max_drawdown_trough=None, max_drawdown_recovery=None, max_drawdown_days=0)
    m["calmar"] = calmar_ratio(m["cagr"], m["max_drawdown"])
    months = period_returns(r, "ME") if len(r) else r
    years = period_returns(r, "YE") if len(r) else r
    m.update(
        best_day=_max(r), worst_day=_min(r), best_month=_max(months), worst_month=_min(months),
        best_year=_max(years), worst_year=_min(years),
    )
    trades = closed_trades(trade_log)
    m.update(
        closed_trades=int(len(trades)), win_rate=win_rate(trades), profit_factor=profit_factor(trades),
        avg_holding_days=float(trades["holding_days"].mean()) if len(trades) else NAN,
        number_of_fills=int(len(trade_log)),
        total_costs=float((trade_log["commission"] + trade_log["slippage"]).sum()) if len(trade_log) else 0.0,
        annual_turnover=float(curve["turnover"].mean() * ppy / 2.0) if len(curve) else NAN,
        avg_exposure=float(curve["exposure"].mean()) if len(curve) else NAN,
        current_exposure=float(curve["exposure"].iloc[-1]) if len(curve) else NAN,
        avg_positions=float(curve["n_positions"].mean()) if len(curve) else NAN,
        current_positions=int(curve["n_positions"].iloc[-1]) if len(curve) else 0,
    )
    if benchmark_returns is not None:
        b = benchmark_returns.reindex(r.index).fillna(0.0)
        beta, alpha = beta_alpha(r, b, rf, ppy)
        m.update(
            benchmark_total_return=float(np.prod(1 + b.to_numpy()) - 1), beta=beta, alpha=alpha,
            correlation=float(r.corr(b)), tracking_error=tracking_error(r, b, ppy),
            information_ratio=information_ratio(r, b, ppy),
        )
    return m


def _d(ts) -> str | None:
    return None if ts is None else str(pd.Timestamp(ts).date())


def _max(s: pd.Series) -> float:
    return float(s.max()) if len(s) else NAN


def _min(s: pd.Series) -> float:
    return float(s.min()) if len(s) else NAN
