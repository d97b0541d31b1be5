"""Which schema checks which artifact, by file name -- used by `trendflow validate FILE`.

Stages name their schema explicitly when they read and write; this table only serves the
generic checker, so a file can be validated without knowing which stage wrote it.
"""
from __future__ import annotations

import re
from importlib import import_module

# (file-name pattern, "module:Class"); the first full match wins.
_TABLE = r"\.(parquet|csv)"
_DAY = r"\d{4}-\d{2}-\d{2}"
ARTIFACT_SCHEMAS: list[tuple[str, str]] = [
    (r"prices" + _TABLE, "schemas.prices:PricesSchema"),
    (r"adjusted_prices" + _TABLE, "schemas.prices:PricesSchema"),
    (r"data_quality\.csv", "schemas.data:DataQualitySchema"),
    (r"signals_output\.parquet", "schemas.signals:SignalsSchema"),
    (r"signals_output\.csv", "schemas.signals:SignalWeightsSchema"),  # the readable twin: wide target weights
    (rf"signals_{_DAY}\.csv", "schemas.signals:DailySignalsSchema"),
    (rf"scores_{_DAY}\.csv", "schemas.signals:DailyScoresSchema"),
    (r"trade_log" + _TABLE, "schemas.trading:TradeLogSchema"),
    (r"allocation_history" + _TABLE, "schemas.trading:AllocationHistorySchema"),
    (r"positions" + _TABLE, "schemas.trading:PositionsSchema"),
    (r"equity_curve" + _TABLE, "schemas.trading:EquityCurveSchema"),
    (rf"orders_{_DAY}\.csv", "schemas.trading:OrdersSchema"),
    (rf"portfolio_{_DAY}\.json", "schemas.trading:PortfolioSnapshot"),
    (rf"reconcile_{_DAY}\.csv", "schemas.live:ReconcileSchema"),
    (r"live_equity" + _TABLE, "schemas.live:LiveEquitySchema"),
    (r"live_fills" + _TABLE, "schemas.live:LiveFillsSchema"),
    (r"live_positions" + _TABLE, "schemas.live:LivePositionsSchema"),
    (r"performance_summary\.json", "schemas.reporting:PerformanceSummary"),
    (r"performance_summary\.csv", "schemas.reporting:PerformanceSummaryCsvSchema"),
    (r"sweep_results" + _TABLE, "schemas.sweep:SweepResultsSchema"),
    (r"sweep_returns\.parquet", "schemas.sweep:SweepReturnsSchema"),
    (r"sweep_overfitting\.json", "schemas.sweep:OverfittingSummary"),
    (r"walk_forward_results" + _TABLE, "schemas.sweep:WalkForwardSchema"),
    (r"walk_forward_equity" + _TABLE, "schemas.sweep:WalkForwardEquitySchema"),
    (r"signal_state\.npz", "stages.signal.state:SignalState"),  # checked by its own loader
]


def schema_for(file_name: str) -> type | None:
    """The schema class for an artifact file name, or None when the name is not an artifact."""
    for pattern, target in ARTIFACT_SCHEMAS:
        if re.fullmatch(pattern, file_name):
            module_name, class_name = target.split(":")
            return getattr(import_module(module_name), class_name)
    return None
