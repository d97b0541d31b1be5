"""Shared fixtures: the demo universe (generated once per session) and the real data in ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# A test that runs `trendflow run/daily` without a server of its own gets Prefect's temporary one,
# never the shared local server (which would outlive the test session).
os.environ.setdefault("TRENDFLOW_PREFECT_SERVER", "ephemeral")
# Commands run as subprocesses run in their own process, even when a warm process (flows/warm.py)
# is running for this checkout; tests/test_warm.py starts one of its own and turns this off.
os.environ.setdefault("TRENDFLOW_WARM", "0")


def shared_data_dir(market: str) -> Path:
    """A folder of real ETF prices in ../shared/data, or skip the test when it is absent."""
    folder = SHARED_DATA / market
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder}")
    return folder


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """The default demo universe (40 symbols x 10 years), written once per test session."""
    from stages.common.demo import DemoSpec, write_demo_universe

    return write_demo_universe(tmp_path_factory.mktemp("demo_data"), DemoSpec())


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory) -> Path:
    """A small universe (12 symbols x 3 years) for fast end-to-end tests."""
    from stages.common.demo import DemoSpec, write_demo_universe

    return write_demo_universe(tmp_path_factory.mktemp("small_demo"), DemoSpec(n_symbols=12, years=3, seed=7))
