"""Which schema checks which artifact, by file name -- used by `trendflow validate FILE`.

Stages name their schema explicitly when they read and write; this table only serves the
generic checker, so a file can be validated without knowing which stage wrote it.
"""
from __future__ import annotations

import re
from importlib import import_module

# (file-name pattern, "module:Class"); the first match wins. Extensions are stripped first.
ARTIFACT_SCHEMAS: list[tuple[str, str]] = [
    (r"prices", "schemas.prices:PricesSchema"),
    (r"signals_output", "schemas.signals:SignalsSchema"),
    (r"signals_\d{4}-\d{2}-\d{2}", "schemas.signals:DailySignalsSchema"),
    (r"scores_\d{4}-\d{2}-\d{2}", "schemas.signals:DailyScoresSchema"),
    (r"trade_log", "schemas.trading:TradeLogSchema"),
    (r"allocation_history", "schemas.trading:AllocationHistorySchema"),
    (r"positions", "schemas.trading:PositionsSchema"),
    (r"equity_curve", "schemas.trading:EquityCurveSchema"),
    (r"orders_\d{4}-\d{2}-\d{2}", "schemas.trading:OrdersSchema"),
    (r"portfolio_\d{4}-\d{2}-\d{2}", "schemas.trading:PortfolioSnapshot"),
    (r"performance_summary", "schemas.reporting:PerformanceSummary"),
    (r"sweep_results", "schemas.sweep:SweepResultsSchema"),
]


def schema_for(file_name: str) -> type | None:
    """The schema class for an artifact file name, or None when the name is not an artifact."""
    stem = file_name.split(".", 1)[0]
    for pattern, target in ARTIFACT_SCHEMAS:
        if re.fullmatch(pattern, stem):
            module_name, class_name = target.split(":")
            return getattr(import_module(module_name), class_name)
    return None
