"""The live track record: each daily run appends its session to live_equity.parquet,
live_fills.parquet and live_positions.parquet (schemas/live.py).

The files are extended, not rewritten from memory: the existing file is read hash-checked against
the manifest and the new day's rows are appended to it (`StageRun.write_extended`, as the signal
stage extends signals_output.parquet). Running session D again replaces D's rows; rows after D are
dropped, since they were made from a book D's rerun may have changed.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.live import LiveEquitySchema, LiveFillsSchema, LivePositionsSchema
from stages.common.artifacts import StageRun
from stages.trading.engine import DayRecord, Fill, PortfolioState, mark_to_close
from stages.trading.market import Market

LIVE_ARTIFACTS = {"live_equity.parquet": LiveEquitySchema, "live_fills.parquet": LiveFillsSchema,
                  "live_positions.parquet": LivePositionsSchema}


def _costs(fills: list[Fill]) -> float:
    return float(sum(f.commission + f.slippage for f in fills))


def _value(fills: list[Fill]) -> float:
    return float(sum(f.quantity * f.price for f in fills))


def live_rows(market: Market, t: int, state: PortfolioState, record: DayRecord, model: PortfolioState,
              opening_equity: float, settlement) -> dict[str, pd.DataFrame]:
    """The session's rows. With an executed book (`settlement`), fills are the broker's and the model's
    return is its own book's (its fills, marked to the same close); without, both are the model's."""
    day = market.day(t)
    if settlement is not None:
        # + the step's own fills at the close (data_ended sales), on both books alike
        fills, model_fills, source = settlement.fills + record.fills, settlement.model_fills + record.fills, "executed"
        intended = copy.deepcopy(settlement.intended)
        mark_to_close(intended, day)
        model_return = intended.equity() / model.equity() - 1.0
    else:
        fills, model_fills, source = record.fills, record.fills, "model"
        model_return = record.equity / opening_equity - 1.0
    equity = pd.DataFrame([{
        "date": day.date, "equity": record.equity, "cash": record.cash, "positions_value": record.positions_value,
        "n_positions": int(state.held.sum()), "daily_return": record.equity / opening_equity - 1.0,
        "model_return": model_return, "traded_value": _value(fills), "costs": _costs(fills),
        "model_traded_value": _value(model_fills), "model_costs": _costs(model_fills),
        "drift": settlement.drift if settlement is not None else 0.0, "source": source,
    }], columns=list(LiveEquitySchema.to_schema().columns))
    fill_rows = pd.DataFrame([{
        "date": day.date, "decision_date": f.decided, "symbol": str(market.symbols[f.symbol]), "side": f.side,
        "quantity": f.quantity, "price": f.price, "commission": f.commission, "slippage": f.slippage, "reason": f.reason,
        "source": source,
    } for f in fills], columns=list(LiveFillsSchema.to_schema().columns))
    held = np.flatnonzero(state.held)
    value = state.shares[held] * state.last_close[held]
    positions = pd.DataFrame({
        "date": day.date, "symbol": market.symbols[held].astype(str), "shares": state.shares[held],
        "close": state.last_close[held], "market_value": value, "weight": value / record.equity,
    }, columns=list(LivePositionsSchema.to_schema().columns))
    return {"live_equity.parquet": equity, "live_fills.parquet": fill_rows, "live_positions.parquet": positions}


def append_day(run: StageRun, out_dir: Path, name: str, rows: pd.DataFrame, schema, day: pd.Timestamp) -> None:
    """Stage `name` as its existing rows before `day` (hash-checked) followed by `rows`."""
    path = Path(out_dir) / name
    if not path.exists():
        run.write(rows, name, schema, csv_twin=False)
        return
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    previous = run.read_with(path, pq.read_table)
    cutoff = pa.scalar(pd.Timestamp(day), type=previous.schema.field("date").type)
    run.write_extended(previous.filter(pc.less(previous["date"], cutoff)), rows, name, schema)
