"""The Prefect flow, run for real (prefect_test_harness: a temporary local server and database)."""
from __future__ import annotations

import shutil

import pytest

from flows.cli import main
from stages.common.errors import ConfigError, SchemaError, TransientIOError

pytestmark = pytest.mark.prefect
ARTIFACTS = ["prices.parquet", "signals_output.parquet", "signals_output.csv", "trade_log.csv", "allocation_history.csv",
             "positions.parquet", "positions.csv", "equity_curve.parquet", "equity_curve.csv", "performance_summary.json",
             "performance_summary.csv", "report.html", "manifest.json"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def full_run(harness, small_demo_dir, tmp_path_factory):
    from flows.pipeline import trend_pipeline

    out = tmp_path_factory.mktemp("flow_full")
    summary = trend_pipeline(data=str(small_demo_dir), out=str(out), retry_delay_seconds=0)
    return out, summary


def test_whole_flow_produces_every_artifact(full_run):
    out, summary = full_run
    for name in ARTIFACTS:
        assert (out / name).exists(), name
    assert [s["stage"] for s in summary["stages"]] == ["signal", "trading", "reporting"]
    assert list(out.glob("orders_*.csv")) and list(out.glob("portfolio_*.json"))


def test_trading_and_reporting_alone_reproduce_the_full_run(full_run, small_demo_dir, tmp_path):
    from flows.pipeline import trend_pipeline

    out, _ = full_run
    for name in ("prices.parquet", "signals_output.parquet", "signals_output.csv", "manifest.json"):
        shutil.copy(out / name, tmp_path / name)
    trend_pipeline(out=str(tmp_path), stages=["trading", "reporting"], retry_delay_seconds=0)
    for name in ARTIFACTS[3:-1]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_transient_failure_is_retried_and_the_run_completes(full_run, monkeypatch, tmp_path):
    import stages.reporting as reporting
    from flows.pipeline import trend_pipeline

    out, _ = full_run
    real = reporting.run_reporting_stage
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientIOError("report.html is locked by another program")
        return real(*args, **kwargs)

    monkeypatch.setattr(reporting, "run_reporting_stage", flaky)
    for name in ARTIFACTS[:-1]:
        shutil.copy(out / name, tmp_path / name)
    shutil.copy(out / "manifest.json", tmp_path / "manifest.json")
    summary = trend_pipeline(out=str(tmp_path), stages=["reporting"], retry_delay_seconds=0)
    assert len(calls) == 2 and summary["stages"][0]["stage"] == "reporting"


def test_schema_violation_fails_at_once_and_keeps_previous_artifacts(full_run, monkeypatch, tmp_path):
    import stages.trading.stage as trading_stage
    from flows.pipeline import trend_pipeline

    out, _ = full_run
    for name in ARTIFACTS:
        shutil.copy(out / name, tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = trading_stage.run_backtest
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        result.trade_log.loc[0, "quantity"] = -5  # a schema violation on write
        return result

    monkeypatch.setattr(trading_stage, "run_backtest", broken)
    with pytest.raises(SchemaError, match="trade_log.csv"):
        trend_pipeline(out=str(tmp_path), stages=["trading", "reporting"], retry_delay_seconds=0)
    assert len(calls) == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_help_and_exit_codes(tmp_path, capsys):
    from flows.cli import COMMANDS, main

    for name in COMMANDS:
        try:
            with pytest.raises(SystemExit) as exit_:
                main([name, "--help"])
        except ModuleNotFoundError as exc:  # pragma: no cover - an optional extra is missing
            pytest.fail(f"trendflow {name} --help: {exc}")
        assert exit_.value.code == 0, name
    assert main(["nope"]) == 2
    assert main(["run", "--out", str(tmp_path), "--stages", "reporting", "--set", "risk.atr_multiplier=-1"]) == 2
    assert "risk.atr_multiplier" in capsys.readouterr().err


def test_paper_execution_step_sends_the_days_orders_once(full_run, tmp_path):
    import pandas as pd

    from flows.pipeline import trend_pipeline
    from schemas.trading import OrdersSchema
    from stages.common.artifacts import stage_run

    out, _ = full_run
    for name in ARTIFACTS:
        shutil.copy(out / name, tmp_path / name)
    prices = pd.read_parquet(out / "prices.parquet")
    day = prices["date"].max().date()
    last = prices[prices["date"] == prices["date"].max()].sort_values("symbol").head(3)
    shares = (20_000 / last["close"] // 100 * 100).astype(int).to_numpy()  # ~2% of equity each: inside every limit
    orders = pd.DataFrame({"symbol": last["symbol"].to_numpy(), "action": "BUY", "shares": shares,
                           "reason": "new_entry", "signal_strength": 0.9, "momentum_score": 1.0, "target_weight": 0.02,
                           "current_price": last["close"].to_numpy(), "estimated_value": shares * last["close"].to_numpy()})
    with stage_run("trading", tmp_path, csv_twins=False) as run:
        run.write(orders, f"orders_{day}.csv", OrdersSchema)
    with pytest.raises(ConfigError, match="no execution database at .*trendflow execute --init"):
        trend_pipeline(out=str(tmp_path), stages=[], mode="daily", as_of_date=day, execute="paper", retry_delay_seconds=0)
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 0  # only --init creates the account
    first = trend_pipeline(out=str(tmp_path), stages=[], mode="daily", as_of_date=day, execute="paper", retry_delay_seconds=0)
    assert [s["stage"] for s in first["stages"]] == ["execute"]
    x, n_orders = first["stages"][0]["summary"], first["stages"][0]["rows"]["orders"]
    # paper orders work until the next session's open (the next daily run settles them)
    assert n_orders > 0 and x["working"] > 0 and x["working"] + x["rejected"] == n_orders and x["already_done"] == 0
    assert (tmp_path / "execution" / "trendflow.db").exists()
    # the same day again: the same orders are still working, nothing is submitted twice
    again = trend_pipeline(out=str(tmp_path), stages=[], mode="daily", as_of_date=day, execute="paper", retry_delay_seconds=0)
    y = again["stages"][0]["summary"]
    assert y["working"] == x["working"] and y["already_done"] == x["rejected"] and y["filled"] == 0
    import sqlite3

    assert sqlite3.connect(tmp_path / "execution" / "trendflow.db").execute("SELECT COUNT(*) FROM orders").fetchone()[0] == n_orders


def test_execute_outside_daily_mode_is_refused(capsys, tmp_path):
    from flows.cli import main

    assert main(["run", "--out", str(tmp_path), "--execute", "paper"]) == 2
    assert "--execute is for a daily run" in capsys.readouterr().err
    assert main(["daily", "--out", str(tmp_path), "--as-of-date", "2024-01-05", "--execute", "paper",
                 "--profile", "reckless"]) == 2
    assert "risk profile 'reckless' not found" in capsys.readouterr().err


def test_a_failed_run_says_why_in_its_log_file(harness, capsys, tmp_path):
    from flows.cli import main

    assert main(["run", "--out", str(tmp_path), "--stages", "reporting", "--retry-delay", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("equity_curve.parquet") == 1 and "error: reporting stage needs" in err
    (log_file,) = (tmp_path / "logs").glob("trendflow_*.log")
    text = log_file.read_text(encoding="utf-8")
    assert "[1/1] reporting stage starting" in text
    assert "ERROR" in text and "trendflow backtest run failed: reporting stage needs" in text
