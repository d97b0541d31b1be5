"""Reporting stage: performance metrics, signal quality and a self-contained HTML tear sheet.

Public: compute_metrics (metrics.py), run_reporting_stage (stage.py), and for other pages
render_sweep_section / page (html.py)."""
from stages.reporting.html import page, render_sweep_section
from stages.reporting.metrics import compute_metrics
from stages.reporting.stage import run_reporting_stage

__all__ = ["compute_metrics", "page", "render_sweep_section", "run_reporting_stage"]
