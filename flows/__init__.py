"""Orchestration: the Prefect flow, deployments and schedules, and the `trendflow` CLI."""
