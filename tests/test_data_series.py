"""Benchmark and market index are series, not holdings: used on their own sessions only, never carried
past their last close; --market-data gives the circuit breaker an index that is not traded or ranked."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.common.errors import ConfigError
from stages.reporting import run_reporting_stage
from stages.reporting.metrics import beta, total_return
from stages.signal import run_signal_stage
from stages.trading.market import market_drawdown
from tests.conftest import shared_data_dir
from tests.test_reporting_metrics import make_curve, make_trades
from tests.test_reporting_report import _write_trading_artifacts


def test_a_benchmark_that_ends_early_is_never_forward_filled(tmp_path):
    rng = np.random.default_rng(5)
    r = np.r_[0.0, rng.normal(0.0005, 0.01, 59)]
    curve = make_curve(r)
    _write_trading_artifacts(tmp_path, curve, make_trades([]))
    dates = pd.DatetimeIndex(curve["date"])
    kept = np.r_[0:12, 13:30]  # ends after session 30, and misses session 12 (no fake 0% day there either)
    closes = 10.0 * np.cumprod(1 + rng.normal(0.0003, 0.012, 60))
    bench = pd.DataFrame({"date": dates[kept], "open": closes[kept], "high": closes[kept] * 1.01,
                          "low": closes[kept] * 0.99, "close": closes[kept], "volume": 1000.0})
    bench.to_csv(tmp_path / "INDEX.csv", index=False)
    run_reporting_stage(load_config(), tmp_path, tmp_path, benchmark=str(tmp_path / "INDEX.csv"))
    summary = json.loads((tmp_path / "performance_summary.json").read_text())
    m = summary["metrics"]
    assert m["benchmark_days"] == 29
    own = pd.Series(closes[kept], index=dates[kept]).pct_change()
    own.iloc[0] = 0.0
    strategy = curve.set_index("date")["daily_return"]
    assert m["benchmark_total_return"] == pytest.approx(closes[29] / closes[0] - 1, rel=1e-12)
    assert m["beta"] == pytest.approx(beta(strategy.reindex(own.index), own, 0.0), rel=1e-9)
    assert total_return(own) == pytest.approx(m["benchmark_total_return"], rel=1e-12)
    note = next(n for n in summary["notes"] if n.startswith("Benchmark INDEX.csv"))
    assert f"to {dates[29].date()}" in note and "29 of 60 sessions" in note and "common sessions only" in note
    assert "never carried forward" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_a_market_index_symbol_is_not_carried_past_its_last_close():
    a = np.array([100, 110, 120, 100, np.nan, np.nan], dtype=float)  # A's data ends on day 3
    close = np.column_stack([a, np.full(6, 50.0)])
    config = load_config(None, ['data.market_index_symbol="A"', "risk.circuit_breaker_lookback=3"])
    drawdown = market_drawdown(close, np.array(["A", "B"]), config)
    np.testing.assert_allclose(drawdown, [0, 0, 0, 100 / 120 - 1, 0, 0])  # after its end: no index, breaker off
    gap = np.array([100, np.nan, 90, 95], dtype=float)  # a missing day inside its range keeps the last close
    within = market_drawdown(np.column_stack([gap, np.full(4, 5.0)]), np.array(["A", "B"]), config)
    np.testing.assert_allclose(within, [0, 0, -0.1, -0.05])


def test_market_data_file_drives_the_breaker_without_being_traded_or_ranked(tmp_path, monkeypatch):
    import shlex
    from pathlib import Path

    from flows.cli import main

    folder = shared_data_dir("cn_etf")
    index_file = folder / "510880.SH.csv"
    universe = tmp_path / "universe"
    universe.mkdir()
    for path in sorted(folder.glob("15*.csv"))[:12]:
        (universe / path.name).write_bytes(path.read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(folder.parents[1], target_is_directory=True)  # ../shared as beside the project
    out = work / "out"
    run_signal_stage(load_config(), universe, out)
    monkeypatch.chdir(work)
    line = "trendflow trade --out out/ --market-data ../shared/data/cn_etf/510880.SH.csv"
    assert line in (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert main(shlex.split(line)[1:] + ["--log-level", "ERROR"]) == 0
    curve = pd.read_parquet(out / "equity_curve.parquet")
    index = pd.read_csv(index_file, parse_dates=["date"]).set_index("date")["close"]
    level = index.reindex(curve["date"]).ffill()
    level[curve["date"].to_numpy() > index.index[-1]] = np.nan
    peak = level.rolling(60, min_periods=1).max()
    expected = (level / peak - 1).fillna(0.0).to_numpy()
    np.testing.assert_allclose(curve["market_drawdown"], expected, rtol=1e-12, atol=1e-15)
    assert curve["breaker_on"].any()  # the index fell more than 10% from a 60-day peak at least once
    symbol = index_file.name[:-4]
    trades = pd.read_csv(out / "trade_log.csv")
    assert symbol not in set(trades["symbol"]) and symbol not in set(pd.read_parquet(out / "prices.parquet")["symbol"])
    with pytest.raises(ConfigError, match="give one"):
        market_drawdown(np.ones((2, 1)), np.array(["A"]),
                        load_config(None, [f"risk.market_data={index_file}", 'data.market_index_symbol="A"']),
                        pd.DatetimeIndex(curve["date"][:2]))
