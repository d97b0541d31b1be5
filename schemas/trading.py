"""Trading-stage artifacts: trade_log.csv, allocation_history.csv, positions.parquet,
equity_curve.parquet, orders_{D}.csv and the portfolio_{D}.json snapshot."""
from __future__ import annotations

from datetime import date as Date
from typing import Literal

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from pydantic import BaseModel, ConfigDict, Field

TRADE_SIDES = ["BUY", "SELL"]
ORDER_REASONS = [
    "atr_stop",
    "time_stop",
    "sell_signal",
    "rank_out_of_buffer",
    "cluster_cap",
    "new_entry",
    "rebalance",
    "target_weight",
]


class TradeLogSchema(pa.DataFrameModel):
    """One row per fill, in execution order (sells before buys within a day)."""

    date: Series[pd.Timestamp] = pa.Field(description="fill date (the day after the signal)")
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=TRADE_SIDES)
    quantity: Series[int] = pa.Field(gt=0, description="shares, a multiple of the lot size")
    price: Series[float] = pa.Field(gt=0, description="fill price including slippage")
    commission: Series[float] = pa.Field(ge=0)
    slippage: Series[float] = pa.Field(ge=0, description="slippage cost in currency")
    reason: Series[str] = pa.Field(isin=ORDER_REASONS)

    class Config:
        coerce = True
        strict = "filter"


class AllocationHistorySchema(pa.DataFrameModel):
    """Wide: date, one column per symbol and Cash, in percent of equity; each row sums to 100."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    symbols: Series[float] = pa.Field(alias=r"^(?!date$|Cash$).+", regex=True, ge=0, le=100.000001)
    Cash: Series[float] = pa.Field(ge=-1e-6)

    @pa.dataframe_check(error="row weights (symbols + Cash) sum to 100")
    def sums_to_100(cls, df: pd.DataFrame) -> Series[bool]:
        return (df.drop(columns="date").sum(axis=1) - 100.0).abs() < 1e-6

    class Config:
        coerce = True


class PositionsSchema(pa.DataFrameModel):
    """Holdings at each close: one row per (date, symbol) held."""

    date: Series[pd.Timestamp]
    symbol: Series[str]
    shares: Series[int] = pa.Field(gt=0)
    close: Series[float] = pa.Field(gt=0, description="last close (carried over suspension days)")
    market_value: Series[float] = pa.Field(ge=0)
    weight: Series[float] = pa.Field(ge=0, description="market_value / equity")
    entry_date: Series[pd.Timestamp]
    entry_price: Series[float] = pa.Field(gt=0)
    highest_close: Series[float] = pa.Field(gt=0)
    cluster: Series[int] = pa.Field(ge=-1)

    class Config:
        coerce = True
        strict = "filter"


class EquityCurveSchema(pa.DataFrameModel):
    """Portfolio value at each close."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    equity: Series[float] = pa.Field(gt=0)
    cash: Series[float] = pa.Field(ge=0)
    positions_value: Series[float] = pa.Field(ge=0)
    exposure: Series[float] = pa.Field(ge=0, description="positions_value / equity")
    n_positions: Series[int] = pa.Field(ge=0)
    daily_return: Series[float] = pa.Field(description="equity_t / equity_{t-1} - 1; 0 on the first day")
    turnover: Series[float] = pa.Field(ge=0, description="traded value that day / equity")
    costs: Series[float] = pa.Field(ge=0, description="commission + slippage paid that day")
    breaker_on: Series[bool] = pa.Field(description="market circuit breaker active (no new buys)")

    class Config:
        coerce = True
        strict = "filter"


class OrdersSchema(pa.DataFrameModel):
    """orders_{D}.csv: what the daily run wants filled on the next session."""

    symbol: Series[str]
    action: Series[str] = pa.Field(isin=TRADE_SIDES)
    shares: Series[int] = pa.Field(gt=0)
    reason: Series[str] = pa.Field(isin=ORDER_REASONS)
    signal_strength: Series[float] = pa.Field(nullable=True)
    momentum_score: Series[float] = pa.Field(nullable=True)
    target_weight: Series[float] = pa.Field(ge=0, le=1)
    current_price: Series[float] = pa.Field(gt=0)
    estimated_value: Series[float] = pa.Field(ge=0)

    class Config:
        coerce = True
        strict = True
        ordered = True


SNAPSHOT_VERSION = 1


class Holding(BaseModel):
    """One position as the engine carries it from day to day."""

    model_config = ConfigDict(extra="forbid")

    shares: int = Field(gt=0)
    entry_date: Date
    entry_price: float = Field(gt=0)
    highest_close: float = Field(gt=0)
    stop_level: float = Field(ge=0, description="ATR trailing stop; never decreases")
    last_close: float = Field(gt=0)
    days_held: int = Field(ge=0, description="trading days since entry")
    cluster: int = Field(ge=-1)


class PendingOrder(BaseModel):
    """An order decided at a close, to be filled on the next session."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    side: Literal["BUY", "SELL"]
    shares: int = Field(gt=0)
    reason: str
    signal_strength: float | None = None
    momentum_score: float | None = None
    target_weight: float = Field(ge=0, le=1)
    reference_price: float = Field(gt=0)


class PortfolioSnapshot(BaseModel):
    """portfolio_{D}.json: the engine state after the close of `as_of_date`, with the orders decided
    at that close (filled on the next session). The daily run resumes from exactly this."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SNAPSHOT_VERSION
    as_of_date: Date
    trading_day_index: int = Field(ge=0, description="days since the portfolio started; rebalance when % frequency == 0")
    holdings: dict[str, Holding]
    pending_orders: list[PendingOrder]
    cash: float = Field(ge=0)
    total_value: float = Field(gt=0)
    peak_equity: float = Field(gt=0)
    cluster_assignments: dict[str, int]
    metadata: dict
