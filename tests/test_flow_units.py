"""The flow's pure pieces, no Prefect run needed: which faults are retried, and the input checks
against manifest.json that run before each stage."""
from __future__ import annotations

import pandas as pd
import pytest

from stages.common.errors import (ArtifactMissingError, ConfigError, DataError, IntegrityError, SchemaError,
                                  TransientIOError)


@pytest.mark.parametrize("exc, retried", [
    (TransientIOError("report.html is locked"), True),
    (PermissionError(13, "locked by another process"), True),   # how Windows reports a file held open elsewhere
    (OSError(5, "Input/output error"), True),
    (TimeoutError("share went away"), True),
    (FileNotFoundError(2, "no such file"), False),               # retrying cannot make a missing file appear
    (IsADirectoryError(21, "is a directory"), False),
    (SchemaError("trade_log.csv: quantity < 0"), False),
    (ConfigError("key 'risk.atr_multiplier'"), False),
    (DataError("prices: no rows"), False),
    (ValueError("bug"), False),
])
def test_only_transient_io_faults_are_retried(exc, retried):
    from flows.pipeline import is_transient

    assert is_transient(exc) is retried


def _write_prices(folder):
    from schemas.prices import PricesSchema
    from stages.common.artifacts import stage_run

    prices = pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-03"]), "symbol": ["A", "A"],
                           "open": [1.0, 1.1], "high": [1.2, 1.2], "low": [0.9, 1.0], "close": [1.1, 1.15],
                           "volume": [100.0, 200.0]})
    with stage_run("signal", folder, csv_twins=False) as run:
        run.write(prices, "prices.parquet", PricesSchema)


def test_stage_inputs_are_checked_against_the_manifest(tmp_path):
    from flows.pipeline import check_inputs

    check_inputs("signal", tmp_path)  # the first stage reads the data folder, not the output folder
    with pytest.raises(ArtifactMissingError, match=r"prices.parquet.*--stages signal,trading"):
        check_inputs("trading", tmp_path)
    _write_prices(tmp_path)
    with pytest.raises(ArtifactMissingError, match="signals_output.parquet"):
        check_inputs("trading", tmp_path)
    (tmp_path / "signals_output.parquet").write_bytes(b"not written by the signal stage")  # not in the manifest
    check_inputs("trading", tmp_path)
    with open(tmp_path / "prices.parquet", "ab") as fh:  # edited after the signal stage wrote it
        fh.write(b"\0")
    with pytest.raises(IntegrityError, match=r"prices.parquet was changed after stage 'signal'"):
        check_inputs("trading", tmp_path)


def test_daily_defaults_and_stage_selection(capsys, tmp_path):
    from flows.cli import main
    from flows.pipeline import default_stages

    assert default_stages("backtest") == ("signal", "trading", "reporting")
    assert default_stages("daily") == ("signal", "trading")
    assert main(["run", "--out", str(tmp_path), "--stages", "trading,charts"]) == 2
    assert "unknown stage(s) ['charts']" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path), "--stages", ""]) == 2
    assert "--stages is empty" in capsys.readouterr().err
    assert main(["daily", "--out", str(tmp_path), "--force"]) == 2  # --force goes with --fresh only
    assert "--force only goes with --fresh" in capsys.readouterr().err



def test_a_commands_flow_run_has_no_heartbeat_thread_unless_asked_for(monkeypatch):
    """Prefect joins its heartbeat thread (1 s sleeps) when a flow run ends: up to 1 s idle at the end
    of every `trendflow daily`. A command's own run goes without; the setting turns them back on."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    from flows.commands import _flow_run_settings

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    assert get_current_settings().flows.heartbeat_frequency is not None  # Prefect's default: on
    with temporary_settings(_flow_run_settings()):
        assert get_current_settings().flows.heartbeat_frequency is None
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY not in _flow_run_settings()


def test_a_configured_prefect_api_is_the_runs_api_not_a_temporary_server(monkeypatch):
    """With PREFECT_API_URL set there is no temporary server: _api_url says so by returning it (None
    means Prefect's temporary server, and only then does _run_flow start the orphan watchdog; it was
    started for a configured API too: one more interpreter polling /proc during every run)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.commands import _api_url

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert _api_url("trendflow daily") == "http://127.0.0.1:9/api"


def test_flow_records_plain_parameters_as_prefects_encoder_does():
    """trend_pipeline's run record is built without FastAPI's encoder for plain values: it must be
    the record Prefect's own serialize_parameters (jsonable_encoder) makes, and anything else is
    left to Prefect."""
    from datetime import date, datetime
    from pathlib import Path

    from prefect import Flow

    from flows.pipeline import PlainParametersFlow, trend_pipeline

    assert isinstance(trend_pipeline, PlainParametersFlow)
    cases = [
        {"config_path": None, "overrides": [], "data": "/prices", "out": "out", "stages": None, "mode": "daily",
         "as_of_date": date(2024, 8, 30), "fresh": False, "retry_delay_seconds": 5.0, "portfolio": None},
        {"overrides": ["risk.atr_multiplier=2.5", "x=1"], "stages": ("signal", "trading"), "as_of_date": None,
         "retry_delay_seconds": float("inf"), "n": 3, "ok": True},
        {"as_of_date": datetime(2024, 8, 30, 15, 30), "stages": ["signal"]},  # not plain: Prefect's encoder
        {"data": Path("/prices")},
    ]
    for parameters in cases:
        ours = trend_pipeline.serialize_parameters(parameters)
        theirs = Flow.serialize_parameters(trend_pipeline, parameters)
        assert ours == theirs and [type(v) for v in ours.values()] == [type(v) for v in theirs.values()]
