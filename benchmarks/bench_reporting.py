"""Reporting stage timing on a 10-year x 500-symbol run."""
from __future__ import annotations

import tempfile
from pathlib import Path

import _common  # noqa: F401
from _common import demo_folder, timed

from stages.common.config import load_config
from stages.reporting import run_reporting_stage
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage

config = load_config()
with tempfile.TemporaryDirectory() as out:
    out = Path(out)
    run_signal_stage(config, demo_folder(500), out)
    run_trading_stage(config, out, out)
    with timed("500 symbols x 10y: reporting stage (metrics, signal quality, html)", track_memory=False):
        run_reporting_stage(config, out, out)
    print(f"report: {(out / 'report.html').stat().st_size / 1024:.0f} KiB")
