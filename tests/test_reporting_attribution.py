"""P&L attribution (by symbol and cluster, from fills and marks, summing to the total P&L to 1e-8) and the
provenance block (non-default parameters, data, holdings' last price dates, names.csv)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.common.errors import DataError
from stages.reporting import run_reporting_stage
from stages.reporting.attribution import by_cluster, by_symbol, daily_pnl
from stages.reporting.metrics import round_trips
from stages.reporting.provenance import changed_parameters, holdings_freshness, read_names
from tests.conftest import shared_data_dir
from tests.test_reporting_metrics import make_trades
from tests.test_reporting_report import check_page, demo_run  # noqa: F401 -- the fixture: a signal -> trading -> reporting run


def _positions(rows):
    return pd.DataFrame(rows, columns=["date", "symbol", "market_value", "cluster"]).astype({"date": "datetime64[ns]"})


def test_daily_pnl_by_hand():
    """A: bought 100 @ 10 (+5 commission) on day 0, closes 11 and 12, sold 100 @ 12.5 (-5) on day 3.
    B: bought 10 @ 50 (+1) on day 2, still held at 49 on day 3. A changes cluster on day 2."""
    sessions = pd.bdate_range("2024-01-01", periods=4)
    d = sessions
    trades = make_trades([(d[0], "A", "BUY", 100, 10.0, 5.0, 0.0, "new_entry"), (d[2], "B", "BUY", 10, 50.0, 1.0, 0.0, "new_entry"),
                          (d[3], "A", "SELL", 100, 12.5, 5.0, 0.0, "atr_stop")])
    positions = _positions([(d[0], "A", 1000.0, 1), (d[1], "A", 1100.0, 1), (d[2], "A", 1200.0, 2), (d[2], "B", 500.0, 0),
                            (d[3], "B", 490.0, 0)])
    pnl = daily_pnl(trades, positions, sessions)
    a = pnl[pnl["symbol"] == "A"].set_index("date")
    assert a["pnl"].tolist() == pytest.approx([1000 - 1005, 100, 100, 1250 - 5 - 1200])
    assert a["cluster"].tolist() == [1, 1, 2, 2]  # the selling day goes to the cluster of its last close held
    b = pnl[pnl["symbol"] == "B"]
    assert b["pnl"].tolist() == pytest.approx([500 - 501, -10])
    assert pnl["pnl"].sum() == pytest.approx((1250 - 5 - 1005) + (490 - 501))
    symbols = by_symbol(pnl, round_trips(trades, sessions)).set_index("symbol")
    assert symbols.loc["A", "pnl"] == pytest.approx(240) and symbols.loc["A", "trades"] == 1 and symbols.loc["A", "win_rate"] == 1
    assert symbols.loc["B", "trades"] == 0 and math.isnan(symbols.loc["B", "win_rate"])
    clusters = by_cluster(pnl).set_index("cluster")["pnl"]
    assert clusters.to_dict() == pytest.approx({0: -11.0, 1: 95.0, 2: 145.0})


def _attribution_sums(out):
    curve = pd.read_parquet(out / "equity_curve.parquet")
    trades = pd.read_csv(out / "trade_log.csv", parse_dates=["date", "decision_date"])
    positions = pd.read_parquet(out / "positions.parquet")
    sessions = pd.DatetimeIndex(curve["date"])
    pnl = daily_pnl(trades, positions, sessions)
    initial = load_config().execution.initial_cash
    total = float(curve["equity"].iloc[-1]) - initial
    assert abs(pnl["pnl"].sum() - total) < 1e-8
    assert abs(by_symbol(pnl, round_trips(trades, sessions))["pnl"].sum() - total) < 1e-8
    assert abs(by_cluster(pnl)["pnl"].sum() - total) < 1e-8
    # day by day too: the symbols' P&L of a session is the equity's change that session
    daily = pnl.groupby("date")["pnl"].sum().reindex(sessions, fill_value=0.0).to_numpy()
    change = np.diff(np.r_[initial, curve["equity"].to_numpy()])
    np.testing.assert_allclose(daily, change, rtol=0, atol=1e-8)
    return pnl


def test_attribution_sums_to_the_total_pnl_on_a_demo_run(demo_run):
    out, *_ = demo_run
    pnl = _attribution_sums(out)
    assert pnl["symbol"].nunique() > 5 and (pnl["cluster"] >= 0).any()
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "Top 10 contributors" in text and "Top 10 detractors" in text and "P&amp;L by cluster" in text
    assert 'data-chart="holdings"' in text and "Round trips and P&amp;L by symbol" in text


def test_provenance_lists_changed_parameters_version_and_data(demo_run, tmp_path):
    out, config, symbol, _ = demo_run
    changed = load_config(overrides=["risk.atr_multiplier=2.5", "scoring.buy_top_n=7"])
    assert [(k, v) for k, v, _ in changed_parameters(changed)] == [("risk.atr_multiplier", "2.5"), ("scoring.buy_top_n", "7")]
    assert changed_parameters(config) == []
    many = load_config(overrides=[f"data.symbols={json.dumps([f'S{i}' for i in range(40)])}"])
    assert changed_parameters(many) == [("data.symbols", '["S0", "S1", "S2", "S3", "S4", "S5", ... (40 items)]', "null")]
    text = (out / "report.html").read_text(encoding="utf-8")
    check_page(text)
    assert text.index('id="provenance"') < text.index('id="performance"')  # at the top
    assert config.config_hash() in text and "trendflow version" in text
    from stages.common.artifacts import sha256_file

    assert sha256_file(out / "prices.parquet") in text  # the price data, exactly
    assert "none: every parameter at its default" in text
    prices = pd.read_parquet(out / "prices.parquet", columns=["date", "symbol"])
    assert f'symbols in the price panel</td><td class="t">{prices["symbol"].nunique()}</td>' in text
    assert f"{prices['date'].min().date()} to {prices['date'].max().date()}" in text


def test_provenance_names_the_data_folder_the_signal_stage_read(demo_run, small_demo_dir, tmp_path):
    """The flow runs the reporting stage without --data: the page names the folder from the signal
    stage's manifest record, and a report remade from the saved files names it the same way."""
    out, config, symbol, _ = demo_run
    import shutil

    from stages.common.artifacts import read_manifest

    assert read_manifest(out)["runs"]["signal"]["data_source"] == str(small_demo_dir)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert f'<td class="t">{small_demo_dir}</td>' in text and "not recorded" not in text
    again = tmp_path / "again"
    shutil.copytree(out, again)
    run_reporting_stage(config, again, again, benchmark=symbol)
    assert f'<td class="t">{small_demo_dir}</td>' in (again / "report.html").read_text(encoding="utf-8")


def test_stale_holdings_are_flagged():
    sessions = pd.bdate_range("2024-01-01", periods=10)
    last = pd.Series(pd.to_datetime(["2024-01-12", "2024-01-08"]), index=["A", "B"])
    fresh = holdings_freshness(["A", "B", "C"], last, sessions)
    assert fresh["sessions_behind"].tolist() == [0, 4, 10]  # C has no price at all


def test_names_csv_gives_display_names_and_a_bad_one_is_refused(demo_run, tmp_path):
    out, config, symbol, _ = demo_run
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    held = pd.read_parquet(run / "positions.parquet")
    some = held["symbol"].iloc[-1]
    (run / "names.csv").write_text(f"symbol,name\n{some},沪深300ETF\n", encoding="utf-8")
    run_reporting_stage(config, run, run, benchmark=symbol)
    text = (run / "report.html").read_text(encoding="utf-8")
    assert f"{some} 沪深300ETF" in text and "names.csv (1 symbols)" in text
    assert read_names(run / "names.csv") == {some: "沪深300ETF"}
    (run / "names.csv").write_text("code,label\nA,b\n")
    with pytest.raises(DataError, match="names.csv: expected the columns symbol,name"):
        run_reporting_stage(config, run, run, benchmark=symbol)
    (run / "names.csv").write_text("symbol,name\nA,x\nA,y\n")
    with pytest.raises(DataError, match="listed twice"):
        read_names(run / "names.csv")


def test_real_etfs_attribution_and_stale_holdings(tmp_path):
    """cn_etf: a few files end weeks before the others; a holding in one of them is flagged as stale."""
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    folder = shared_data_dir("cn_etf")
    symbols = sorted(p.stem for p in folder.glob("*.csv"))[:20]
    config = load_config(overrides=[f"data.symbols={json.dumps(symbols)}"])
    run_signal_stage(config, folder, tmp_path)
    run_trading_stage(config, tmp_path, tmp_path)
    run_reporting_stage(config, tmp_path, tmp_path, data=folder)
    _attribution_sums(tmp_path)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    check_page(text)
    assert str(folder) in text
    prices = pd.read_parquet(tmp_path / "prices.parquet", columns=["date", "symbol"])
    last = prices.groupby("symbol")["date"].max()
    positions = pd.read_parquet(tmp_path / "positions.parquet")
    held = positions.loc[positions["date"] == positions["date"].max(), "symbol"]
    stale = [s for s in held if last[s] < prices["date"].max()]
    assert text.count("STALE: valued at an old close") == len(stale)


def test_report_command_with_data_names_the_folder_and_reads_its_names_csv(demo_run, small_demo_dir, tmp_path, capsys):
    """README: `trendflow report --out out/ --data ../shared/data/cn_etf`."""
    import shutil

    from stages.reporting.__main__ import main as report_main

    out, config, symbol, _ = demo_run
    run, data = tmp_path / "out", tmp_path / "prices"
    shutil.copytree(out, run)
    shutil.copytree(small_demo_dir, data)
    (data / "names.csv").write_text(f"symbol,name\n{symbol},演示ETF\n", encoding="utf-8")
    assert report_main(["--out", str(run), "--data", str(data)]) == 0
    text = (run / "report.html").read_text(encoding="utf-8")
    assert f'price data</td><td class="t">{data}</td>' in text and f"{symbol} 演示ETF" in text


def test_distribution_section_states_the_psr_verdict_and_the_new_metrics(demo_run):
    out, *_ = demo_run
    metrics = json.loads((out / "performance_summary.json").read_text())["metrics"]
    text = (out / "report.html").read_text(encoding="utf-8")
    verdict = "significant" if metrics["probabilistic_sharpe"] >= 0.95 else "not significant"
    assert f"{100 * metrics['probabilistic_sharpe']:.1f}% ({verdict} at 95%)" in text
    assert f"{100 * metrics['daily_var_95']:.2f}%" in text and 'data-chart="histogram"' in text
    for key in ("skew", "kurtosis", "tail_ratio", "omega", "win_rate_days", "return_1y"):
        assert metrics[key] is not None, key


@pytest.mark.parametrize("installed", ["missing", "another checkout's"])
def test_the_report_bytes_do_not_depend_on_the_installed_package_metadata(demo_run, tmp_path, monkeypatch, installed):
    """Same inputs + config => the same report.html wherever it runs: the version on the page is the
    running source tree's, not the installed distribution's metadata (which is another checkout's in a
    worktree, and absent while `pip install -e` reinstalls it -- a report made then differed)."""
    import importlib.metadata
    import shutil
    import tomllib
    from pathlib import Path

    from stages.common.version import VERSION

    out, config, symbol, _ = demo_run
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert VERSION == pyproject["project"]["version"]
    assert f'trendflow version</td><td class="t">{VERSION}</td>' in (out / "report.html").read_text(encoding="utf-8")

    def metadata_version(name):
        if installed == "missing":
            raise importlib.metadata.PackageNotFoundError(name)
        return "9.9.9"

    monkeypatch.setattr(importlib.metadata, "version", metadata_version)
    again = tmp_path / "again"
    shutil.copytree(out, again)
    run_reporting_stage(config, again, again, benchmark=symbol)
    for name in ("report.html", "performance_summary.json", "performance_summary.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
