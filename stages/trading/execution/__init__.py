"""Execution layer: risk profiles, quality-ranked batches, brokers, persisted state, notifications, audit log.

The package's names are imported on first use (PEP 562): the trading stage reads the execution
database (store) every evening, but sends nothing, so it does not load the executor and brokers."""
from importlib import import_module

__all__ = ["execute_orders", "quality_score"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module("stages.trading.execution.executor"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
