"""The quality gate on real files: ended series are sold (data_ended), stale holdings stop a daily run,
split-like jumps in unadjusted prices are warnings naming symbol and date."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_data_dir
from schemas.data import DataQualitySchema
from stages.common.artifacts import read_artifact
from stages.common.config import load_config
from stages.common.errors import DataError
from stages.data.quality import detect_jumps, limit_band, quality_report
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage


def test_limit_bands_follow_the_board():
    assert limit_band("600000.SH") == 0.10 and limit_band("000001.SZ") == 0.10 and limit_band("510300.SH") == 0.10
    assert limit_band("300750.SZ") == 0.20 and limit_band("688981.SH") == 0.20 and limit_band("588000.SH") == 0.20
    assert limit_band("159915.SZ") == 0.20  # an ETF on ChiNext's index
    assert limit_band("SPY") == 0.40


def test_a_split_in_unadjusted_prices_is_a_jump_but_a_limit_move_on_chinext_is_not():
    dates = pd.bdate_range("2024-01-01", periods=4)
    prices = pd.DataFrame({
        "date": list(dates) * 2,
        "symbol": ["300001.SZ"] * 4 + ["600001.SH"] * 4,
        "close": [10.0, 11.99, 14.38, 14.0, 20.0, 20.5, 10.3, 10.4],  # ChiNext +19.9% +19.9%; main board 2-for-1 split
    })
    jumps = detect_jumps(prices)
    assert list(zip(jumps["symbol"], jumps["date"])) == [("600001.SH", dates[2])]
    assert jumps["move"].iat[0] == pytest.approx(10.3 / 20.5 - 1)


@pytest.fixture(scope="module")
def etf_backtest(tmp_path_factory):
    """The real CN ETF folder, where 13 files end 2025-06-13, 106 on 2025-07-04 and one runs a year longer."""
    folder = shared_data_dir("cn_etf")
    out = tmp_path_factory.mktemp("ended")
    config = load_config()
    run_signal_stage(config, folder, out)
    run_trading_stage(config, out, out)
    return out, config


def test_holdings_in_series_that_end_early_are_sold_data_ended_within_the_configured_sessions(etf_backtest):
    out, config = etf_backtest
    n = config.risk.data_ended_sessions
    prices = pd.read_parquet(out / "prices.parquet")
    sessions = pd.DatetimeIndex(np.unique(prices["date"]))
    last = prices.groupby("symbol")["date"].max()
    trades = pd.read_csv(out / "trade_log.csv", parse_dates=["date", "decision_date"])
    positions = pd.read_parquet(out / "positions.parquet")
    ended = trades[trades["reason"] == "data_ended"]
    assert len(ended) >= 5  # the portfolio was fully invested when most files stopped on 2025-07-04
    for row in ended.itertuples():
        # sold on the n-th panel session after its last row, at that last close less slippage
        assert sessions.get_loc(row.date) - sessions.get_loc(last[row.symbol]) == n
        last_close = prices[(prices["symbol"] == row.symbol) & (prices["date"] == last[row.symbol])]["close"].iat[0]
        assert row.price == pytest.approx(last_close * (1 - config.execution.slippage_bps / 1e4), rel=1e-12)
    # no holding is ever carried more than n sessions past its data
    gap = np.array([sessions.get_loc(d) for d in positions["date"]]) - np.array(
        [sessions.get_loc(last[s]) for s in positions["symbol"]])
    assert gap.max() < n
    # after 2025-07-04 + n sessions only the one long-running bond ETF could be held
    late = positions[positions["date"] > sessions[sessions.get_loc(pd.Timestamp("2025-07-04")) + n]]
    assert set(late["symbol"]) <= set(last[last > pd.Timestamp("2025-07-04")].index)
    # and the gate says so, in its artifact and on the report page
    from stages.reporting import run_reporting_stage

    run_reporting_stage(config, out, out)
    notes = json.loads((out / "performance_summary.json").read_text())["notes"]
    assert any(n.startswith("Data quality gate (data_quality.csv): 119 ended series") for n in notes)
    assert "Data quality gate" in (out / "report.html").read_text(encoding="utf-8")
    quality = read_artifact(out / "data_quality.csv", DataQualitySchema)
    ended_rows = quality[quality["check"] == "ended"]
    assert set(ended["symbol"]) <= set(ended_rows["symbol"])
    assert (ended_rows["severity"] == "WARNING").all()


def test_a_daily_run_with_stale_files_fails_naming_the_stale_holdings(tmp_path, capsys):
    folder = shared_data_dir("cn_etf")
    files = sorted(folder.glob("*.csv"))[:40]
    config = load_config(None, ["data.end_date=2025-07-03"])
    out = tmp_path / "out"
    # backtest on 40 real files up to 2025-07-03, then the evening of 2025-07-04 with the holdings' files not updated
    full = tmp_path / "full"
    full.mkdir()
    for path in files:
        (full / path.name).write_bytes(path.read_bytes())
    run_signal_stage(config, full, out)
    run_trading_stage(config, out, out)
    snapshot = json.loads((out / "portfolio_2025-07-03.json").read_text())
    held = sorted(snapshot["holdings"])
    assert held, "the backtest should hold something on 2025-07-03"
    stale = tmp_path / "stale"
    stale.mkdir()
    for path in files:
        frame = pd.read_csv(path)
        if path.name[:-4] in held:
            frame = frame[frame["date"] <= "2025-07-03"]
        frame.to_csv(stale / path.name, index=False)
    daily = load_config()
    day = pd.Timestamp("2025-07-04").date()
    run_signal_stage(daily, stale, out, as_of_date=day)
    quality = read_artifact(out / "data_quality.csv", DataQualitySchema)
    flagged = quality[(quality["check"] == "freshness") & (quality["severity"] == "WARNING")]
    assert set(held) <= set(flagged["symbol"])  # (and the files that ended 2025-06-13)
    with pytest.raises(DataError) as failure:
        run_trading_stage(daily, out, out, as_of_date=day)
    message = str(failure.value)
    assert "stale" in message and all(f"{s} (last price 2025-07-03)" in message for s in held)
    assert not (out / "orders_2025-07-04.csv").exists()
    from flows.cli import main

    assert main(["trade", "--out", str(out), "--as-of-date", "2025-07-04", "--log-level", "ERROR"]) == 2
    assert held[0] in capsys.readouterr().err
    # the user may let them through: their last close is carried
    run_trading_stage(daily, out, out, as_of_date=day, allow_stale=True)
    assert (out / "orders_2025-07-04.csv").exists()


def test_unadjusted_split_data_gives_a_warning_naming_symbol_and_date(tmp_path, caplog):
    folder = shared_data_dir("cn_ashare")
    config = load_config(None, ['data.symbols=["300858.SZ","600348.SH","000593.SZ"]'])
    with caplog.at_level(logging.WARNING, logger="stages.data.quality"):
        run_signal_stage(config, folder, tmp_path)
    quality = read_artifact(tmp_path / "data_quality.csv", DataQualitySchema)
    jumps = quality[quality["check"] == "jump"]
    found = set(zip(jumps["symbol"], jumps["date"].dt.strftime("%Y-%m-%d")))
    assert {("300858.SZ", "2021-07-02"), ("300858.SZ", "2023-06-30"), ("600348.SH", "2023-06-16")} <= found
    assert (jumps["severity"] == "WARNING").all()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("300858.SZ" in m and "2021-07-02" in m for m in logged)


def test_the_gate_reads_no_network_and_marks_every_symbol(tmp_path):
    dates = pd.bdate_range("2025-03-03", periods=30)
    prices = pd.DataFrame({"date": list(dates) + list(dates[:10]), "symbol": ["A.SH"] * 30 + ["B.SH"] * 10,
                           "close": 1.0})
    report = quality_report(prices, as_of=None, ended_sessions=5)
    assert set(report["symbol"]) == {"A.SH", "B.SH"}
    b = report[report["symbol"] == "B.SH"].iloc[0]
    assert b["check"] == "ended" and b["value"] >= 5
    DataQualitySchema.validate(report)


def test_close_only_files_run_end_to_end_with_fills_at_the_close(tmp_path):
    from stages.common.errors import ConfigError
    from stages.reporting import run_reporting_stage

    folder = shared_data_dir("cn_etf")
    data = tmp_path / "close_only"
    data.mkdir()
    for path in sorted(folder.glob("*.csv"))[:8]:  # real prices, reduced to what many free sources give
        pd.read_csv(path)[["date", "close"]].to_csv(data / path.name, index=False)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="execution.fill_price.*set execution.fill_price=close"):
        run_signal_stage(load_config(), data, out)
    with pytest.raises(ConfigError, match="strategy.filters.adx_enabled.*high and low"):
        run_signal_stage(load_config(None, ["execution.fill_price=close", "strategy.filters.adx_enabled=true"]), data, out)
    config = load_config(None, ["execution.fill_price=close"])
    run_signal_stage(config, data, out)
    run_trading_stage(config, out, out)
    run_reporting_stage(config, out, out)
    prices = pd.read_parquet(out / "prices.parquet")
    assert (prices["open"] == prices["close"]).all() and (prices["low"] == prices["close"]).all()
    quality = read_artifact(out / "data_quality.csv", DataQualitySchema)
    assert set(quality.loc[quality["check"] == "close_only", "symbol"]) == set(prices["symbol"])
    # ATR from close-to-close moves: Wilder's average of |C - C_prev| (TA-Lib with high = low = close)
    talib = pytest.importorskip("talib")
    signals = pd.read_parquet(out / "signals_output.parquet", columns=["date", "symbol", "atr"])
    symbol = prices["symbol"].iat[0]
    close = prices.loc[prices["symbol"] == symbol, "close"].to_numpy()
    expected = talib.ATR(close, close, close, timeperiod=config.risk.atr_window)
    got = signals.loc[signals["symbol"] == symbol, "atr"].to_numpy()
    np.testing.assert_allclose(got[50:], expected[50:], rtol=1e-9)
    trades = pd.read_csv(out / "trade_log.csv", parse_dates=["date", "decision_date"])
    assert len(trades) > 10 and (trades["date"] == trades["decision_date"]).all()  # filled at the signal close
    assert (out / "report.html").exists()


def test_the_terminal_shows_counts_by_check_and_a_few_of_each_so_a_jump_is_not_hidden(caplog):
    """40 ended series and 2 split jumps: one line counts them by check, at most 5 of each are shown
    (the jumps among them, not drowned by the ended series), and the rest is one line."""
    dates = pd.bdate_range("2024-01-01", periods=40)
    ended = [pd.DataFrame({"date": dates[:5], "symbol": f"51{i:04d}.SH", "close": 1.0}) for i in range(40)]
    split = pd.DataFrame({"date": dates, "symbol": "600000.SH", "close": [2.0] * 10 + [1.0] * 20 + [0.5] * 10})
    prices = pd.concat([*ended, split], ignore_index=True).sort_values(["symbol", "date"], ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="stages.data.quality"):
        report = quality_report(prices, as_of=None, ended_sessions=10)
    lines = [r.getMessage() for r in caplog.records]
    assert (report["severity"] == "WARNING").sum() == 42
    assert lines[0] == "data quality: 42 warning(s) (40 ended, 2 jump); all in data_quality.csv"
    assert sum(" ended: " in line for line in lines) == 5 and sum("600000.SH jump" in line for line in lines) == 2
    assert lines[-1] == "data quality: 35 more warning(s) in data_quality.csv" and len(lines) == 1 + 5 + 2 + 1
