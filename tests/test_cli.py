"""Scheduling helpers, prefect.yaml and the launch scripts (no Prefect server needed)."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("day, calendar, expected", [
    (date(2024, 10, 1), "XSHG", False),   # National Day holiday
    (date(2024, 10, 8), "XSHG", True),
    (date(2024, 10, 5), "XSHG", False),   # Saturday
    (date(2024, 7, 4), "XNYS", False),    # Independence Day
    (date(2024, 7, 5), "XNYS", True),
])
def test_schedule_skips_non_trading_days(day, calendar, expected):
    from flows.schedule import is_trading_day

    assert is_trading_day(day, calendar) is expected


def test_prefect_yaml_points_at_the_flow():
    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / path).exists() and f"def {name}(" in (ROOT / path).read_text()
    daily = next(d for d in spec["deployments"] if d["name"] == "trendflow-daily")
    assert daily["schedules"][0]["timezone"] == "Asia/Shanghai"


def test_windows_batch_file_has_crlf_line_endings_and_propagates_exit_code():
    data = (ROOT / "run_pipeline.bat").read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n") > 10
    assert b"exit /b %CODE%" in data


def test_serve_rejects_a_bad_time_zone(capsys):
    from flows.cli import main

    assert main(["serve", "--timezone", "Mars/Base"]) == 2
    assert "Mars/Base" in capsys.readouterr().err


def test_readme_documents_every_config_key_and_command():
    from schemas.config import TrendflowConfig
    from flows.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()

    def keys(section: dict, prefix: str = ""):
        for name, value in section.items():
            if isinstance(value, dict) and name != "momentum_weights":
                yield from keys(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    missing = [k for k in keys(TrendflowConfig().model_dump(mode="json")) if f"`{k}`" not in readme]
    assert missing == []
    assert [c for c in COMMANDS if f"trendflow {c}" not in readme] == []
    assert "./run_pipeline.sh test" in readme and "./run_pipeline.sh test" in (ROOT / ".ci" / "run").read_text().replace("./run_pipeline.sh test -q", "./run_pipeline.sh test")
