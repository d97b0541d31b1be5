"""The older Python API: trendflow.run_daily_signal returns what `trendflow daily` decides, in the
older result dict; trendflow.load_portfolio reads both snapshot shapes."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import trendflow
from stages.common.errors import SnapshotError


@pytest.fixture(scope="module")
def days(small_demo_dir):
    any_file = sorted(small_demo_dir.glob("*.csv"))[0]
    dates = pd.read_csv(any_file)["date"].tolist()
    return dates[300], dates[301], dates[302]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def daily(harness, small_demo_dir, days, tmp_path_factory):
    """`trendflow daily` for two sessions (the first from cash) into one folder."""
    from flows.pipeline import daily_main

    out = tmp_path_factory.mktemp("daily")
    assert daily_main(["--as-of-date", days[0], "--fresh", "--data", str(small_demo_dir), "--out", str(out),
                       "--log-level", "WARNING"]) == 0
    assert daily_main(["--as-of-date", days[1], "--data", str(small_demo_dir), "--out", str(out),
                       "--log-level", "WARNING"]) == 0
    return out


def _older_snapshot(snapshot: dict) -> dict:
    """signal_pipeline's shape of a trendflow snapshot."""
    return {
        "as_of_date": snapshot["as_of_date"], "cash": snapshot["cash"], "total_value": snapshot["total_value"],
        "holdings": {s: {"shares": h["shares"], "cost_basis": h["entry_price"], "entry_date": h["entry_date"]}
                     for s, h in snapshot["holdings"].items()},
        "cluster_assignments": snapshot["cluster_assignments"],
        "metadata": {"last_update": f"{snapshot['as_of_date']}T16:00:00"},
    }


def _orders(path) -> list[dict]:
    return pd.read_csv(path, dtype={"symbol": str}).to_dict(orient="records")


@pytest.mark.prefect
def test_run_daily_signal_returns_the_orders_of_trendflow_daily(daily, days, small_demo_dir, tmp_path):
    first, second, _ = days
    mine = tmp_path / "api"
    result = trendflow.run_daily_signal(None, first, None, None, str(mine), dry_run=False, data=str(small_demo_dir))
    assert result["orders"] == _orders(daily / f"orders_{first}.csv") and result["orders"]
    assert (mine / f"orders_{first}.csv").read_bytes() == (daily / f"orders_{first}.csv").read_bytes()
    meta = result["metadata"]
    assert meta["num_buy_orders"] == sum(o["action"] == "BUY" for o in result["orders"]) > 0
    assert meta["num_buy_signals"] == sum(v == 1 for v in result["signals"].values())
    assert result["result"]["metadata"] == meta and result["circuit_breaker"] in (True, False)
    assert set(result["signals"]) == set(pd.read_csv(daily / f"signals_{first}.csv")["symbol"])
    # the next session resumes from the snapshot in output_dir, like `trendflow daily`
    again = trendflow.run_daily_signal(None, second, None, None, str(mine), dry_run=False, data=str(small_demo_dir))
    assert again["orders"] == _orders(daily / f"orders_{second}.csv")
    assert again["portfolio"] == json.loads((daily / f"portfolio_{second}.json").read_text())
    # a dry run from a given snapshot writes nothing
    dry = tmp_path / "dry"
    result = trendflow.run_daily_signal(None, second, str(daily / f"portfolio_{first}.json"), None, str(dry),
                                        data=str(small_demo_dir))
    assert result["orders"] == _orders(daily / f"orders_{second}.csv") and result["output_files"] == {}
    assert not dry.exists()
    # market_data_path is the breaker's index file, as --market-data FILE (risk.market_data)
    index = sorted(small_demo_dir.glob("*.csv"))[0]
    indexed = tmp_path / "indexed"
    trendflow.run_daily_signal(None, first, None, str(index), str(indexed), dry_run=False, data=str(small_demo_dir))
    manifest = json.loads((indexed / "manifest.json").read_text())
    made_with = manifest["lineage"][manifest["artifacts"][f"orders_{first}.csv"]["lineage"]["keys_hash"]]["config"]
    assert made_with["risk.market_data"] == str(index)


@pytest.mark.prefect
def test_load_portfolio_reads_both_shapes(daily, days, small_demo_dir, tmp_path):
    first, second, third = days
    current = trendflow.load_portfolio(daily / f"portfolio_{first}.json")
    assert current.holdings or current.pending_orders
    held = json.loads((daily / f"portfolio_{second}.json").read_text())
    assert held["holdings"]
    older = _older_snapshot(held)
    (tmp_path / "older.json").write_text(json.dumps(older))
    prices = pd.read_parquet(daily / "prices.parquet", columns=["date", "symbol", "close"])
    converted = trendflow.load_portfolio(tmp_path / "older.json", prices=prices)
    assert converted.cluster_assignments == held["cluster_assignments"]
    for symbol, h in held["holdings"].items():
        c = converted.holdings[symbol]
        assert (c.shares, c.entry_price, str(c.entry_date), c.last_close, c.cluster) == (
            h["shares"], h["entry_price"], h["entry_date"], h["last_close"], held["cluster_assignments"].get(symbol, -1))
    assert converted.cash == held["cash"] and converted.pending_orders == []
    # the older snapshot is accepted by run_daily_signal for the next session (its holdings carried on)
    result = trendflow.run_daily_signal(None, third, str(tmp_path / "older.json"), None, str(tmp_path / "o"),
                                        data=str(small_demo_dir))
    assert set(result) >= {"signals", "orders", "metadata", "circuit_breaker"}
    assert set(result["portfolio"]["holdings"]) | {o["symbol"] for o in result["orders"]} >= set(held["holdings"])
    (tmp_path / "bad.json").write_text(json.dumps({"as_of_date": second, "cash": 1.0, "holdings": {"A": {"shares": 100}}}))
    with pytest.raises(SnapshotError, match="bad.json .older shape. cannot be converted"):
        trendflow.load_portfolio(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(SnapshotError, match="neither a trendflow snapshot"):
        trendflow.load_portfolio(tmp_path / "junk.json")


@pytest.mark.prefect
def test_signal_pipelines_command_line_habit_runs_as_trendflow_daily(daily, days, small_demo_dir, tmp_path):
    from flows.pipeline import daily_main

    _, second, third = days
    old_config = Path(__file__).parent / "fixtures" / "signal_pipeline_config.json"
    (tmp_path / "portfolio_old.json").write_text(json.dumps(_older_snapshot(
        json.loads((daily / f"portfolio_{second}.json").read_text()))))
    index = sorted(small_demo_dir.glob("*.csv"))[0]
    out = tmp_path / "signals"
    assert daily_main(["--config", str(old_config), "--as-of-date", third, "--portfolio", str(tmp_path / "portfolio_old.json"),
                       "--output-dir", str(out), "--no-dry-run", "--log-level", "WARNING", "--market-data", str(index),
                       "--data", str(small_demo_dir)]) == 0
    assert (out / f"orders_{third}.csv").exists() and (out / f"portfolio_{third}.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    made_with = manifest["lineage"][manifest["artifacts"][f"orders_{third}.csv"]["lineage"]["keys_hash"]]["config"]
    assert made_with["risk.market_data"] == str(index)
    signals_with = manifest["lineage"][manifest["artifacts"]["signals_output.parquet"]["lineage"]["keys_hash"]]["config"]
    assert signals_with["strategy.name"] == "macd"  # the older config, converted
