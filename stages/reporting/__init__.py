"""Reporting stage: performance metrics, signal quality and a self-contained HTML tear sheet."""
from stages.reporting.metrics import compute_metrics
from stages.reporting.stage import run_reporting_stage

__all__ = ["compute_metrics", "run_reporting_stage"]
