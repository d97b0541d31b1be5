"""Execution layer: risk profiles, quality-ranked batches, brokers, persisted state, notifications, audit log."""
from stages.trading.execution.executor import execute_orders, quality_score

__all__ = ["execute_orders", "quality_score"]
