"""Trading-stage artifacts: trade_log.csv, allocation_history.csv, positions.parquet,
equity_curve.parquet, orders_{D}.csv and the portfolio_{D}.json snapshot."""
from __future__ import annotations

from datetime import date as Date
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series
from pydantic import BaseModel, ConfigDict, Field, model_validator

TRADE_SIDES = ["BUY", "SELL"]
ORDER_REASONS = [
    "atr_stop",
    "data_ended",
    "time_stop",
    "sell_signal",
    "rank_out_of_buffer",
    "cluster_cap",
    "position_limit",
    "new_entry",
    "rebalance",
    "target_weight",
]


class TradeLogSchema(pa.DataFrameModel):
    """One row per fill, in execution order (sells before buys within a day)."""

    date: Series[pd.Timestamp] = pa.Field(description="fill date (the session after decision_date with next_open fills)")
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=TRADE_SIDES)
    quantity: Series[int] = pa.Field(gt=0, description="shares, a multiple of the lot size")
    price: Series[float] = pa.Field(gt=0, description="fill price including slippage")
    commission: Series[float] = pa.Field(ge=0)
    slippage: Series[float] = pa.Field(ge=0, description="slippage cost in currency")
    reason: Series[str] = pa.Field(isin=ORDER_REASONS)
    decision_date: Series[pd.Timestamp] = pa.Field(description="close at which the order was decided")

    @pa.dataframe_check(error="decision_date <= date")
    def decided_before_filled(cls, df: pd.DataFrame) -> Series[bool]:
        return df["decision_date"] <= df["date"]

    class Config:
        coerce = True
        strict = "filter"


class AllocationHistorySchema(pa.DataFrameModel):
    """Wide: date, one column per symbol held at some point, and Cash, in percent of equity; each row
    sums to 100.

    The symbol columns are checked by table-level checks over the whole block at once (numbers in
    [0, 100]) rather than by a regex column field: pandera validates a regex field column by column,
    which took seconds for a few hundred symbols.
    """

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    Cash: Series[float] = pa.Field(ge=-1e-6, le=100.000001)

    @pa.dataframe_check(error="symbol columns hold numbers in [0, 100] (percent of equity)")
    def symbol_weights_in_range(cls, df: pd.DataFrame) -> Series[bool]:
        block = df.drop(columns=["date", "Cash"])
        if not all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in block.dtypes):
            return pd.Series(False, index=df.index)
        values = block.to_numpy(dtype=float)
        return pd.Series(((values >= 0) & (values <= 100.000001)).all(axis=1), index=df.index)

    @pa.dataframe_check(error="row weights (symbols + Cash) sum to 100")
    def sums_to_100(cls, df: pd.DataFrame) -> Series[bool]:
        block = df.drop(columns="date")
        if not all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):
            return pd.Series(False, index=df.index)
        return pd.Series(np.abs(block.to_numpy(dtype=float).sum(axis=1) - 100.0) < 1e-6, index=df.index)

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
    stop_level: Series[float] = pa.Field(ge=0, description="ATR trailing stop level after this close (0 = not set yet)")
    days_held: Series[int] = pa.Field(ge=0, description="closes held through, the entry day counting 1 with next_open fills")

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
    daily_return: Series[float] = pa.Field(description="equity_t / equity_{t-1} - 1; against initial cash on the first day")
    turnover: Series[float] = pa.Field(ge=0, description="traded value that day / equity")
    costs: Series[float] = pa.Field(ge=0, description="commission + slippage paid that day")
    breaker_on: Series[bool] = pa.Field(description="market circuit breaker active (no new buys)")
    market_drawdown: Series[float] = pa.Field(le=0, description="market index vs its peak over risk.circuit_breaker_lookback")

    class Config:
        coerce = True
        strict = "filter"


class OrdersSchema(pa.DataFrameModel):
    """orders_{D}.csv: the orders standing after the close of D -- decided at that close from D's
    signals, plus any sell carried over a suspension -- to be filled at the open of the next trading
    session (execution.fill_price = next_open). They are portfolio_{D}.json's pending_orders, and the
    daily run for the next session fills them first. With fill_price = close they were filled at the
    close of D and are already in portfolio_{D}.json. Sells first, then buys in rank order;
    current_price is the close at the decision, estimated_value = shares x current_price."""

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


SNAPSHOT_VERSION = 2


class Holding(BaseModel):
    """One position as the engine carries it from day to day."""

    model_config = ConfigDict(extra="forbid")

    shares: int = Field(gt=0)
    entry_date: Date
    entry_price: float = Field(gt=0, description="average fill price (slippage included) of the shares held")
    highest_close: float = Field(gt=0, description="highest close since entry")
    stop_level: float = Field(ge=0, description="ATR trailing stop; never decreases (0 = not set yet)")
    last_close: float = Field(gt=0, description="last close the symbol traded at (valuation price)")
    days_held: int = Field(ge=0, description="closes held through since entry")
    cluster: int = Field(ge=-1, description="last known correlation cluster (-1 = none)")


class PendingOrder(BaseModel):
    """An order decided at a close and not filled yet: filled at the next session's open."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    side: Literal["BUY", "SELL"]
    shares: int = Field(gt=0)
    reason: Literal[tuple(ORDER_REASONS)]  # type: ignore[valid-type]
    signal_strength: float | None = None
    momentum_score: float | None = None
    target_weight: float = Field(ge=0, le=1)
    reference_price: float = Field(gt=0, description="close at the decision")
    decision_date: Date = Field(description="close at which it was decided (earlier than as_of_date for a sell "
                                            "carried over a suspension)")


class SnapshotMetadata(BaseModel):
    """What the snapshot was made under; a daily run refuses to resume under anything else."""

    model_config = ConfigDict(extra="forbid")

    trading_config_hash: str = Field(min_length=64, max_length=64, description="sha256 of the settings that change trading decisions")
    mode: Literal["signals", "weights"] = Field(description="signal rules, or external target weights")
    fill_price: Literal["next_open", "close"]
    lot_size: int = Field(ge=1)


class PortfolioSnapshot(BaseModel):
    """portfolio_{D}.json: the engine state after the close of `as_of_date` (D), with the orders
    decided at that close in `pending_orders` (= orders_{D}.csv, filled at the open of the next
    session with next_open fills). The daily run for the next trading day resumes from exactly this."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = SNAPSHOT_VERSION
    as_of_date: Date
    trading_day_index: int = Field(ge=0, description="trading days stepped since the portfolio started (rebalance when "
                                                     "index % scoring.rebalance_frequency == 0)")
    holdings: dict[str, Holding]
    pending_orders: list[PendingOrder]
    cash: float = Field(ge=0)
    total_value: float = Field(gt=0, description="cash + holdings at their last close")
    peak_equity: float = Field(gt=0, description="highest total value at a close so far")
    breaker_on: bool = Field(description="market circuit breaker on at this close (no new buys decided)")
    market_drawdown: float = Field(le=0, description="market index vs its recent peak at this close")
    cluster_assignments: dict[str, int] = Field(description="cluster of every symbol traded at this close")
    risk_exits: dict[str, int] = Field(default_factory=dict, description="trading_day_index of the risk exit of each "
                                       "symbol still in its re-entry cooldown (risk.reentry_cooldown_days)")
    metadata: SnapshotMetadata

    @model_validator(mode="after")
    def _consistent(self) -> "PortfolioSnapshot":
        value = self.cash + sum(h.shares * h.last_close for h in self.holdings.values())
        if abs(value - self.total_value) > 1e-9 * max(abs(self.total_value), 1.0):
            raise ValueError(f"total_value {self.total_value} != cash + holdings at last close ({value})")
        late = sorted(s for s, h in self.holdings.items() if h.entry_date > self.as_of_date)
        if late:
            raise ValueError(f"holdings {late} have an entry_date after as_of_date {self.as_of_date}")
        lot = self.metadata.lot_size
        odd = sorted(s for s, h in self.holdings.items() if h.shares % lot) + [o.symbol for o in self.pending_orders if o.shares % lot]
        if odd:
            raise ValueError(f"shares of {odd} are not whole lots of {lot}")
        for order in self.pending_orders:
            if order.decision_date > self.as_of_date:
                raise ValueError(f"pending order for {order.symbol} decided after as_of_date {self.as_of_date}")
            held = self.holdings[order.symbol].shares if order.symbol in self.holdings else 0
            if order.side == "SELL" and order.shares > held:
                raise ValueError(f"pending SELL of {order.shares} {order.symbol} exceeds the {held} shares held")
        return self
