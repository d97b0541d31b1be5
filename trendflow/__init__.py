"""trendflow's Python API for users of the older design (signal_pipeline / V4).

    import trendflow
    result = trendflow.run_daily_signal("config.json", "2024-08-30", "live/portfolio_2024-08-29.json",
                                        output_dir="live/", dry_run=False, data="prices/")
    result["orders"], result["metadata"]["num_buy_orders"], result["circuit_breaker"]
    snapshot = trendflow.load_portfolio("portfolio_2024-08-29.json")   # either snapshot shape

The pipeline itself is the `trendflow` command (flows/cli.py) and the stages in `stages/`.
"""
from trendflow.api import load_portfolio, run_daily_signal

__all__ = ["load_portfolio", "run_daily_signal"]
