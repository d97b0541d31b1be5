"""Signal stage: trend signals, momentum scores and ranks, correlation clusters."""
from stages.signal.compute import compute_signals
from stages.signal.stage import run_signal_stage

__all__ = ["compute_signals", "run_signal_stage"]
