"""The daily run: pending-order semantics, --fresh, every way a snapshot can be wrong, the command
line (--dry-run writes nothing; `trendflow trade` is the same command)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from schemas.trading import OrdersSchema, PortfolioSnapshot
from stages.common.artifacts import read_artifact, stage_run
from stages.common.config import load_config
from stages.common.errors import ConfigError, DataError, SnapshotError
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage
from stages.trading.__main__ import build_parser, main
from stages.trading.backtest import fold
from stages.trading.market import build_market
from stages.trading.snapshot import to_snapshot


@pytest.fixture(scope="module")
def signals_dir(small_demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trading_daily_inputs")
    config = load_config()
    run_signal_stage(config, small_demo_dir, out)
    market = build_market(pd.read_parquet(out / "prices.parquet"), pd.read_parquet(out / "signals_output.parquet"), config)
    return out, config, market


@pytest.fixture()
def work(signals_dir, tmp_path):
    """A folder with the signal stage's outputs, ready for trading runs."""
    src, config, market = signals_dir
    for name in ("prices.parquet", "signals_output.parquet", "manifest.json"):
        shutil.copy(src / name, tmp_path / name)
    return tmp_path, config, market


def save_snapshot(folder: Path, market, config, t: int) -> Path:
    """The backtest's state after the close of day t, saved as portfolio_{D}.json."""
    result = fold(market, config, end=t + 1)
    name = f"portfolio_{market.dates[t].date()}.json"
    with stage_run("trading", folder) as run:
        run.write_json(to_snapshot(result.state, market, t, config, "signals"), name, PortfolioSnapshot)
    return folder / name


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- pending orders
def test_orders_decided_at_the_previous_close_are_filled_at_this_open(work):
    folder, config, market = work
    full = fold(market, config)
    buys = full.trade_log[(full.trade_log["side"] == "BUY") & (full.trade_log["reason"] == "new_entry")]
    fill = buys.iloc[len(buys) // 2]
    t = market.index_of(fill["date"])
    snapshot = json.loads(save_snapshot(folder, market, config, t - 1).read_text())
    pending = {(o["symbol"], o["side"]) for o in snapshot["pending_orders"]}
    assert (fill["symbol"], "BUY") in pending and fill["symbol"] not in snapshot["holdings"]
    assert {o["decision_date"] for o in snapshot["pending_orders"]} <= {str(market.dates[t - 1].date())}

    run_trading_stage(config, folder, folder, as_of_date=market.dates[t].date())
    after = json.loads((folder / f"portfolio_{market.dates[t].date()}.json").read_text())
    holding = after["holdings"][fill["symbol"]]
    open_t = market.open[t, list(market.symbols).index(fill["symbol"])]
    assert holding["entry_date"] == str(market.dates[t].date()) and holding["shares"] == fill["quantity"]
    assert holding["entry_price"] == pytest.approx(open_t * (1 + config.execution.slippage_bps / 1e4), rel=1e-12)
    assert holding["entry_price"] == pytest.approx(fill["price"], rel=1e-12)
    orders = read_artifact(folder / f"orders_{market.dates[t].date()}.csv", OrdersSchema)
    assert [(o["symbol"], o["side"], o["shares"]) for o in after["pending_orders"]] == list(
        orders[["symbol", "action", "shares"]].itertuples(index=False, name=None))


def test_fresh_start_is_explicit_and_starts_from_cash(work):
    folder, config, market = work
    day = market.dates[400].date()
    result = run_trading_stage(config, folder, folder, as_of_date=day, fresh=True)
    snapshot = json.loads((folder / f"portfolio_{day}.json").read_text())
    assert snapshot["holdings"] == {} and snapshot["cash"] == config.execution.initial_cash
    assert snapshot["trading_day_index"] == 1 and result.summary["fills_today"] == 0
    orders = read_artifact(folder / f"orders_{day}.csv", OrdersSchema)
    assert len(orders) > 0 and set(orders["reason"]) == {"new_entry"}  # day 0 of a portfolio is a rebalance day
    assert len(snapshot["pending_orders"]) == len(orders)


# --------------------------------------------------------------------------- refused snapshots
def _day_and_snapshot(folder, market, config, t=300):
    path = save_snapshot(folder, market, config, t - 1)
    return market.dates[t].date(), path, json.loads(path.read_text())


def _write_elsewhere(tmp_path: Path, payload) -> Path:
    path = tmp_path / "elsewhere" / "snapshot.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_a_missing_snapshot_is_an_error_not_an_empty_portfolio(work):
    folder, config, market = work
    day = market.dates[300].date()
    before = files(folder)
    with pytest.raises(SnapshotError, match=r"portfolio_.*does not exist.*--fresh"):
        run_trading_stage(config, folder, folder, as_of_date=day)
    assert files(folder) == before


@pytest.mark.parametrize("damage, message", [
    (lambda s: '{"version": 2, "as_of_date": "2016-01-01", "cash": ', "not valid JSON"),
    (lambda s: "\xff\xfe garbage", "not valid JSON"),
    (lambda s: [1, 2], "format version None"),
    (lambda s: {**s, "version": 1}, "format version 1"),
    (lambda s: {**s, "cash": -5.0}, "'cash'"),
    (lambda s: {k: v for k, v in s.items() if k != "holdings"}, "'holdings'"),
    (lambda s: {**s, "cash": s["cash"] + 1000.0}, "total_value"),
    (lambda s: {**s, "surprise": 1}, "'surprise'"),
])
def test_a_damaged_snapshot_is_refused(work, tmp_path, damage, message):
    folder, config, market = work
    day, _, snapshot = _day_and_snapshot(folder, market, config)
    path = _write_elsewhere(tmp_path, damage(snapshot))
    before = files(folder)
    with pytest.raises(SnapshotError, match=message):
        run_trading_stage(config, folder, folder, as_of_date=day, portfolio=path)
    assert files(folder) == before


def test_a_snapshot_edited_after_it_was_written_is_refused(work):
    folder, config, market = work
    day, path, snapshot = _day_and_snapshot(folder, market, config)
    snapshot["peak_equity"] *= 2  # still valid by the schema; the manifest's sha256 no longer matches
    path.write_text(json.dumps(snapshot))
    with pytest.raises(SnapshotError, match="damaged.*changed after"):
        run_trading_stage(config, folder, folder, as_of_date=day)


def test_a_snapshot_of_another_day_is_refused(work, tmp_path):
    folder, config, market = work
    day, _, snapshot = _day_and_snapshot(folder, market, config)
    older = _write_elsewhere(tmp_path, snapshot)
    with pytest.raises(SnapshotError, match="trading day before this run is"):
        run_trading_stage(config, folder, folder, as_of_date=market.dates[305].date(), portfolio=older)


def test_a_snapshot_made_under_other_trading_settings_is_refused(work):
    folder, config, market = work
    day, _, _ = _day_and_snapshot(folder, market, config)
    other = load_config(None, ["risk.atr_multiplier=3.5"])
    with pytest.raises(SnapshotError, match="different trading settings"):
        run_trading_stage(other, folder, folder, as_of_date=day)
    # a setting that only changes reporting does not invalidate it
    run_trading_stage(load_config(None, ["reporting.risk_free_rate=0.02"]), folder, folder, as_of_date=day)


def test_a_signal_mode_snapshot_is_refused_in_weights_mode(work, tmp_path):
    folder, config, market = work
    day, _, _ = _day_and_snapshot(folder, market, config)
    weights = tmp_path / "w.csv"
    weights.write_text(f"date,{market.symbols[0]}\n{day},0.5\n")
    with pytest.raises(SnapshotError, match="signals mode, this run is in weights mode"):
        run_trading_stage(config, folder, folder, as_of_date=day, weights=weights)


def test_a_snapshot_holding_an_unknown_symbol_is_refused(work, tmp_path):
    folder, config, market = work
    day, _, snapshot = _day_and_snapshot(folder, market, config)
    held = next(iter(snapshot["holdings"]))
    snapshot["holdings"]["999999.XX"] = snapshot["holdings"].pop(held)
    snapshot["pending_orders"] = [o for o in snapshot["pending_orders"] if o["symbol"] != held]
    with pytest.raises(SnapshotError, match=r"not in prices.parquet: \['999999.XX'\]"):
        run_trading_stage(config, folder, folder, as_of_date=day, portfolio=_write_elsewhere(tmp_path, snapshot))


def test_misused_daily_flags_are_errors(work):
    folder, config, market = work
    with pytest.raises(SnapshotError, match="first trading day"):
        run_trading_stage(config, folder, folder, as_of_date=market.dates[0].date())
    with pytest.raises(ConfigError, match="contradict"):
        run_trading_stage(config, folder, folder, as_of_date=market.dates[5].date(), fresh=True, portfolio="x.json")
    with pytest.raises(ConfigError, match="--as-of-date"):
        run_trading_stage(config, folder, folder, fresh=True)
    with pytest.raises(DataError, match="not a trading day"):
        run_trading_stage(config, folder, folder, as_of_date=pd.Timestamp("2030-01-01").date(), fresh=True)


# --------------------------------------------------------------------------- command line
def test_dry_run_is_off_by_default_and_writes_nothing_when_on(work, capsys):
    folder, config, market = work
    assert build_parser().parse_args(["--out", "x"]).dry_run is False
    assert build_parser().parse_args(["--out", "x", "--dry-run"]).dry_run is True
    before = files(folder)
    assert main(["--out", str(folder), "--dry-run"]) == 0
    assert files(folder) == before  # not even manifest.json changes
    assert "dry run -- orders decided at the close of" in capsys.readouterr().out
    day = market.dates[400].date()
    assert main(["--out", str(folder), "--as-of-date", str(day), "--fresh", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert files(folder) == before and "new_entry" in printed
    assert main(["--out", str(folder)]) == 0
    assert {"trade_log.csv", "allocation_history.csv", "positions.parquet", "positions.csv", "equity_curve.parquet",
            "equity_curve.csv", f"orders_{market.dates[-1].date()}.csv", f"portfolio_{market.dates[-1].date()}.json"} <= set(files(folder))


def test_trendflow_trade_runs_the_same_command(work, tmp_path, capsys):
    from flows.cli import main as trendflow

    folder, config, market = work
    out = tmp_path / "out"
    assert trendflow(["trade", "--in", str(folder), "--out", str(out)]) == 0
    assert main(["--out", str(folder)]) == 0
    assert (out / "trade_log.csv").read_bytes() == (folder / "trade_log.csv").read_bytes()
    day = market.dates[100].date()
    assert trendflow(["trade", "--in", str(folder), "--out", str(out), "--as-of-date", str(day)]) == 2
    assert "error:" in capsys.readouterr().err
    assert trendflow(["trade", "--in", str(folder), "--out", str(out), "--fresh"]) == 2  # --fresh needs --as-of-date


def test_missing_inputs_are_named(tmp_path, capsys):
    assert main(["--in", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "prices.parquet does not exist" in capsys.readouterr().err


def test_readme_market_preset_command_runs_as_written(work, capsys):
    """README, 'Market rules and presets': trendflow trade --out out/ --set market.preset=cn_etf"""
    from flows.cli import main as trendflow

    folder, _, _ = work
    assert trendflow(["trade", "--out", str(folder), "--set", "market.preset=cn_etf"]) == 0
    preset = load_config(None, ["market.preset=cn_etf"])
    assert preset.market.price_limits and preset.execution.max_volume_share == 0.1
    assert preset.config_hash() in (folder / "manifest.json").read_text()  # the run used the preset's settings
    assert (folder / "trade_log.csv").exists()
