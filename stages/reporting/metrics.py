"""Performance metrics, each defined once, with its formula in the docstring.

Conventions (those of empyrical, so `tests/test_reporting_metrics.py` can pin equality to 1e-9):
- `r` is the daily return series of the equity curve, one value per close; the first close's
  return is measured against the starting capital (0 for a backtest that starts in cash);
- `ppy` = periods per year (252); `rf` = the risk-free rate per session, (1 + annual)^(1/ppy) - 1;
- standard deviations are sample ones (ddof = 1);
- drawdowns count the starting capital as the first peak.
Return-based metrics are computed on every session; none of them use prices after the last close.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from stages.common.errors import DataError

NAN = float("nan")
UNDER_WATER = 1e-12  # a drawdown smaller than this is rounding, not an episode


# --------------------------------------------------------------------------- conventions
def per_period_rate(annual_rate: float, ppy: int) -> float:
    """(1 + annual)^(1/ppy) - 1: the per-session rate that compounds to the annual one."""
    return (1.0 + annual_rate) ** (1.0 / ppy) - 1.0


def strategy_returns(equity_curve: pd.DataFrame, start_equity: float | None = None) -> pd.Series:
    """Daily returns by close date: r_t = E_t / E_{t-1} - 1, and r_0 = E_0 / start_equity - 1
    (0 when start_equity is not given: the curve's `daily_return` of the first close).

    The curve's own `daily_return` column must agree with its equity (to 1e-9): a mismatch means the
    trading artifacts are inconsistent, and is refused rather than reported on."""
    equity = equity_curve["equity"].to_numpy(dtype=float)
    stated = equity_curve["daily_return"].to_numpy(dtype=float)
    dates = pd.DatetimeIndex(equity_curve["date"], name="date")
    r = np.empty(len(equity))
    if len(equity):
        r[0] = equity[0] / start_equity - 1.0 if start_equity else 0.0
        r[1:] = equity[1:] / equity[:-1] - 1.0
        bad = np.flatnonzero(np.abs(r[1:] - stated[1:]) > 1e-9 * np.maximum(1.0, np.abs(r[1:])))
        if len(bad):
            i = int(bad[0]) + 1
            raise DataError(f"equity_curve: daily_return on {dates[i].date()} is {stated[i]!r} but equity moved "
                            f"{equity[i - 1]!r} -> {equity[i]!r} ({r[i]!r}); {len(bad)} such row(s) -- rerun the trading stage")
    return pd.Series(r, index=dates, name="return")


# --------------------------------------------------------------------------- returns
def total_return(r: pd.Series) -> float:
    """prod(1 + r) - 1 = E_end / E_start - 1."""
    return float(np.prod(1.0 + r.to_numpy())) - 1.0 if len(r) else NAN


def returns_before_costs(r: pd.Series, equity_curve: pd.DataFrame, start_equity: float | None = None) -> pd.Series:
    """The daily returns with each session's costs (fees + slippage) added back:
    (E_t + costs_t) / E_{t-1} - 1 -- what the same trades would have returned without costs."""
    equity = equity_curve["equity"].to_numpy(dtype=float)
    previous = np.concatenate([[start_equity or (equity[0] if len(equity) else NAN)], equity[:-1]])
    return pd.Series(r.to_numpy() + equity_curve["costs"].to_numpy(dtype=float) / previous, index=r.index)


def cagr(r: pd.Series, ppy: int) -> float:
    """prod(1 + r)^(ppy / n) - 1: the constant annual rate with the same end value over n sessions."""
    return float(np.prod(1.0 + r.to_numpy()) ** (ppy / len(r))) - 1.0 if len(r) else NAN


def annual_volatility(r: pd.Series, ppy: int) -> float:
    """std(r) x sqrt(ppy)."""
    return float(r.std(ddof=1)) * math.sqrt(ppy) if len(r) > 1 else NAN


def sharpe_ratio(r: pd.Series, rf: float, ppy: int) -> float:
    """mean(r - rf) / std(r - rf) x sqrt(ppy); undefined (NaN) when the excess returns do not vary."""
    if len(r) < 2:
        return NAN
    excess = r.to_numpy() - rf
    sd = excess.std(ddof=1)
    return float(excess.mean() / sd * math.sqrt(ppy)) if sd > 0 else NAN


def sortino_ratio(r: pd.Series, rf: float, ppy: int) -> float:
    """mean(r - rf) x sqrt(ppy) / sqrt(mean(min(r - rf, 0)^2)): only shortfalls below rf count as risk,
    and they are averaged over every session (target downside deviation)."""
    if len(r) < 2:
        return NAN
    excess = r.to_numpy() - rf
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    return float(excess.mean() * math.sqrt(ppy) / downside) if downside > 0 else NAN


def period_returns(r: pd.Series, freq: str) -> pd.Series:
    """prod(1 + r) - 1 per calendar period (freq 'ME' = month, 'YE' = year), labelled by period end."""
    return (1.0 + r).resample(freq).prod() - 1.0


# --------------------------------------------------------------------------- distribution and tails
def skewness(r: pd.Series) -> float:
    """Sample skewness, bias-adjusted (Fisher-Pearson G1, as pandas and quantstats): < 0 = a longer left tail."""
    return float(r.skew()) if len(r) > 2 else NAN


def excess_kurtosis(r: pd.Series) -> float:
    """Sample excess kurtosis, bias-adjusted (G2, as pandas and quantstats): 0 for a normal distribution,
    > 0 = fatter tails."""
    return float(r.kurt()) if len(r) > 3 else NAN


def value_at_risk(r: pd.Series, cutoff: float = 0.05) -> float:
    """Historical daily VaR: the `cutoff` percentile of daily returns (linear interpolation, as numpy and
    empyrical); at 95% confidence, a day worse than this comes one session in twenty."""
    return float(np.percentile(r.to_numpy(), 100 * cutoff)) if len(r) else NAN


def conditional_value_at_risk(r: pd.Series, cutoff: float = 0.05) -> float:
    """Historical daily CVaR (expected shortfall): the mean of the worst floor((n - 1) x cutoff) + 1 daily
    returns (empyrical's definition): the average day in the worst `cutoff` of days."""
    x = r.to_numpy()
    if not len(x):
        return NAN
    k = int((len(x) - 1) * cutoff)
    return float(np.mean(np.partition(x, k)[: k + 1]))


def tail_ratio(r: pd.Series) -> float:
    """|95th percentile| / |5th percentile| of daily returns: > 1 = the good days are larger than the bad."""
    if not len(r):
        return NAN
    low = abs(float(np.percentile(r.to_numpy(), 5)))
    return abs(float(np.percentile(r.to_numpy(), 95))) / low if low > 0 else NAN


def omega_ratio(r: pd.Series, rf: float) -> float:
    """sum(max(r - rf, 0)) / sum(max(rf - r, 0)): gains above the risk-free rate per unit of shortfall below it
    (threshold 0 above rf, as empyrical's default); undefined without a shortfall."""
    excess = r.to_numpy() - rf
    losses = -float(excess[excess < 0].sum())
    return float(excess[excess > 0].sum()) / losses if losses > 0 else NAN


def win_rate_of_periods(r: pd.Series, freq: str | None = None) -> float:
    """Share of up periods among periods that moved (quantstats' win rate): sessions (freq None) or calendar
    periods ('ME' = months) compounded; flat periods (all cash) are left out."""
    x = (period_returns(r, freq) if freq else r).to_numpy()
    moved = x[x != 0]
    return float((moved > 0).mean()) if len(moved) else NAN


def trailing_return(r: pd.Series, period: str) -> float:
    """Compounded return over the sessions after a cut-off before the last close: 'MTD'/'YTD' = since the last
    close of the previous month/year, '1Y', '3Y', '5Y' = since the same calendar day 1/3/5 years earlier,
    annualised for 3Y and 5Y ((1 + R)^(1/years) - 1). MTD/YTD cover the sessions there are; a 1/3/5-year return
    is NaN when the history starts after its cut-off."""
    if not len(r):
        return NAN
    end = r.index[-1]
    if period == "MTD":
        cut, years = pd.Timestamp(end.year, end.month, 1), None
    elif period == "YTD":
        cut, years = pd.Timestamp(end.year, 1, 1), None
    else:
        years = int(period.removesuffix("Y"))
        cut = end - pd.DateOffset(years=years) + pd.Timedelta(days=1)
        if r.index[0] >= cut:
            return NAN  # the history starts inside the window
    grown = float(np.prod(1.0 + r[r.index >= cut].to_numpy())) - 1.0
    return (1.0 + grown) ** (1.0 / years) - 1.0 if years and years > 1 else grown


TRAILING_PERIODS = ["MTD", "YTD", "1Y", "3Y", "5Y"]


def _sharpe_moments(r: pd.Series, rf: float) -> tuple[float, float, float] | None:
    """(per-session Sharpe ratio, skewness g3, kurtosis g4 = 3 + excess) of r - rf: the inputs of PSR and
    the minimum track record; None with fewer than 4 sessions or no variation."""
    if len(r) < 4:
        return None
    excess = r - rf
    sd = float(excess.std(ddof=1))
    if not sd > 0:
        return None
    return float(excess.mean()) / sd, float(excess.skew()), float(excess.kurt()) + 3.0


def probabilistic_sharpe_ratio(r: pd.Series, rf: float = 0.0, benchmark_sharpe: float = 0.0) -> float:
    """PSR (Bailey & Lopez de Prado 2012): the probability that the true per-session Sharpe ratio exceeds
    `benchmark_sharpe` (per session, not annualised), given n sessions, skewness g3 and kurtosis g4:
    Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)), SR = mean / std of r - rf; g3, g4 as
    `skewness` and 3 + `excess_kurtosis` (quantstats' probabilistic_sharpe_ratio for SR* = 0)."""
    moments = _sharpe_moments(r, rf)
    if moments is None:
        return NAN
    sr, g3, g4 = moments
    var = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    if not var > 0:
        return NAN
    return _normal_cdf((sr - benchmark_sharpe) * math.sqrt(len(r) - 1) / math.sqrt(var))


def min_track_record(r: pd.Series, rf: float = 0.0, confidence: float = 0.95, benchmark_sharpe: float = 0.0) -> float:
    """Minimum track record length (Bailey & Lopez de Prado 2012), in sessions: how long a history with this
    Sharpe ratio, skew and kurtosis must be for PSR(SR*) to reach `confidence`:
    1 + (1 - g3 SR + (g4 - 1)/4 SR^2) (Z_confidence / (SR - SR*))^2. NaN when SR <= SR* (never enough)."""
    moments = _sharpe_moments(r, rf)
    if moments is None or moments[0] <= benchmark_sharpe:
        return NAN
    sr, g3, g4 = moments
    z = NormalDist().inv_cdf(confidence)
    return 1.0 + (1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr) * (z / (sr - benchmark_sharpe)) ** 2


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# --------------------------------------------------------------------------- rolling
def rolling_sortino(r: pd.Series, window: int, rf: float, ppy: int) -> pd.Series:
    """Sortino over each trailing `window` sessions (the same formula as `sortino_ratio`; empyrical's
    roll_sortino_ratio); NaN for the first window - 1 sessions and where the window has no shortfall."""
    excess = r - rf
    downside = np.sqrt(np.minimum(excess, 0.0).pow(2).rolling(window).mean())
    return (excess.rolling(window).mean() * math.sqrt(ppy) / downside.where(downside > 0)).rename("rolling_sortino")


def rolling_beta(r: pd.Series, b: pd.Series, window: int) -> pd.Series:
    """cov(r, b) / var(b) over each trailing `window` sessions where the benchmark has a return (empyrical's
    roll_beta); NaN until a full window."""
    b = b.reindex(r.index)
    both = b.notna()
    rs, bs = r[both], b[both]
    slope = rs.rolling(window).cov(bs) / bs.rolling(window).var()
    return slope.reindex(r.index).rename("rolling_beta")


# --------------------------------------------------------------------------- drawdowns
def drawdown_series(r: pd.Series) -> pd.Series:
    """W_t / max(1, W_0, ..., W_t) - 1 with W_t = prod_{s<=t}(1 + r_s): the fall from the running peak,
    the starting capital (W = 1) being the first peak."""
    wealth = np.cumprod(1.0 + r.to_numpy())
    peak = np.maximum(np.maximum.accumulate(wealth), 1.0) if len(wealth) else wealth
    return pd.Series(wealth / peak - 1.0, index=r.index, name="drawdown")


def max_drawdown(r: pd.Series) -> float:
    """min_t (W_t / running peak - 1), <= 0."""
    return float(drawdown_series(r).min()) if len(r) else NAN


def drawdown_episodes(r: pd.Series) -> pd.DataFrame:
    """Every drawdown episode, deepest first: a run of closes below the running peak.

    Columns: depth (min of the drawdown in the run), peak (last close at the peak; NaT = the starting
    capital), trough, recovery (first close back at the peak; NaT = not recovered), and in sessions
    decline_days (peak -> trough), recovery_days (trough -> recovery; <NA> if not recovered) and
    total_days (peak -> recovery, or peak -> last close while still under water)."""
    dd = drawdown_series(r).to_numpy()
    dates = r.index
    below = dd < -UNDER_WATER  # back at the peak up to float noise counts as recovered
    under = np.concatenate([[False], below, [False]])
    edges = np.diff(under.astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # ends: first close not under water
    if not len(starts):
        return pd.DataFrame({"depth": pd.Series(dtype=float), "peak": pd.Series(dtype="datetime64[ns]"),
                             "trough": pd.Series(dtype="datetime64[ns]"), "recovery": pd.Series(dtype="datetime64[ns]"),
                             "decline_days": pd.Series(dtype=int), "recovery_days": pd.Series(dtype="Int64"),
                             "total_days": pd.Series(dtype=int)})
    episode = np.repeat(np.arange(len(starts)), ends - starts)
    rows = np.flatnonzero(below)  # the episodes' closes, in order
    order = np.lexsort((rows, dd[rows], episode))  # per episode: deepest first, earliest among equals
    first = np.flatnonzero(np.r_[True, episode[order][1:] != episode[order][:-1]])
    trough = rows[order][first]
    recovered = ends < len(dd)
    peak_pos = starts - 1  # -1: the starting capital
    stamps = dates.to_numpy()
    nat = np.datetime64("NaT", "ns")
    recovery_days = pd.array(np.where(recovered, ends - trough, 0), dtype="Int64")
    recovery_days[~recovered] = pd.NA
    frame = pd.DataFrame({
        "depth": dd[trough],
        "peak": np.where(peak_pos >= 0, stamps[np.maximum(peak_pos, 0)], nat),
        "trough": stamps[trough],
        "recovery": np.where(recovered, stamps[np.minimum(ends, len(dd) - 1)], nat),
        "decline_days": trough - peak_pos,
        "recovery_days": recovery_days,
        "total_days": np.where(recovered, ends, len(dd) - 1) - peak_pos,
    })
    return frame.sort_values(["depth", "trough"], kind="stable").reset_index(drop=True)


def calmar_ratio(r: pd.Series, ppy: int) -> float:
    """CAGR / |max drawdown|; undefined without a drawdown."""
    mdd = max_drawdown(r)
    return cagr(r, ppy) / abs(mdd) if mdd < 0 else NAN


# --------------------------------------------------------------------------- against a benchmark
def beta(r: pd.Series, b: pd.Series, rf: float) -> float:
    """cov(r - rf, b - rf) / var(b - rf): the strategy's sensitivity to the benchmark."""
    x, y = r.to_numpy() - rf, b.to_numpy() - rf
    if len(x) < 2 or not y.var(ddof=1) > 0:
        return NAN
    return float(np.cov(x, y, ddof=1)[0, 1] / y.var(ddof=1))


def alpha(r: pd.Series, b: pd.Series, rf: float, ppy: int) -> float:
    """(1 + mean((r - rf) - beta (b - rf)))^ppy - 1: the annualised return not explained by beta
    (Jensen's alpha, compounded as empyrical does)."""
    slope = beta(r, b, rf)
    if math.isnan(slope):
        return NAN
    return float((1.0 + np.mean((r.to_numpy() - rf) - slope * (b.to_numpy() - rf))) ** ppy) - 1.0


def correlation(r: pd.Series, b: pd.Series) -> float:
    """Pearson correlation of daily returns."""
    x, y = r.to_numpy(), b.to_numpy()
    if len(x) < 2 or not (x.std() > 0 and y.std() > 0):
        return NAN
    return float(np.corrcoef(x, y)[0, 1])


def tracking_error(r: pd.Series, b: pd.Series, ppy: int) -> float:
    """std(r - b) x sqrt(ppy): the annualised volatility of the active return."""
    return float(np.std(r.to_numpy() - b.to_numpy(), ddof=1)) * math.sqrt(ppy) if len(r) > 1 else NAN


def information_ratio(r: pd.Series, b: pd.Series, ppy: int) -> float:
    """mean(r - b) / std(r - b) x sqrt(ppy): annualised active return per unit of tracking error."""
    if len(r) < 2:
        return NAN
    active = r.to_numpy() - b.to_numpy()
    sd = active.std(ddof=1)
    return float(active.mean() / sd * math.sqrt(ppy)) if sd > 0 else NAN


# --------------------------------------------------------------------------- trades
TRADE_COLUMNS = ["symbol", "entry_date", "exit_date", "bought", "pnl", "return", "holding_days", "reason"]


def round_trips(trade_log: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Closed trades: one per position taken from flat and brought back to flat, however many fills.

    bought = sum over buys of (quantity x price + commission); pnl = sum over sells of
    (quantity x price - commission) - bought (fill prices already include slippage);
    return = pnl / bought; holding_days = sessions from the opening buy to the closing sell;
    reason = the closing sell's reason. Positions still open are not trades yet (see `open_positions`).
    Fills of a symbol whose position would go below zero (the log starts with holdings) are left out."""
    t = _ordered_fills(trade_log)
    if t.empty:
        return pd.DataFrame({c: [] for c in TRADE_COLUMNS}).astype(
            {"entry_date": "datetime64[ns]", "exit_date": "datetime64[ns]", "bought": float, "pnl": float, "return": float,
             "holding_days": int})
    buy = (t["side"] == "BUY").to_numpy()
    value = t["quantity"].to_numpy(dtype=float) * t["price"].to_numpy(dtype=float)
    commission = t["commission"].to_numpy(dtype=float)
    t["cash"] = np.where(buy, -(value + commission), value - commission)
    t["bought"] = np.where(buy, value + commission, 0.0)
    grouped = t.groupby(["symbol", "episode"], sort=False)
    trips = grouped.agg(entry_date=("date", "first"), exit_date=("date", "last"), bought=("bought", "sum"),
                        pnl=("cash", "sum"), reason=("reason", "last"), closed=("closes", "any")).reset_index()
    trips = trips[trips["closed"]]
    trips["return"] = trips["pnl"] / trips["bought"]
    trips["holding_days"] = sessions.searchsorted(trips["exit_date"]) - sessions.searchsorted(trips["entry_date"])
    return trips.sort_values(["exit_date", "symbol"], kind="stable")[TRADE_COLUMNS].reset_index(drop=True)


def open_positions(trade_log: pd.DataFrame) -> int:
    """Positions opened in the log and not yet closed at its end."""
    t = _ordered_fills(trade_log)
    if t.empty:
        return 0
    return int((t.groupby(["symbol", "episode"], sort=False)["closes"].any() == False).sum())  # noqa: E712


def _ordered_fills(trade_log: pd.DataFrame) -> pd.DataFrame:
    """The fills in execution order with the running position per symbol, `episode` (1, 2, ... per
    position taken from flat) and `closes` (the fill brought the position back to flat)."""
    t = trade_log.reset_index(drop=True).copy()
    signed = np.where(t["side"].to_numpy() == "BUY", 1, -1) * t["quantity"].to_numpy(dtype=np.int64)
    t["position"] = pd.Series(signed).groupby(t["symbol"].to_numpy()).cumsum().to_numpy()
    opened = (t["side"] == "BUY") & (t["position"] - signed == 0)
    t["episode"] = opened.astype(int).groupby(t["symbol"]).cumsum()
    t["closes"] = (t["side"] == "SELL") & (t["position"] == 0)
    negative = t.loc[t["position"] < 0, "symbol"].unique()
    return t[(t["episode"] > 0) & ~t["symbol"].isin(negative)]


def win_rate(trips: pd.DataFrame) -> float:
    """Share of closed trades with pnl > 0."""
    return float((trips["pnl"] > 0).mean()) if len(trips) else NAN


def profit_factor(trips: pd.DataFrame) -> float:
    """sum of winning pnl / |sum of losing pnl|; undefined without a losing trade."""
    losses = -float(trips.loc[trips["pnl"] < 0, "pnl"].sum())
    return float(trips.loc[trips["pnl"] > 0, "pnl"].sum()) / losses if losses > 0 else NAN


def annual_turnover(turnover: pd.Series, ppy: int) -> float:
    """mean(daily traded value / equity) x ppy / 2: one-way turnover per year (buys and sells both
    count in the daily figure, so a full switch of the book in a year is 1.0)."""
    return float(turnover.mean()) * ppy / 2.0 if len(turnover) else NAN


# --------------------------------------------------------------------------- all of them
def compute_metrics(
    equity_curve: pd.DataFrame,
    trade_log: pd.DataFrame,
    *,
    config=None,
    positions: pd.DataFrame | None = None,
    benchmark_returns: pd.Series | None = None,
    initial_cash: float | None = None,
    risk_free_rate: float | None = None,
    periods_per_year: int | None = None,
) -> dict[str, float | int | str | None]:
    """Every headline metric as a flat dict (keys = `schemas.reporting.Metrics`; NaN where undefined).

    Rates come from `config.reporting` (risk_free_rate, periods_per_year) unless given explicitly.
    initial_cash: the capital before the first close (default: the first close's equity).
    benchmark_returns: daily returns by date (NaN where the benchmark has none); the relative
    metrics use the sessions where both sides have a return."""
    rp = config.reporting if config is not None else None
    ppy = periods_per_year or (rp.periods_per_year if rp else 252)
    rf = per_period_rate(risk_free_rate if risk_free_rate is not None else (rp.risk_free_rate if rp else 0.0), ppy)
    curve = equity_curve.reset_index(drop=True)
    r = strategy_returns(curve, initial_cash)
    sessions = r.index
    n = len(r)
    m: dict[str, float | int | str | None] = {
        "start_date": _day(sessions[0]) if n else None,
        "end_date": _day(sessions[-1]) if n else None,
        "trading_days": n,
        "first_trade_date": _day(trade_log["date"].min()) if len(trade_log) else None,
        "start_equity": float(initial_cash or (curve["equity"].iloc[0] if n else NAN)),
        "final_equity": float(curve["equity"].iloc[-1]) if n else NAN,
        "total_return": total_return(r),
        "cagr": cagr(r, ppy),
        "total_return_before_costs": total_return(returns_before_costs(r, curve, initial_cash)),
        "annual_volatility": annual_volatility(r, ppy),
        "sharpe": sharpe_ratio(r, rf, ppy),
        "sortino": sortino_ratio(r, rf, ppy),
        "calmar": calmar_ratio(r, ppy),
        "max_drawdown": max_drawdown(r),
    }
    episodes = drawdown_episodes(r)
    worst = episodes.iloc[0] if len(episodes) else None
    m.update(
        max_drawdown_peak=_day(worst["peak"]) if worst is not None else None,
        max_drawdown_trough=_day(worst["trough"]) if worst is not None else None,
        max_drawdown_recovery=_day(worst["recovery"]) if worst is not None else None,
        max_drawdown_days=int(worst["total_days"]) if worst is not None else None,
        longest_drawdown_days=int(episodes["total_days"].max()) if len(episodes) else None,
    )
    months = period_returns(r, "ME") if n else r
    years = period_returns(r, "YE") if n else r
    m.update(best_day=_max(r), worst_day=_min(r), best_month=_max(months), worst_month=_min(months),
             best_year=_max(years), worst_year=_min(years))
    m.update(distribution_metrics(r, rf))

    trips = round_trips(trade_log, sessions)
    m.update(
        number_of_fills=int(len(trade_log)),
        closed_trades=int(len(trips)),
        open_trades=open_positions(trade_log),
        win_rate=win_rate(trips),
        profit_factor=profit_factor(trips),
        avg_trade_return=float(trips["return"].mean()) if len(trips) else NAN,
        avg_holding_days=float(trips["holding_days"].mean()) if len(trips) else NAN,
        total_commission=float(trade_log["commission"].sum()),
        total_slippage=float(trade_log["slippage"].sum()),
    )
    m["total_costs"] = m["total_commission"] + m["total_slippage"]
    m.update(
        annual_turnover=annual_turnover(curve["turnover"], ppy),
        avg_exposure=float(curve["exposure"].mean()) if n else NAN,
        current_exposure=float(curve["exposure"].iloc[-1]) if n else NAN,
        avg_holdings=float(curve["n_positions"].mean()) if n else NAN,
        current_holdings=int(curve["n_positions"].iloc[-1]) if n else None,
        max_position_weight=float(positions["weight"].max()) if positions is not None and len(positions) else NAN,
    )
    m.update(benchmark_metrics(r, benchmark_returns, rf, ppy))
    return m


def distribution_metrics(r: pd.Series, rf: float) -> dict[str, float]:
    """The tear sheet's tail, win-rate, trailing-return and PSR figures of daily returns `r`."""
    out = {
        "skew": skewness(r), "kurtosis": excess_kurtosis(r),
        "daily_var_95": value_at_risk(r, 0.05), "daily_cvar_95": conditional_value_at_risk(r, 0.05),
        "tail_ratio": tail_ratio(r), "omega": omega_ratio(r, rf),
        "win_rate_days": win_rate_of_periods(r), "win_rate_months": win_rate_of_periods(r, "ME") if len(r) else NAN,
        "probabilistic_sharpe": probabilistic_sharpe_ratio(r, rf),
        "min_track_record_days": min_track_record(r, rf),
    }
    out.update({f"return_{p.lower()}": trailing_return(r, p) for p in TRAILING_PERIODS})
    return out


BENCHMARK_KEYS = ["benchmark_days", "benchmark_total_return", "benchmark_cagr", "benchmark_annual_volatility",
                  "benchmark_sharpe", "benchmark_sortino", "benchmark_max_drawdown", "benchmark_calmar", "beta", "alpha", "correlation", "tracking_error",
                  "information_ratio"]


def benchmark_metrics(r: pd.Series, benchmark_returns: pd.Series | None, rf: float, ppy: int) -> dict:
    """The benchmark's own return metrics over the strategy's sessions, and the relative ones over the
    sessions where both have a return (all None/NaN without a benchmark)."""
    if benchmark_returns is None:
        return {k: (None if k == "benchmark_days" else NAN) for k in BENCHMARK_KEYS}
    b = benchmark_returns.reindex(r.index)
    both = b.notna().to_numpy()
    rs, bs = r[both], b[both]
    return {
        "benchmark_days": int(both.sum()),
        "benchmark_total_return": total_return(bs),
        "benchmark_cagr": cagr(bs, ppy),
        "benchmark_annual_volatility": annual_volatility(bs, ppy),
        "benchmark_sharpe": sharpe_ratio(bs, rf, ppy),
        "benchmark_sortino": sortino_ratio(bs, rf, ppy),
        "benchmark_max_drawdown": max_drawdown(bs),
        "benchmark_calmar": calmar_ratio(bs, ppy),
        "beta": beta(rs, bs, rf),
        "alpha": alpha(rs, bs, rf, ppy),
        "correlation": correlation(rs, bs),
        "tracking_error": tracking_error(rs, bs, ppy),
        "information_ratio": information_ratio(rs, bs, ppy),
    }


def _day(ts) -> str | None:
    return None if ts is None or pd.isna(ts) else str(pd.Timestamp(ts).date())


def _max(s: pd.Series) -> float:
    return float(s.max()) if len(s) else NAN


def _min(s: pd.Series) -> float:
    return float(s.min()) if len(s) else NAN
