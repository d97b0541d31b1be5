"""performance_summary.json (+ .csv): the reporting stage's numbers.

The JSON holds every headline metric (null where undefined: too little history, no trades, no
benchmark), the signal-quality figures per forward horizon, and notes on missing inputs. The CSV
is the same numbers flattened to one `metric,value` row each, for spreadsheets and diffs.
Formulas live in the docstrings of `stages/reporting/metrics.py` and `signal_quality.py`.
"""
from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from pydantic import BaseModel, ConfigDict, Field

from schemas.signals import SignalsSchema

Number = float | None


class Metrics(BaseModel):
    """Headline metrics of one run. Ratios and returns are fractions (0.12 = 12%); `*_days` count sessions."""

    model_config = ConfigDict(extra="forbid")

    start_date: str | None = Field(description="first close of the equity curve (YYYY-MM-DD)")
    end_date: str | None = Field(description="last close")
    trading_days: int = Field(ge=0, description="closes in the equity curve")
    first_trade_date: str | None = Field(description="first fill; the sessions before it were all cash")
    start_equity: Number = Field(description="capital the returns are measured from")
    final_equity: Number
    total_return: Number
    cagr: Number
    total_return_before_costs: Number = Field(description="total return with every session's costs added back")
    annual_volatility: Number
    sharpe: Number
    sortino: Number
    calmar: Number
    max_drawdown: Number = Field(le=0)
    max_drawdown_peak: str | None = Field(description="last close at the peak before the deepest drawdown; null = the start")
    max_drawdown_trough: str | None
    max_drawdown_recovery: str | None = Field(description="first close back at the peak; null = not recovered")
    max_drawdown_days: int | None = Field(description="sessions from peak to recovery (or to the last close)")
    longest_drawdown_days: int | None = Field(description="longest peak-to-recovery span of any drawdown")
    best_day: Number
    worst_day: Number
    best_month: Number
    worst_month: Number
    best_year: Number
    worst_year: Number
    skew: Number = Field(description="skewness of daily returns (bias-adjusted)")
    kurtosis: Number = Field(description="excess kurtosis of daily returns (0 = normal)")
    daily_var_95: Number = Field(description="historical daily value at risk, 95%: the 5th percentile of daily returns")
    daily_cvar_95: Number = Field(description="historical daily CVaR, 95%: mean of the worst 5% of daily returns")
    tail_ratio: Number = Field(description="|95th percentile| / |5th percentile| of daily returns")
    omega: Number = Field(description="sum of gains above the risk-free rate / sum of shortfalls below it")
    win_rate_days: Number = Field(description="share of up sessions among sessions that moved")
    win_rate_months: Number = Field(description="share of up calendar months among months that moved")
    probabilistic_sharpe: Number = Field(description="probability that the true Sharpe ratio is above 0 (PSR)")
    min_track_record_days: Number = Field(description="sessions of history needed for PSR to reach 95% at this "
                                                      "Sharpe, skew and kurtosis (null when Sharpe <= 0)")
    return_mtd: Number
    return_ytd: Number
    return_1y: Number
    return_3y: Number = Field(description="annualised")
    return_5y: Number = Field(description="annualised")
    number_of_fills: int = Field(ge=0)
    closed_trades: int = Field(ge=0, description="round trips: flat -> position -> flat")
    open_trades: int = Field(ge=0, description="positions still open at the last close")
    win_rate: Number
    profit_factor: Number
    avg_trade_return: Number
    avg_holding_days: Number
    total_costs: float = Field(ge=0, description="commission + slippage, currency")
    total_commission: float = Field(ge=0)
    total_slippage: float = Field(ge=0)
    annual_turnover: Number = Field(description="one-way: (buys + sells) / 2 per year, as a multiple of equity")
    avg_exposure: Number
    current_exposure: Number
    avg_holdings: Number
    current_holdings: int | None
    max_position_weight: Number = Field(description="largest weight any holding reached at a close")
    benchmark_days: int | None = Field(description="sessions where strategy and benchmark both have a return")
    benchmark_total_return: Number
    benchmark_cagr: Number
    benchmark_annual_volatility: Number
    benchmark_sharpe: Number
    benchmark_sortino: Number
    benchmark_max_drawdown: Number
    benchmark_calmar: Number
    beta: Number
    alpha: Number
    correlation: Number
    tracking_error: Number
    information_ratio: Number


class HorizonQuality(BaseModel):
    """How well the momentum score ranked forward returns over one horizon."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(ge=1)
    ic_days: int = Field(ge=0, description="dates with enough symbols for a rank IC")
    ic_mean: Number
    ic_std: Number
    ic_t_stat: Number = Field(description="mean / (std / sqrt(n)); overlapping horizons inflate it")
    ic_t_stat_nw: Number = Field(description="Newey-West t-stat with horizon - 1 lags (overlap-robust)")
    ic_positive_share: Number
    quintile_returns: list[Number] = Field(min_length=5, max_length=5, description="mean forward return, quintile 1 (lowest score) .. 5")
    top_minus_bottom: Number = Field(description="quintile 5 minus quintile 1")
    buy_signals: int = Field(ge=0, description="new buy signals (trend signal turned 1) with a known forward return")
    buy_hit_rate: Number = Field(description="share of new buy signals followed by a positive forward return")
    buy_excess_hit_rate: Number = Field(description="share that beat the same-day mean forward return of the universe")
    buy_mean_return: Number
    buy_mean_excess_return: Number


class SignalQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: str = Field(description="the signals_output column that was evaluated")
    symbols: int = Field(ge=0)
    dates: int = Field(ge=0)
    horizons: list[HorizonQuality]


class PerformanceSummary(BaseModel):
    """performance_summary.json."""

    model_config = ConfigDict(extra="forbid")

    metrics: Metrics
    signal_quality: SignalQuality | None = Field(description="null when signals_output.parquet is not in the input folder")
    benchmark: str | None
    notes: list[str] = Field(description="what the report could not show and why")


class PerformanceSummaryCsvSchema(pa.DataFrameModel):
    """performance_summary.csv: one row per metric (signal quality as `signal.<name>_<h>d`); empty value = n/a."""

    metric: Series[str] = pa.Field(unique=True)
    value: Series[str] = pa.Field(nullable=True)

    class Config:
        coerce = True
        strict = True
        ordered = True


class SignalQualityInputSchema(pa.DataFrameModel):
    """The columns of signals_output.parquet the reporting stage reads (same rules as SignalsSchema)."""

    date: Series[pd.Timestamp]
    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    close: Series[float] = pa.Field(gt=0)
    trend_signal: Series[int] = pa.Field(isin=[-1, 0, 1])
    momentum_score: Series[float] = pa.Field(nullable=True)

    sorted_unique = SignalsSchema.__dict__["sorted_unique"]  # the same rule: (date, symbol) unique, sorted

    class Config:
        coerce = True
        strict = "filter"
