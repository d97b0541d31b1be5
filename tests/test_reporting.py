"""Reporting: metrics against empyrical and hand-computed cases, signal quality, the HTML report."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.reporting.metrics import (
    beta_alpha,
    closed_trades,
    compute_metrics,
    information_ratio,
    max_drawdown,
    sharpe_ratio,
    sortino_ratio,
    top_drawdowns,
)
from stages.reporting.signal_quality import quintile_returns, rank_ic

empyrical = pytest.importorskip("empyrical")


def _curve(returns: np.ndarray, initial: float = 1_000_000.0) -> pd.DataFrame:
    dates = pd.bdate_range("2020-01-01", periods=len(returns))
    equity = initial * np.cumprod(1 + returns)
    n = len(returns)
    return pd.DataFrame({"date": dates, "equity": equity, "cash": 0.0, "positions_value": equity, "exposure": 1.0,
                         "n_positions": 1, "daily_return": returns, "turnover": 0.0, "costs": 0.0, "breaker_on": False})[:n]


NO_TRADES = pd.DataFrame({"date": pd.to_datetime([]), "symbol": [], "side": [], "quantity": [], "price": [],
                          "commission": [], "slippage": [], "reason": []})


def test_metrics_equal_empyrical():
    rng = np.random.default_rng(7)
    r = rng.normal(0.0004, 0.012, 800)
    b = 0.6 * r + rng.normal(0.0002, 0.008, 800)
    curve = _curve(r)
    bench = pd.Series(b, index=curve["date"])
    m = compute_metrics(curve, NO_TRADES, initial_cash=1_000_000.0, risk_free_rate=0.0252, benchmark_returns=bench)
    rs = pd.Series(r, index=curve["date"])
    rf = 0.0252 / 252
    checks = {
        "cagr": empyrical.annual_return(rs),
        "annual_volatility": empyrical.annual_volatility(rs),
        "sharpe": empyrical.sharpe_ratio(rs, risk_free=rf),
        "sortino": empyrical.sortino_ratio(rs, required_return=rf),
        "max_drawdown": empyrical.max_drawdown(rs),
        "calmar": empyrical.calmar_ratio(rs),
        "beta": empyrical.beta(rs, bench, risk_free=rf),
        "alpha": empyrical.alpha(rs, bench, risk_free=rf),
    }
    for name, expected in checks.items():
        assert m[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert m["total_return"] == pytest.approx(empyrical.cum_returns_final(rs), rel=1e-9)
    assert m["information_ratio"] == pytest.approx(information_ratio(rs, bench, 252))
    assert m["tracking_error"] == pytest.approx(np.std(r - b, ddof=1) * np.sqrt(252), rel=1e-12)


def test_hand_computed_tiny_case():
    r = np.array([0.10, -0.20, 0.05, 0.40])
    curve = _curve(r, 100.0)
    m = compute_metrics(curve, NO_TRADES, initial_cash=100.0)
    assert m["total_return"] == pytest.approx(1.1 * 0.8 * 1.05 * 1.4 - 1)
    assert m["max_drawdown"] == pytest.approx(-0.2)  # 110 -> 88
    dd = top_drawdowns(curve.set_index("date")["equity"], 100.0, 5)[0]
    assert dd.start == curve["date"][0] and dd.trough == curve["date"][1] and dd.recovery == curve["date"][3]
    assert m["best_day"] == pytest.approx(0.40) and m["worst_day"] == pytest.approx(-0.20)
    assert sharpe_ratio(pd.Series(r), 0.0, 252) == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252))
    downside = np.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert sortino_ratio(pd.Series(r), 0.0, 252) == pytest.approx(r.mean() * 252 / (downside * np.sqrt(252)))
    assert max_drawdown(pd.Series([90.0, 95.0]), 100.0) == pytest.approx(-0.1)  # the initial capital is the first peak


def test_closed_trades_win_rate_profit_factor_and_holding():
    log = pd.DataFrame({
        "date": pd.to_datetime(["2020-01-01", "2020-01-11", "2020-01-02", "2020-01-05"]),
        "symbol": ["A", "A", "B", "B"], "side": ["BUY", "SELL", "BUY", "SELL"], "quantity": [100, 100, 100, 100],
        "price": [10.0, 12.0, 10.0, 9.0], "commission": [5.0, 5.0, 5.0, 5.0], "slippage": 0.0, "reason": ["new_entry", "atr_stop", "new_entry", "time_stop"],
    }).sort_values("date")
    trades = closed_trades(log)
    assert sorted(trades["pnl"].round(6).tolist()) == [-110.0, 190.0]
    curve = _curve(np.array([0.0, 0.01]))
    m = compute_metrics(curve, log, initial_cash=1_000_000.0)
    assert m["win_rate"] == 0.5 and m["profit_factor"] == pytest.approx(190 / 110)
    assert m["avg_holding_days"] == pytest.approx((10 + 3) / 2)
    assert m["total_costs"] == 20.0


def test_rank_ic_on_a_constructed_series_with_known_ic():
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=200)
    score = pd.DataFrame(rng.standard_normal((200, 30)), index=dates)
    perfect = score * 0.01
    assert rank_ic(score, perfect).mean() == pytest.approx(1.0)
    assert rank_ic(score, -perfect).mean() == pytest.approx(-1.0)
    noise = pd.DataFrame(rng.standard_normal((200, 30)), index=dates)
    ic = rank_ic(score, noise)
    assert abs(ic.mean()) < 0.05
    q = quintile_returns(score, perfect)
    assert list(q.index) == [1, 2, 3, 4, 5] and q.is_monotonic_increasing


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.svgs, self.external = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svgs += 1
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith(("http", "//")):
                self.external.append(value)


@pytest.fixture(scope="module")
def report_run(small_demo_dir, tmp_path_factory):
    from stages.reporting import run_reporting_stage
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    out = tmp_path_factory.mktemp("report")
    config = load_config()
    run_signal_stage(config, small_demo_dir, out)
    run_trading_stage(config, out, out)
    symbol = pd.read_parquet(out / "prices.parquet")["symbol"].iloc[0]
    run_reporting_stage(config, out, out, benchmark=symbol)
    return out, config


def test_report_is_self_contained_and_holds_every_chart(report_run):
    out, _ = report_run
    html = (out / "report.html").read_text()
    parser = _Collector()
    parser.feed(html)
    assert parser.svgs >= 6 and parser.external == []
    for title in ("Equity vs benchmark", "Underwater", "Monthly returns", "Rolling 126-day", "Exposure", "Monthly turnover",
                  "Top 5 drawdowns", "Trades by exit reason", "Holdings at", "Latest orders", "Signal quality", "Yearly returns"):
        assert title in html, title
    assert html.count("<svg") == html.count("</svg>")
    summary = json.loads((out / "performance_summary.json").read_text())
    assert {"sharpe", "beta", "max_drawdown_start", "win_rate"} <= set(summary["metrics"])
    assert summary["signal_quality"]["ic_20d"]["days"] > 100


def test_report_is_reproducible_byte_for_byte(report_run, tmp_path):
    from stages.reporting import run_reporting_stage

    out, config = report_run
    symbol = pd.read_parquet(out / "prices.parquet")["symbol"].iloc[0]
    run_reporting_stage(config, out, tmp_path, benchmark=symbol)
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()
    assert (tmp_path / "performance_summary.json").read_bytes() == (out / "performance_summary.json").read_bytes()


def test_no_trades_one_day_no_benchmark_gives_a_report_not_a_crash(tmp_path):
    from schemas.trading import EquityCurveSchema, PositionsSchema, TradeLogSchema
    from stages.common.artifacts import stage_run
    from stages.reporting import run_reporting_stage

    positions = pd.DataFrame({c: [] for c in ["date", "symbol", "shares", "close", "market_value", "weight", "entry_date",
                                               "entry_price", "highest_close", "cluster"]})
    with stage_run("trading", tmp_path) as run:
        run.write(_curve(np.array([0.0]))[:1], "equity_curve.parquet", EquityCurveSchema)
        run.write(NO_TRADES, "trade_log.csv", TradeLogSchema)
        run.write(positions, "positions.parquet", PositionsSchema)
    run_reporting_stage(load_config(), tmp_path, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "No trades in this run" in html and "No benchmark configured" in html and "One day of history" in html
    assert "n/a" in html
    summary = json.loads((tmp_path / "performance_summary.json").read_text())
    assert summary["metrics"]["sharpe"] is None


def test_unknown_benchmark_is_a_clear_error(report_run, tmp_path):
    from stages.common.errors import DataError
    from stages.reporting import run_reporting_stage

    out, config = report_run
    with pytest.raises(DataError, match="NOPE"):
        run_reporting_stage(config, out, tmp_path, benchmark="NOPE")
