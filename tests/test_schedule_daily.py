"""Daily runs a person drives by hand (`trendflow daily`), and the alerts every flow run sends.

One Prefect test harness for the module (a temporary server, ~15 s). The evening before is set up
without Prefect: a backtest through the second-to-last session of the small demo universe, so the
last session is the next evening to run. Webhooks go to a real HTTP listener on 127.0.0.1.
"""
from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def evening(small_demo_dir, tmp_path_factory):
    """(folder after a backtest through the day before the last session, last session, the day before)."""
    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    dates = sorted(pd.read_csv(next(small_demo_dir.glob("*.csv")), usecols=[0]).iloc[:, 0].unique())
    last, before = pd.Timestamp(dates[-1]).date(), pd.Timestamp(dates[-2]).date()
    folder = tmp_path_factory.mktemp("evening")
    config = load_config(None, [f"data.end_date={before}"])
    run_signal_stage(config, small_demo_dir, folder)
    run_trading_stage(config, folder, folder)
    assert (folder / f"portfolio_{before}.json").exists() and (folder / "signals_output.csv").exists()
    return folder, last, before


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    """A real HTTP listener on loopback; TRENDFLOW_WEBHOOK_URL points at it. Yields the received payloads."""
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    monkeypatch.setenv("TRENDFLOW_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    try:
        yield _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def test_daily_defaults_to_the_latest_session_says_so_and_alerts_with_the_orders(harness, evening, small_demo_dir,
                                                                                tmp_path, capsys, webhook):
    from flows.cli import main

    folder, last, before = evening
    live = _copy(folder, tmp_path / "live")
    assert main(["daily", "--data", str(small_demo_dir), "--out", str(live), "--retry-delay", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "trendflow daily: checking the config, data and snapshot ..."
    assert f"as of {last}, the latest session in {small_demo_dir}" in out
    assert f"resuming from {live / f'portfolio_{before}.json'}" in out
    assert (live / f"orders_{last}.csv").exists() and (live / f"portfolio_{last}.json").exists()
    orders = pd.read_csv(live / f"orders_{last}.csv")
    # one INFO summary: date, every order as side/qty/symbol, breaker, equity, folder
    assert [p["level"] for p in webhook] == ["INFO"]
    text = webhook[0]["text"]
    assert text.startswith(f"[INFO] trendflow daily {last}: ") and f"-- folder {live}" in text
    assert "breaker off" in text or "breaker ON" in text
    assert float(re.search(r"; equity ([\d,]+\.\d\d) --", text).group(1).replace(",", "")) > 0
    for row in orders.itertuples():
        assert f"{row.action} {row.shares} {row.symbol}" in text
    if orders.empty:
        assert "no orders (" in text
    assert "np.str_" not in text and "np.int" not in text


def test_dry_run_prints_the_orders_and_writes_nothing(evening, small_demo_dir, tmp_path, capsys):
    from flows.cli import main

    folder, last, _ = evening
    live = _copy(folder, tmp_path / "live")
    before = _files(live)
    assert main(["daily", "--data", str(small_demo_dir), "--out", str(live), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"dry run -- orders decided at the close of {last}" in out and f"nothing written to {live}" in out
    assert _files(live) == before and not (live / "logs").exists()


def test_portfolio_file_on_daily_and_on_run(harness, evening, small_demo_dir, tmp_path, capsys):
    from flows.cli import main

    folder, last, before = evening
    live = _copy(folder, tmp_path / "live")
    saved = tmp_path / "elsewhere" / f"portfolio_{before}.json"
    saved.parent.mkdir()
    shutil.copy(live / "manifest.json", saved.parent / "manifest.json")  # the snapshot's hash lives in its manifest
    shutil.move(live / f"portfolio_{before}.json", saved)
    assert main(["daily", "--data", str(small_demo_dir), "--out", str(live)]) == 2
    assert f"portfolio snapshot {live / f'portfolio_{before}.json'} does not exist" in capsys.readouterr().err
    assert main(["run", "--mode", "daily", "--data", str(small_demo_dir), "--out", str(live), "--portfolio", str(saved),
                 "--as-of-date", str(last), "--retry-delay", "0"]) == 0
    assert f"resuming from {saved}" in capsys.readouterr().out
    assert (live / f"portfolio_{last}.json").exists()
    assert main(["daily", "--out", str(live), "--portfolio", str(tmp_path / "nope.json")]) == 2
    assert f"error: --portfolio {tmp_path / 'nope.json'}: no such file" in capsys.readouterr().err


def test_fresh_refuses_to_overwrite_a_snapshot_without_force(harness, evening, small_demo_dir, tmp_path, capsys):
    from flows.cli import main

    folder, _, before = evening
    live = _copy(folder, tmp_path / "live")
    kept = (live / f"portfolio_{before}.json").read_bytes()
    args = ["daily", "--data", str(small_demo_dir), "--out", str(live), "--as-of-date", str(before), "--fresh"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"error: --fresh would overwrite {live / f'portfolio_{before}.json'}" in err) and "--force" in err
    assert (live / f"portfolio_{before}.json").read_bytes() == kept
    assert main(args + ["--force", "--retry-delay", "0"]) == 0
    assert (live / f"portfolio_{before}.json").read_bytes() != kept


def test_a_failed_daily_run_leaves_every_earlier_artifact_untouched_and_sends_one_critical(
        harness, evening, small_demo_dir, tmp_path, monkeypatch, capsys, webhook):
    import stages.trading as trading
    from flows.cli import main
    from stages.common.errors import SchemaError

    folder, last, _ = evening
    live = _copy(folder, tmp_path / "live")
    before = _files(live)

    def broken(*args, **kwargs):
        raise SchemaError("orders.csv: column 'shares' has -5 in row 0 (a test fault)")

    monkeypatch.setattr(trading, "run_trading_stage", broken)
    assert main(["daily", "--data", str(small_demo_dir), "--out", str(live), "--retry-delay", "0"]) == 2
    assert "error: orders.csv: column 'shares' has -5" in capsys.readouterr().err
    # the signal stage had replaced signals_output.parquet and retired signals_output.csv: both are back
    assert _files(live) == before
    assert [p["level"] for p in webhook] == ["CRITICAL"]
    text = webhook[0]["text"]
    assert f"trendflow daily run for {last} failed" in text and "column 'shares' has -5 in row 0" in text
    assert text.endswith(f"-- folder {live}") and "\n" not in text


def test_a_run_stopped_before_the_flow_still_sends_one_critical(evening, tmp_path, capsys, webhook):
    from flows.cli import main

    assert main(["daily", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "live")]) == 2
    assert f"--data {tmp_path / 'missing'}: no such file or folder" in capsys.readouterr().err
    assert [p["level"] for p in webhook] == ["CRITICAL"]
    assert "no such file or folder" in webhook[0]["text"] and f"folder {tmp_path / 'live'}" in webhook[0]["text"]


def test_a_failed_backtest_flow_run_sends_one_critical_with_reason_and_folder(harness, tmp_path, webhook):
    from flows.pipeline import trend_pipeline
    from stages.common.errors import ArtifactMissingError

    with pytest.raises(ArtifactMissingError):
        trend_pipeline(out=str(tmp_path), stages=["reporting"], retry_delay_seconds=0)
    assert [p["level"] for p in webhook] == ["CRITICAL"]
    assert "trendflow backtest run failed" in webhook[0]["text"] and "reporting stage needs" in webhook[0]["text"]
    assert f"folder {tmp_path}" in webhook[0]["text"]


def _day(**kw):
    base = dict(tradable=np.array([True, True]), trend_signal=np.array([0, 1]), breaker_on=False, market_drawdown=-0.02)
    return SimpleNamespace(**(base | kw))


def test_a_day_without_orders_says_why():
    from stages.common.config import load_config
    from stages.trading.stage import why_no_orders

    config = load_config(None, ["scoring.rebalance_frequency=5"])
    assert why_no_orders(_day(), 3, config).startswith("not a rebalance day (the next is in 2 session(s))")
    assert why_no_orders(_day(breaker_on=True, market_drawdown=-0.123), 5, config).startswith(
        "the market circuit breaker is on (market -12.3% from its peak)")
    assert why_no_orders(_day(trend_signal=np.array([0, -1])), 10, config).startswith("no symbol has a buy signal")
    assert why_no_orders(_day(), 0, config).startswith("the holdings are already at their targets")
    assert why_no_orders(_day(), 0, config, weights_mode=True) == "no row of target weights for this date"


def test_a_scheduled_run_on_an_exchange_holiday_completes_doing_nothing(harness, tmp_path, monkeypatch, webhook):
    import flows.schedule
    from flows.pipeline import trend_pipeline

    monkeypatch.setattr(flows.schedule, "today_in", lambda timezone: date(2024, 10, 1))  # XSHG: National Day
    summary = trend_pipeline(out=str(tmp_path / "live"), mode="daily", calendar="XSHG", retry_delay_seconds=0)
    assert summary["skipped"] == "2024-10-01" and summary["stages"] == []
    assert not (tmp_path / "live").exists() or not any((tmp_path / "live").iterdir())
    assert webhook == []  # nothing to tell on a holiday
