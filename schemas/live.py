"""The live track record and the book reconciliation: artifacts of the daily runs.

- reconcile_{D}.csv: the model's book vs the executed book at session D's open (stages/trading/book.py);
- live_equity.parquet, live_fills.parquet, live_positions.parquet: one day appended by each daily
  run (the rows of D replaced when D is run again), the record the report shows beside the backtest.
"""
from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

RECONCILE_SIDES = ["BUY", "SELL", "HOLD", "CASH"]


class ReconcileSchema(pa.DataFrameModel):
    """One row per symbol with an order (the model's or the broker's) or a holding that differs after
    session `date`'s open, and one CASH row. `model_*` is what the model's own book did (the backtest's
    fill), `filled_*`/`fill_price` what the broker did; drift = executed - model."""

    date: Series[pd.Timestamp] = pa.Field(description="session whose open filled the orders")
    decision_date: Series[pd.Timestamp] = pa.Field(nullable=True, description="close at which the order was decided")
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=RECONCILE_SIDES, description="BUY/SELL: an order; HOLD: a holding that differs; CASH: cash")
    model_qty: Series[int] = pa.Field(ge=0, description="shares the model's book filled")
    sent_qty: Series[int] = pa.Field(ge=0, description="shares sent to the broker after the risk profile (0: not sent / rejected)")
    filled_qty: Series[int] = pa.Field(ge=0, description="shares the broker filled")
    model_price: Series[float] = pa.Field(nullable=True, gt=0, description="the model's fill price (open with slippage)")
    fill_price: Series[float] = pa.Field(nullable=True, gt=0)
    slippage_bp: Series[float] = pa.Field(nullable=True, description="fill price vs the session's open, in bp, positive = cost")
    model_shares: Series[int] = pa.Field(ge=0, description="shares the model holds after the open")
    executed_shares: Series[int] = pa.Field(ge=0, description="shares the executed book holds after the open")
    share_drift: Series[int] = pa.Field(description="executed_shares - model_shares")
    drift_value: Series[float] = pa.Field(description="share_drift x close (CASH row: the cash difference)")
    cash_difference: Series[float] = pa.Field(description="executed minus model cash flow of the symbol's fills (CASH: total)")
    reason: Series[str] = pa.Field(description="why the books differ ('match' when they do not)")

    @pa.dataframe_check(error="share_drift = executed_shares - model_shares")
    def drift_adds_up(cls, df: pd.DataFrame) -> Series[bool]:
        return df["share_drift"] == df["executed_shares"] - df["model_shares"]

    @pa.dataframe_check(error="exactly one CASH row")
    def one_cash_row(cls, df: pd.DataFrame) -> bool:
        return int((df["side"] == "CASH").sum()) == 1

    class Config:
        coerce = True
        strict = True
        ordered = True


class LiveEquitySchema(pa.DataFrameModel):
    """One row per daily run: the book at the session's close."""

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    equity: Series[float] = pa.Field(gt=0)
    cash: Series[float] = pa.Field(ge=0)
    positions_value: Series[float] = pa.Field(ge=0)
    n_positions: Series[int] = pa.Field(ge=0)
    daily_return: Series[float] = pa.Field(description="equity vs the previous session's close (the snapshot's total value)")
    model_return: Series[float] = pa.Field(description="the same day for the model's own book (its fills, marked to the close)")
    traded_value: Series[float] = pa.Field(ge=0, description="value of the session's fills")
    costs: Series[float] = pa.Field(ge=0, description="realised commission + slippage of the session's fills")
    model_traded_value: Series[float] = pa.Field(ge=0, description="value of the fills the model's own book made")
    model_costs: Series[float] = pa.Field(ge=0, description="commission + slippage the model's fills would have paid")
    drift: Series[float] = pa.Field(ge=0, description="value of the holdings that differ from the model's + |equity difference| "
                                                      "(reconcile_{date}.csv; 0 without an execution database)")
    source: Series[str] = pa.Field(isin=["executed", "model"], description="executed: the book from the execution database")

    @pa.dataframe_check(error="dates increase")
    def dates_increase(cls, df: pd.DataFrame) -> bool:
        return bool(df["date"].is_monotonic_increasing)

    class Config:
        coerce = True
        strict = True
        ordered = True


class LiveFillsSchema(pa.DataFrameModel):
    """Every fill of the live period, in execution order."""

    date: Series[pd.Timestamp]
    decision_date: Series[pd.Timestamp]
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=["BUY", "SELL"])
    quantity: Series[int] = pa.Field(gt=0)
    price: Series[float] = pa.Field(gt=0)
    commission: Series[float] = pa.Field(ge=0)
    slippage: Series[float] = pa.Field(ge=0, description="slippage cost in currency vs the open")
    reason: Series[str]
    source: Series[str] = pa.Field(isin=["executed", "model"])

    @pa.dataframe_check(error="decision_date <= date, dates increase")
    def ordered_in_time(cls, df: pd.DataFrame) -> bool:
        return bool((df["decision_date"] <= df["date"]).all() and df["date"].is_monotonic_increasing)

    class Config:
        coerce = True
        strict = True
        ordered = True


class LivePositionsSchema(pa.DataFrameModel):
    """Holdings at each live close."""

    date: Series[pd.Timestamp]
    symbol: Series[str]
    shares: Series[int] = pa.Field(gt=0)
    close: Series[float] = pa.Field(gt=0)
    market_value: Series[float] = pa.Field(ge=0)
    weight: Series[float] = pa.Field(ge=0)

    @pa.dataframe_check(error="dates increase")
    def dates_increase(cls, df: pd.DataFrame) -> bool:
        return bool(df["date"].is_monotonic_increasing)

    class Config:
        coerce = True
        strict = True
        ordered = True
