"""Reporting metrics: equal to empyrical and quantstats where they define the same thing (to 1e-9),
and to hand-computed answers on tiny cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from schemas.reporting import Metrics
from schemas.trading import EquityCurveSchema
from stages.common.config import load_config
from stages.common.errors import DataError
from stages.reporting.metrics import (
    alpha,
    annual_turnover,
    beta,
    cagr,
    compute_metrics,
    correlation,
    drawdown_episodes,
    drawdown_series,
    information_ratio,
    max_drawdown,
    per_period_rate,
    profit_factor,
    round_trips,
    sharpe_ratio,
    sortino_ratio,
    total_return,
    tracking_error,
    win_rate,
)

TOL = dict(rel=1e-9, abs=1e-12)


def make_curve(returns, start: float = 1_000_000.0, **columns) -> pd.DataFrame:
    """An equity curve with every column of EquityCurveSchema; returns[0] is the first close's return
    against `start` (0 for a curve that starts in cash)."""
    returns = np.asarray(returns, dtype=float)
    dates = pd.bdate_range("2021-01-04", periods=len(returns))
    equity = start * np.cumprod(1.0 + returns)
    frame = pd.DataFrame({"date": dates, "equity": equity, "cash": equity * 0.1, "positions_value": equity * 0.9,
                          "exposure": 0.9, "n_positions": 3, "daily_return": np.r_[0.0, returns[1:]] if len(returns) else returns,
                          "turnover": 0.0, "costs": 0.0, "breaker_on": False})
    for name, column in EquityCurveSchema.to_schema().columns.items():  # columns the trading stage added since
        if name not in frame:
            frame[name] = False if "bool" in str(column.dtype) else 0.0
    for name, value in columns.items():
        frame[name] = value
    return frame


def make_trades(rows) -> pd.DataFrame:
    """A trade log with every column of TradeLogSchema (orders decided at the fill's own date)."""
    frame = pd.DataFrame(rows, columns=["date", "symbol", "side", "quantity", "price", "commission", "slippage", "reason"])
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    frame["decision_date"] = frame["date"]
    return frame


NO_TRADES = make_trades([])


@pytest.fixture(scope="module")
def sample():
    """800 sessions of strategy and benchmark returns; the first is 0 (the curve starts in cash)."""
    rng = np.random.default_rng(7)
    r = rng.normal(0.0004, 0.012, 800)
    b = 0.6 * r + rng.normal(0.0002, 0.008, 800)
    r[0] = b[0] = 0.0
    curve = make_curve(r)
    dates = pd.DatetimeIndex(curve["date"])
    return curve, pd.Series(r, index=dates), pd.Series(b, index=dates)


def _metrics(curve, trades=NO_TRADES, rf=0.0, bench=None, **kw):
    config = load_config(overrides=[f"reporting.risk_free_rate={rf}"])
    return compute_metrics(curve, trades, config=config, benchmark_returns=bench, **kw)


# --------------------------------------------------------------------------- libraries
def test_return_and_risk_metrics_equal_empyrical(sample):
    empyrical = pytest.importorskip("empyrical")
    curve, r, b = sample
    annual_rf = 0.03
    rf = per_period_rate(annual_rf, 252)
    m = _metrics(curve, rf=annual_rf, bench=b)
    expected = {
        "total_return": empyrical.cum_returns_final(r),
        "cagr": empyrical.annual_return(r),
        "annual_volatility": empyrical.annual_volatility(r),
        "sharpe": empyrical.sharpe_ratio(r, risk_free=rf),
        "sortino": empyrical.sortino_ratio(r, required_return=rf),
        "max_drawdown": empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r),
        "beta": empyrical.beta(r, b, risk_free=rf),
        "alpha": empyrical.alpha(r, b, risk_free=rf),
        "information_ratio": empyrical.excess_sharpe(r, b) * math.sqrt(252),
        "benchmark_sharpe": empyrical.sharpe_ratio(b, risk_free=rf),
        "benchmark_max_drawdown": empyrical.max_drawdown(b),
    }
    for name, value in expected.items():
        assert m[name] == pytest.approx(float(value), **TOL), name


def test_return_and_risk_metrics_equal_quantstats(sample):
    qs = pytest.importorskip("quantstats")
    curve, r, b = sample
    annual_rf = 0.03  # quantstats de-annualises it as (1 + rf)^(1/252) - 1, as we do
    m = _metrics(curve, rf=annual_rf, bench=b)
    expected = {
        "cagr": qs.stats.cagr(r, periods=252),
        "annual_volatility": qs.stats.volatility(r, periods=252),
        "sharpe": qs.stats.sharpe(r, rf=annual_rf, periods=252),
        "sortino": qs.stats.sortino(r, rf=annual_rf, periods=252),
        "max_drawdown": qs.stats.max_drawdown(r),
        "calmar": qs.stats.calmar(r, periods=252),
        "best_day": qs.stats.best(r),
        "worst_day": qs.stats.worst(r),
        "best_month": qs.stats.best(r, aggregate="ME"),  # calendar months ("M" would pool each month across years)
        "worst_month": qs.stats.worst(r, aggregate="ME"),
        "best_year": qs.stats.best(r, aggregate="YE"),
        "worst_year": qs.stats.worst(r, aggregate="YE"),
        "beta": qs.stats.greeks(r, b)["beta"],
        "information_ratio": qs.stats.information_ratio(r, b) * math.sqrt(252),
    }
    for name, value in expected.items():
        assert m[name] == pytest.approx(float(value), **TOL), name
    assert m["correlation"] == pytest.approx(float(r.corr(b)), **TOL)


def test_top_drawdowns_match_quantstats_drawdown_details():
    qs = pytest.importorskip("quantstats")
    r = pd.Series(np.random.default_rng(3).normal(0.002, 0.01, 1000), index=pd.bdate_range("2021-01-04", periods=1000))
    ours = drawdown_episodes(r)
    theirs = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r)).sort_values("max drawdown").reset_index(drop=True)
    assert len(ours) == len(theirs) > 20
    for i in range(5):
        assert ours["depth"][i] * 100 == pytest.approx(theirs["max drawdown"][i], **TOL)
        assert str(ours["trough"][i].date()) == theirs["valley"][i]
        # quantstats dates an episode by its first and last close under water; we by the peak and the recovery
        dates = r.index
        assert str(dates[dates.get_loc(ours["peak"][i]) + 1].date()) == theirs["start"][i]
        if pd.notna(ours["recovery"][i]):
            assert str(dates[dates.get_loc(ours["recovery"][i]) - 1].date()) == theirs["end"][i]


# --------------------------------------------------------------------------- by hand
def test_tiny_case_by_hand():
    r = pd.Series([0.0, 0.10, -0.20, 0.05, 0.40], index=pd.bdate_range("2021-01-04", periods=5))
    growth = 1.1 * 0.8 * 1.05 * 1.4
    assert total_return(r) == pytest.approx(growth - 1)
    assert cagr(r, 252) == pytest.approx(growth ** (252 / 5) - 1)
    assert max_drawdown(r) == pytest.approx(0.88 / 1.1 - 1)  # 1.10 -> 0.88
    x = r.to_numpy()
    assert sharpe_ratio(r, 0.0, 252) == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(252))
    assert sortino_ratio(r, 0.0, 252) == pytest.approx(x.mean() * math.sqrt(252) / math.sqrt(0.2**2 / 5))
    assert sharpe_ratio(pd.Series([0.01, 0.01]), 0.0, 252) != sharpe_ratio(pd.Series([0.01, 0.01]), 0.0, 252)  # NaN: no variation


def test_the_starting_capital_is_the_first_peak():
    r = pd.Series([-0.10, 0.05], index=pd.bdate_range("2021-01-04", periods=2))
    assert drawdown_series(r).tolist() == pytest.approx([-0.10, 0.9 * 1.05 - 1])
    episode = drawdown_episodes(r).iloc[0]
    assert pd.isna(episode["peak"]) and pd.isna(episode["recovery"]) and episode["total_days"] == 2


def test_drawdown_episode_dates_and_durations_by_hand():
    dates = pd.bdate_range("2021-01-04", periods=9)
    wealth = np.array([1.0, 1.2, 0.9, 1.0, 1.2, 1.3, 1.17, 1.3, 1.25])
    r = pd.Series(wealth / np.r_[1.0, wealth[:-1]] - 1, index=dates)
    episodes = drawdown_episodes(r)
    first, second, third = episodes.iloc[0], episodes.iloc[1], episodes.iloc[2]
    assert first["depth"] == pytest.approx(-0.25)  # 1.2 -> 0.9
    assert (first["peak"], first["trough"], first["recovery"]) == (dates[1], dates[2], dates[4])
    assert (first["decline_days"], first["recovery_days"], first["total_days"]) == (1, 2, 3)
    assert second["depth"] == pytest.approx(-0.1) and second["recovery"] == dates[7] and second["total_days"] == 2
    assert third["depth"] == pytest.approx(1.25 / 1.3 - 1) and pd.isna(third["recovery"]) and pd.isna(third["recovery_days"])
    assert third["total_days"] == 1  # peak on the 8th close, still under water on the 9th (the last)
    m = _metrics(make_curve(r.to_numpy()))
    assert (m["max_drawdown_peak"], m["max_drawdown_trough"], m["max_drawdown_recovery"]) == (
        str(dates[1].date()), str(dates[2].date()), str(dates[4].date()))
    assert m["max_drawdown_days"] == 3 and m["longest_drawdown_days"] == 3


def test_best_and_worst_periods_compound_within_the_calendar_period():
    dates = pd.to_datetime(["2021-01-28", "2021-01-29", "2021-02-01", "2021-02-02", "2022-03-01"])
    curve = make_curve([0.0, 0.10, -0.05, -0.05, 0.20])
    curve["date"] = dates
    m = _metrics(curve)
    assert m["best_month"] == pytest.approx(0.20) and m["worst_month"] == pytest.approx(0.95 * 0.95 - 1)
    assert m["best_year"] == pytest.approx(0.20) and m["worst_year"] == pytest.approx(1.1 * 0.95 * 0.95 - 1)
    assert m["best_day"] == pytest.approx(0.20) and m["worst_day"] == pytest.approx(-0.05)


def test_benchmark_relative_metrics_by_hand():
    r = pd.Series([0.01, -0.02, 0.03, 0.00, 0.01])
    b = pd.Series([0.02, -0.01, 0.01, 0.01, -0.01])
    x, y = r.to_numpy(), b.to_numpy()
    slope = np.cov(x, y, ddof=1)[0, 1] / y.var(ddof=1)
    assert beta(r, b, 0.001) == pytest.approx(slope)  # a constant rf does not move beta
    assert alpha(r, b, 0.0, 252) == pytest.approx((1 + (x - slope * y).mean()) ** 252 - 1)
    assert correlation(r, b) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert tracking_error(r, b, 252) == pytest.approx((x - y).std(ddof=1) * math.sqrt(252))
    assert information_ratio(r, b, 252) == pytest.approx((x - y).mean() / (x - y).std(ddof=1) * math.sqrt(252))
    assert math.isnan(beta(r, pd.Series([0.01] * 5), 0.0))  # a benchmark that never moves explains nothing


def test_relative_metrics_use_only_sessions_where_the_benchmark_has_a_return(sample):
    curve, r, b = sample
    late = b.copy()
    late.iloc[:300] = np.nan
    m = _metrics(curve, bench=late)
    assert m["benchmark_days"] == 500
    assert m["beta"] == pytest.approx(beta(r.iloc[300:], b.iloc[300:], 0.0), **TOL)
    assert m["benchmark_total_return"] == pytest.approx(total_return(b.iloc[300:]), **TOL)


def test_without_benchmark_the_relative_metrics_are_undefined(sample):
    curve, _, _ = sample
    m = _metrics(curve)
    assert m["benchmark_days"] is None and math.isnan(m["beta"]) and math.isnan(m["information_ratio"])


def test_initial_cash_measures_the_first_session_from_the_starting_capital():
    curve = make_curve([0.0, 0.01], start=990_000.0)
    m = _metrics(curve, initial_cash=1_000_000.0)
    assert m["total_return"] == pytest.approx(990_000 * 1.01 / 1_000_000 - 1)
    assert m["max_drawdown"] == pytest.approx(-0.01) and m["start_equity"] == 1_000_000.0


def test_risk_free_rate_is_compounded_per_session():
    assert per_period_rate(0.0252, 252) == pytest.approx(1.0252 ** (1 / 252) - 1)
    curve = make_curve(np.r_[0.0, np.tile([0.01, -0.005], 50)])
    r = pd.Series(curve["daily_return"].to_numpy())
    assert _metrics(curve, rf=0.05)["sharpe"] == pytest.approx(sharpe_ratio(r, 1.05 ** (1 / 252) - 1, 252))


def test_inconsistent_daily_return_is_refused():
    curve = make_curve([0.0, 0.01, 0.02])
    curve.loc[2, "daily_return"] = 0.03
    with pytest.raises(DataError, match=r"daily_return on 2021-01-06"):
        _metrics(curve)


# --------------------------------------------------------------------------- trades
def test_round_trips_group_partial_fills_from_flat_to_flat():
    dates = pd.bdate_range("2021-01-04", periods=12)
    trades = make_trades([
        (dates[0], "A", "BUY", 200, 10.0, 5.0, 1.0, "new_entry"),
        (dates[2], "A", "SELL", 100, 11.0, 5.0, 1.0, "rebalance"),    # a trim: the trade stays open
        (dates[3], "B", "BUY", 100, 20.0, 5.0, 1.0, "new_entry"),
        (dates[4], "A", "BUY", 100, 12.0, 5.0, 1.0, "rebalance"),     # an add
        (dates[6], "A", "SELL", 200, 13.0, 5.0, 1.0, "atr_stop"),     # flat: trade 1 closes
        (dates[7], "B", "SELL", 100, 18.0, 5.0, 1.0, "rank_out_of_buffer"),
        (dates[9], "A", "BUY", 100, 10.0, 5.0, 1.0, "new_entry"),     # a new trade, still open
    ])
    trips = round_trips(trades, dates)
    assert trips["symbol"].tolist() == ["A", "B"]
    a, b = trips.iloc[0], trips.iloc[1]
    assert a["bought"] == pytest.approx(2000 + 5 + 1200 + 5)
    assert a["pnl"] == pytest.approx((1100 - 5) + (2600 - 5) - (2005 + 1205))
    assert a["return"] == pytest.approx(a["pnl"] / a["bought"])
    assert (a["entry_date"], a["exit_date"], a["holding_days"], a["reason"]) == (dates[0], dates[6], 6, "atr_stop")
    assert b["pnl"] == pytest.approx(1800 - 5 - 2005) and b["holding_days"] == 4 and b["reason"] == "rank_out_of_buffer"
    assert win_rate(trips) == 0.5 and profit_factor(trips) == pytest.approx(a["pnl"] / -b["pnl"])
    m = _metrics(make_curve(np.zeros(12)), trades)
    assert (m["closed_trades"], m["open_trades"], m["number_of_fills"]) == (2, 1, 7)
    assert m["avg_holding_days"] == 5.0
    assert m["total_commission"] == 35.0 and m["total_slippage"] == 7.0 and m["total_costs"] == 42.0
    assert m["first_trade_date"] == str(dates[0].date())


def test_a_log_that_starts_with_holdings_leaves_those_fills_out():
    dates = pd.bdate_range("2021-01-04", periods=4)
    trades = make_trades([(dates[1], "A", "SELL", 100, 10.0, 5.0, 0.0, "atr_stop"),
                          (dates[2], "B", "BUY", 100, 10.0, 5.0, 0.0, "new_entry"),
                          (dates[3], "B", "SELL", 100, 11.0, 5.0, 0.0, "atr_stop")])
    trips = round_trips(trades, dates)
    assert trips["symbol"].tolist() == ["B"]


def test_without_losing_trades_the_profit_factor_is_undefined():
    assert math.isnan(profit_factor(pd.DataFrame({"pnl": [10.0, 5.0]})))
    assert math.isnan(win_rate(pd.DataFrame({"pnl": []})))


def test_turnover_exposure_and_holdings():
    curve = make_curve(np.zeros(4), turnover=[0.0, 1.0, 0.0, 0.2], exposure=[0.0, 0.5, 0.5, 0.7], n_positions=[0, 2, 2, 3])
    m = _metrics(curve)
    assert annual_turnover(curve["turnover"], 252) == pytest.approx(0.3 * 252 / 2)
    assert m["annual_turnover"] == pytest.approx(37.8)
    assert m["avg_exposure"] == pytest.approx(0.425) and m["current_exposure"] == 0.7
    assert m["avg_holdings"] == pytest.approx(1.75) and m["current_holdings"] == 3


def test_one_session_gives_undefined_statistics_not_errors():
    m = _metrics(make_curve([0.0]))
    assert m["trading_days"] == 1 and m["total_return"] == 0.0
    for key in ("annual_volatility", "sharpe", "sortino", "calmar", "win_rate", "profit_factor", "avg_holding_days"):
        assert math.isnan(m[key]), key
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_peak"] is None


def test_every_metric_fits_the_summary_model(sample):
    curve, _, b = sample
    for bench in (None, b):
        m = _metrics(curve, bench=bench)
        assert set(m) == set(Metrics.model_fields)
        Metrics(**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()})


# --------------------------------------------------------------------------- tails, win rates, trailing, PSR
def test_tail_and_distribution_metrics_equal_empyrical_and_quantstats(sample):
    empyrical = pytest.importorskip("empyrical")
    qs = pytest.importorskip("quantstats")
    curve, r, _ = sample
    annual_rf = 0.03
    rf = per_period_rate(annual_rf, 252)
    m = _metrics(curve, rf=annual_rf)
    expected = {
        "skew": qs.stats.skew(r),
        "kurtosis": qs.stats.kurtosis(r),
        "daily_var_95": empyrical.value_at_risk(r, cutoff=0.05),
        "daily_cvar_95": empyrical.conditional_value_at_risk(r, cutoff=0.05),
        "tail_ratio": empyrical.tail_ratio(r),
        "omega": empyrical.omega_ratio(r, risk_free=rf),
        "win_rate_days": qs.stats.win_rate(r),
        "win_rate_months": qs.stats.win_rate(r, aggregate="ME"),
        "probabilistic_sharpe": qs.stats.probabilistic_sharpe_ratio(r, rf=annual_rf, periods=252),
    }
    for name, value in expected.items():
        assert m[name] == pytest.approx(float(value), **TOL), name
    # quantstats' historical CVaR is the mean of returns at or below the interpolated 5th percentile:
    # the same tail as empyrical's up to the interpolation point
    assert m["daily_cvar_95"] == pytest.approx(qs.stats.conditional_value_at_risk(r, method="historical"), rel=0.03)
    assert m["daily_cvar_95"] < m["daily_var_95"] < 0


def test_psr_with_a_risk_free_rate_equals_quantstats_and_the_formula_by_hand():
    qs = pytest.importorskip("quantstats")
    from statistics import NormalDist

    from stages.reporting.metrics import probabilistic_sharpe_ratio

    r = pd.Series([0.01, -0.02, 0.015, 0.03, -0.005, 0.002, 0.011, -0.012], index=pd.bdate_range("2024-01-01", periods=8))
    rf = per_period_rate(0.02, 252)
    assert probabilistic_sharpe_ratio(r, rf) == pytest.approx(qs.stats.probabilistic_sharpe_ratio(r, rf=0.02, periods=252), **TOL)
    x = r.to_numpy() - rf  # by hand: sample moments with the bias adjustments pandas uses
    n, mean, sd = len(x), x.mean(), x.std(ddof=1)
    sr = mean / sd
    m2, m3, m4 = (((x - mean) ** k).mean() for k in (2, 3, 4))
    g1 = m3 / m2 ** 1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    g2 = ((n + 1) * (m4 / m2 ** 2) - 3 * (n - 1)) * (n - 1) / ((n - 2) * (n - 3))
    z = (sr - 0.1) * math.sqrt(n - 1) / math.sqrt(1 - g1 * sr + (g2 + 3 - 1) / 4 * sr ** 2)
    assert probabilistic_sharpe_ratio(r, rf, benchmark_sharpe=0.1) == pytest.approx(NormalDist().cdf(z), **TOL)


def test_trailing_returns_by_hand():
    from stages.reporting.metrics import trailing_return

    dates = pd.bdate_range("2020-12-28", "2024-03-15")
    r = pd.Series(0.0, index=dates)
    r[pd.Timestamp("2021-03-15")] = 0.5     # 3 years ago to the day: outside every window
    r[pd.Timestamp("2021-03-16")] = 0.10    # inside 3Y only
    r[pd.Timestamp("2023-03-16")] = 0.20    # inside 1Y and 3Y
    r[pd.Timestamp("2023-12-29")] = 0.30    # the previous year's last session: inside 1Y, not YTD
    r[pd.Timestamp("2024-01-02")] = -0.10   # YTD, not MTD
    r[pd.Timestamp("2024-03-01")] = 0.05    # MTD
    assert trailing_return(r, "MTD") == pytest.approx(0.05, **TOL)
    assert trailing_return(r, "YTD") == pytest.approx(0.9 * 1.05 - 1, **TOL)
    assert trailing_return(r, "1Y") == pytest.approx(1.2 * 1.3 * 0.9 * 1.05 - 1, **TOL)
    assert trailing_return(r, "3Y") == pytest.approx((1.1 * 1.2 * 1.3 * 0.9 * 1.05) ** (1 / 3) - 1, **TOL)
    assert math.isnan(trailing_return(r, "5Y"))  # 3.2 years of history


def test_rolling_sortino_and_beta_equal_empyrical(sample):
    empyrical = pytest.importorskip("empyrical")
    from stages.reporting.metrics import rolling_beta, rolling_sortino

    _, r, b = sample
    window = 63
    ours = rolling_sortino(r, window, 0.0, 252)
    theirs = np.asarray(empyrical.roll_sortino_ratio(r, window=window), dtype=float)
    assert ours.iloc[: window - 1].isna().all()
    np.testing.assert_allclose(ours.to_numpy()[window - 1:], theirs, rtol=1e-9)
    beta_ours = rolling_beta(r, b, window)
    beta_theirs = np.asarray(empyrical.roll_beta(r, b, window=window), dtype=float)
    np.testing.assert_allclose(beta_ours.to_numpy()[window - 1:], beta_theirs, rtol=1e-9)
    late = b.copy()
    late.iloc[:100] = np.nan  # a benchmark that starts late: windows count its sessions only
    assert rolling_beta(r, late, window).first_valid_index() == r.index[100 + window - 1]


def test_total_return_before_costs_adds_each_session_s_costs_back():
    # 1,000,000 -> 990,000 (paid 2,000 of costs that day) -> 1,000,000 (paid 1,000)
    curve = make_curve([-0.01, 10_000 / 990_000], costs=[2_000.0, 1_000.0])
    m = compute_metrics(curve, pd.DataFrame(columns=["date", "symbol", "side", "quantity", "price", "commission",
                                                      "slippage"]), initial_cash=1_000_000.0)
    assert m["total_return"] == pytest.approx(0.0, abs=1e-12)
    assert m["total_return_before_costs"] == pytest.approx((992_000 / 1_000_000) * (1_001_000 / 990_000) - 1)


def test_min_track_record_is_where_psr_reaches_the_confidence():
    """MinTRL by hand, and PSR of a history of exactly that length with the same moments is the confidence."""
    from statistics import NormalDist

    from stages.reporting.metrics import min_track_record
    from stages.sweep.overfitting import moments, psr_from_moments

    r = pd.Series(np.random.default_rng(11).normal(0.001, 0.01, 500), index=pd.bdate_range("2022-01-03", periods=500))
    sr, g3, g4 = moments(r.to_numpy())
    expected = 1 + (1 - g3 * sr + (g4 - 1) / 4 * sr ** 2) * (NormalDist().inv_cdf(0.95) / sr) ** 2
    n = min_track_record(r)
    assert n == pytest.approx(expected, rel=1e-12)
    assert psr_from_moments(sr, 0.0, n, g3, g4) == pytest.approx(0.95, rel=1e-9)
    assert math.isnan(min_track_record(-r))  # a negative Sharpe never gets there
