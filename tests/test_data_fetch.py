"""The data stage without a network: vendor responses replayed at the adapters' seams.

Fixtures (tests/fixtures/data, see its README) are in the exact shape the vendors answer, built from
reading akshare's and yfinance's source -- not recorded (no network here): the Eastmoney kline JSON
and Sina hfq.js text go through akshare's own parsing (its `requests` is replaced by a fake),
fund_cf_em's and Ticker.history's DataFrames are returned by injected functions.
"""
from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.common.errors import TransientIOError
from stages.data.adapters.akshare import AkshareSource
from stages.data.adapters.yfinance import YfinanceSource
from stages.data.fetch import run_fetch
from stages.data.quality import detect_jumps
from stages.data.store import PriceStore, adjustment_factors

FIXTURES = Path(__file__).parent / "fixtures" / "data"
ak_em = pytest.importorskip("akshare.fund.fund_etf_em")
ak_sina = pytest.importorskip("akshare.fund.fund_etf_sina")


class FakeEastmoney:
    """push2his.eastmoney.com/api/qt/stock/kline/get: answers from the fixture for the asked span,
    records every request, and raises the queued exceptions first."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []
        self.failures: dict[str, list[BaseException]] = {}

    def get(self, url, timeout=None, params=None, **_):
        code = params["secid"].split(".", 1)[1]
        self.calls.append((code, params["beg"], params["end"]))
        queued = self.failures.get(code)
        if queued:
            raise queued.pop(0)
        path = FIXTURES / f"eastmoney_kline_{code}.json"
        if not path.exists():
            return SimpleNamespace(json=lambda: {"rc": 0, "data": None})
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["data"]["klines"] = [k for k in doc["data"]["klines"] if params["beg"] <= k[:10].replace("-", "") <= params["end"]]
        return SimpleNamespace(json=lambda: doc)


def sina_get(url, **_):
    symbol = url.split("/company/")[1].split("/")[0]
    path = FIXTURES / f"sina_hfq_{symbol}.js"
    return SimpleNamespace(text=path.read_text(encoding="utf-8") if path.exists() else "")


def fund_cf_em(year: str) -> pd.DataFrame:
    path = FIXTURES / f"fund_cf_em_{year}.csv"
    if not path.exists():
        return pd.DataFrame(columns=["序号", "基金代码", "基金简称", "拆分折算日", "拆分类型", "拆分折算"])
    return pd.read_csv(path, dtype={"基金代码": str})


@pytest.fixture()
def eastmoney(monkeypatch):
    fake = FakeEastmoney()
    monkeypatch.setattr(ak_em, "requests", SimpleNamespace(get=fake.get))
    monkeypatch.setattr(ak_sina, "requests", SimpleNamespace(get=sina_get))
    return fake


def akshare_source() -> AkshareSource:
    return AkshareSource(hist=ak_em.fund_etf_hist_em, dividends=ak_sina.fund_etf_dividend_sina, splits=fund_cf_em)


class FakeTicker:
    """yf.Ticker(symbol).history(...) replaying the fixture frame (split-adjusted OHLC, as Yahoo sends it)."""

    calls: list[dict] = []

    def __init__(self, symbol):
        self.symbol = symbol

    def history(self, **kwargs):
        FakeTicker.calls.append(kwargs)
        frame = pd.read_csv(FIXTURES / f"yfinance_history_{self.symbol}.csv")
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("Date"), utc=True)).tz_convert("America/New_York")
        frame.index.name = "Date"
        start, end = pd.Timestamp(kwargs["start"], tz="America/New_York"), pd.Timestamp(kwargs["end"], tz="America/New_York")
        return frame[(frame.index >= start) & (frame.index < end)]


def config(*overrides):
    return load_config(None, ["fetch.history_start=2024-01-02", "fetch.recheck_sessions=0", "fetch.min_interval_seconds=0",
                              *overrides])


# --------------------------------------------------------------------------- adapters
def test_akshare_adapter_parses_eastmoney_bars_and_sina_dividends(eastmoney):
    got = akshare_source().fetch("510300.SH", date(2024, 1, 2), date(2024, 2, 29))
    first = json.loads((FIXTURES / "eastmoney_kline_510300.json").read_text(encoding="utf-8"))["data"]["klines"][0].split(",")
    assert eastmoney.calls == [("510300", "20240102", "20240229")]
    assert len(got.bars) == 37 and got.bars["date"].iat[0] == pd.Timestamp("2024-01-02")
    row = got.bars.iloc[0]
    assert (row["open"], row["close"], row["high"], row["low"]) == tuple(float(x) for x in first[1:5])
    assert row["volume"] == float(first[5]) * 100  # Eastmoney counts lots of 100
    events = got.events.set_index("date")
    assert events.loc["2024-01-18", "dividend"] == pytest.approx(0.307 - 0.238)  # the step in 累计分红
    assert (events["split"] == 1.0).all()


def test_akshare_adapter_takes_splits_from_fund_cf_em(eastmoney):
    got = akshare_source().fetch("512010.SH", date(2024, 1, 2), date(2024, 2, 29))
    assert got.events[["date", "dividend", "split"]].values.tolist() == [[pd.Timestamp("2024-01-22"), 0.0, 3.835]]


def test_yfinance_adapter_puts_yahoo_split_adjusted_bars_back_to_as_traded_prices():
    FakeTicker.calls.clear()
    got = YfinanceSource(ticker=FakeTicker).fetch("SCHD", date(2024, 9, 23), date(2024, 10, 31))
    assert FakeTicker.calls[0]["auto_adjust"] is False and FakeTicker.calls[0]["actions"] is True
    yahoo = FakeTicker("SCHD").history(start="2024-09-23", end="2024-11-01")
    before = (got.bars["date"] < pd.Timestamp("2024-10-11")).to_numpy()
    np.testing.assert_allclose(got.bars["close"][before], yahoo["Close"][before] * 3, rtol=1e-12)
    np.testing.assert_allclose(got.bars["close"][~before], yahoo["Close"][~before], rtol=1e-12)
    np.testing.assert_allclose(got.bars["volume"][before], yahoo["Volume"][before] / 3, rtol=1e-12)
    events = got.events.set_index("date")
    assert events.loc["2024-10-11", "split"] == 3.0
    assert events.loc["2024-09-25", "dividend"] == pytest.approx(0.2645 * 3)  # as paid, before the split


# --------------------------------------------------------------------------- factors and the store
def test_factors_make_a_split_and_a_dividend_seamless():
    dates = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]).to_numpy()
    close = np.array([10.0, 10.0, 5.0, 4.9])
    events = pd.DataFrame({"date": pd.to_datetime(["2024-01-04", "2024-01-05"]), "dividend": [0.0, 0.1], "split": [2.0, 1.0]})
    factor = adjustment_factors(dates, close, events)
    np.testing.assert_allclose(factor, [1.0, 1.0, 2.0, 2.0 * 5.0 / 4.9])
    np.testing.assert_allclose(close * factor, [10.0, 10.0, 10.0, 10.0])  # no jump, back-adjusted


def test_a_later_fetch_keeps_earlier_splits_and_drops_revised_recent_events():
    from stages.data.store import merge_events

    old = pd.DataFrame({"symbol": "X", "date": pd.to_datetime(["2023-05-01", "2024-01-22", "2025-03-03"]),
                        "dividend": [0.1, 0.0, 0.2], "split": [1.0, 3.835, 1.0]})
    # akshare in 2025: every dividend again (one revised), splits of 2025 only
    new = pd.DataFrame({"date": pd.to_datetime(["2023-05-01", "2024-01-22", "2025-06-03"]), "dividend": [0.1, 0.05, 0.3],
                        "split": [1.0, 1.0, 1.0]})
    merged = merge_events(old, new, pd.Timestamp("2025-01-02"))
    assert merged.values.tolist() == [[pd.Timestamp("2023-05-01"), 0.1, 1.0], [pd.Timestamp("2024-01-22"), 0.05, 3.835],
                                      [pd.Timestamp("2025-06-03"), 0.3, 1.0]]


def test_split_data_from_the_store_reaches_the_signal_stage_without_the_jump(eastmoney, tmp_path):
    summary, result = run_fetch(config(), ["512010.SH", "510300.SH"], store_dir=tmp_path / "store",
                                end=date(2024, 2, 29), sources={"akshare": akshare_source()})
    assert set(summary.fetched) == {"512010.SH", "510300.SH"} and not summary.failed
    store = PriceStore(tmp_path / "store")
    raw = store.bars[["date", "symbol", "close"]]
    assert [(s, str(d.date())) for s, d in zip(detect_jumps(raw)["symbol"], detect_jumps(raw)["date"])] == [("512010.SH", "2024-01-22")]
    panel = pd.read_parquet(result.outputs["adjusted_prices.parquet"])
    assert detect_jumps(panel).empty
    for symbol in ("512010.SH", "510300.SH"):  # forward-adjusted: the last close is the traded one
        assert panel[panel["symbol"] == symbol]["close"].iat[-1] == raw[raw["symbol"] == symbol]["close"].iat[-1]
    back = store.adjusted_panel(["510300.SH"], "back")
    mine = raw[raw["symbol"] == "510300.SH"].reset_index(drop=True)
    assert back["close"].iat[0] == mine["close"].iat[0]
    ex = int(np.flatnonzero(mine["date"] == pd.Timestamp("2024-01-18"))[0])
    assert back["close"].iat[ex] / back["close"].iat[ex - 1] == pytest.approx(
        (mine["close"].iat[ex] + 0.069) / mine["close"].iat[ex - 1], rel=1e-3)


def test_a_second_fetch_asks_only_for_the_new_sessions(eastmoney, tmp_path):
    store = tmp_path / "store"
    sources = {"akshare": akshare_source()}
    run_fetch(config(), ["510300.SH"], store_dir=store, end=date(2024, 1, 31), sources=sources)
    summary, _ = run_fetch(config(), ["510300.SH"], store_dir=store, end=date(2024, 2, 29), sources=sources)
    assert eastmoney.calls == [("510300", "20240102", "20240131"), ("510300", "20240201", "20240229")]
    assert summary.fetched == {"510300.SH": 15}
    bars = PriceStore(store).bars
    assert len(bars) == 37 and not bars["date"].duplicated().any()
    # up to date: no request at all
    summary, _ = run_fetch(config(), ["510300.SH"], store_dir=store, end=date(2024, 2, 29), sources=sources)
    assert len(eastmoney.calls) == 2 and "up to date" in summary.skipped["510300.SH"]


def test_a_second_yfinance_fetch_asks_only_for_the_new_nyse_sessions_and_keeps_the_split_seamless(tmp_path):
    FakeTicker.calls.clear()
    sources = {"yfinance": YfinanceSource(FakeTicker)}
    store = tmp_path / "store"
    settings = config("fetch.history_start=2024-09-23")
    run_fetch(settings, ["SCHD"], store_dir=store, end=date(2024, 10, 4), sources=sources)
    summary, result = run_fetch(settings, ["SCHD"], store_dir=store, end=date(2024, 10, 31), sources=sources)
    # asked through today (Yahoo's bars are divided by every split up to today), kept up to the end date
    assert [c["start"] for c in FakeTicker.calls] == ["2024-09-23", "2024-10-07"]
    assert all(c["end"] > date.today().isoformat() for c in FakeTicker.calls)
    assert summary.fetched == {"SCHD": 19}  # NYSE sessions 7 Oct .. 31 Oct
    bars = PriceStore(store).bars
    assert len(bars) == 29 and not bars["date"].duplicated().any()
    yahoo = FakeTicker("SCHD").history(start="2024-09-23", end="2024-11-01")
    panel = pd.read_parquet(result.outputs["adjusted_prices.parquet"])
    after_dividend = (panel["date"] >= pd.Timestamp("2024-09-25")).to_numpy()
    # forward-adjusted = Yahoo's split-adjusted close, times the dividend factor before the ex-date
    np.testing.assert_allclose(panel["close"][after_dividend], yahoo["Close"][after_dividend], rtol=1e-12)


def test_the_recheck_window_asks_again_for_the_last_stored_sessions(eastmoney, tmp_path):
    sources = {"akshare": akshare_source()}
    run_fetch(config(), ["510300.SH"], store_dir=tmp_path / "s", end=date(2024, 1, 31), sources=sources)
    run_fetch(config("fetch.recheck_sessions=3"), ["510300.SH"], store_dir=tmp_path / "s",
              end=date(2024, 2, 29), sources=sources)
    assert eastmoney.calls[-1] == ("510300", "20240129", "20240229")  # 29, 30, 31 January again
    assert len(PriceStore(tmp_path / "s").bars) == 37


def test_transient_failures_are_retried_rate_limited_and_one_failing_symbol_does_not_sink_the_others(eastmoney, tmp_path):
    from http.client import RemoteDisconnected

    eastmoney.failures["510300"] = [RemoteDisconnected("Remote end closed connection"), ConnectionResetError("reset")]
    eastmoney.failures["512010"] = [ConnectionResetError("blocked")] * 4
    slept: list[float] = []
    summary, result = run_fetch(config("fetch.min_interval_seconds=1.5", "fetch.retries=3"),
                                ["510300.SH", "512010.SH", "159999.SZ"], store_dir=tmp_path / "store",
                                end=date(2024, 2, 29), sources={"akshare": akshare_source()}, sleep=slept.append,
                                clock=lambda: 0.0)
    assert list(summary.fetched) == ["510300.SH"]
    assert set(summary.failed) == {"512010.SH", "159999.SZ"} and "no rows" in summary.failed["159999.SZ"]
    assert summary.transient == {"512010.SH"}
    assert [c[0] for c in eastmoney.calls].count("510300") == 3 and [c[0] for c in eastmoney.calls].count("512010") == 4
    assert [s for s in slept if s != 1.5] == [2.0, 4.0, 2.0, 4.0, 8.0]  # backoff: 510300 twice, 512010 three times
    assert slept.count(1.5) == len(eastmoney.calls) - 1  # the rate limit before every request but the first
    assert set(pd.read_parquet(result.outputs["adjusted_prices.parquet"])["symbol"]) == {"510300.SH"}


def test_every_symbol_failing_on_the_network_is_a_transient_error(eastmoney, tmp_path):
    eastmoney.failures["510300"] = [ConnectionResetError("reset")] * 2
    with pytest.raises(TransientIOError, match="510300.SH"):
        run_fetch(config("fetch.retries=1"), ["510300.SH"], store_dir=tmp_path / "store",
                  end=date(2024, 2, 29), sources={"akshare": akshare_source()}, sleep=lambda s: None)
    assert not (tmp_path / "store" / "adjusted_prices.parquet").exists()


def test_us_and_cn_symbols_go_to_their_own_source(eastmoney, tmp_path):
    summary, result = run_fetch(config(), ["510300.SH", "SCHD"], store_dir=tmp_path / "store",
                                end=date(2024, 10, 31), sources={"akshare": akshare_source(), "yfinance": YfinanceSource(FakeTicker)})
    assert set(summary.fetched) == {"510300.SH", "SCHD"}
    store = PriceStore(tmp_path / "store")
    assert store.bars.groupby("symbol")["source"].first().to_dict() == {"510300.SH": "akshare", "SCHD": "yfinance"}
    panel = pd.read_parquet(result.outputs["adjusted_prices.parquet"])
    assert detect_jumps(panel[panel["symbol"] == "SCHD"]).empty  # the 3-for-1 split does not reach the stops


# --------------------------------------------------------------------------- the command
def test_trendflow_fetch_help_documents_the_sources(capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fetch", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needle in ("akshare", "fund_etf_hist_em", "fund_etf_dividend_sina", "yfinance", "auto_adjust=False",
                   "exercised by hand only"):
        assert needle in text


def test_readme_fetch_then_signal_commands_run_as_written(eastmoney, tmp_path, monkeypatch, capsys):
    import stages.data.fetch as fetch_module
    from flows.cli import main

    monkeypatch.setattr(fetch_module, "make_source", lambda name: {"akshare": akshare_source(),
                                                                   "yfinance": YfinanceSource(FakeTicker)}[name])
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    fetch_line = "trendflow fetch --symbols 510300.SH,512010.SH --end 2024-02-29 --store data_store"
    signal_line = "trendflow signal --data data_store/adjusted_prices.parquet --out out/"
    assert fetch_line in readme and signal_line in readme
    assert main(fetch_line.split()[1:] + ["--set", "fetch.history_start=2024-01-02", "--set", "fetch.min_interval_seconds=0"]) == 0
    assert "fetched 2, skipped 0, failed 0" in capsys.readouterr().out
    assert main(signal_line.split()[1:]) == 0
    assert (tmp_path / "out" / "signals_output.parquet").exists() and (tmp_path / "out" / "data_quality.csv").exists()
    assert os.path.isdir(tmp_path / "data_store")
    assert main(["signal", "--data", "data_store", "--out", "out2/"]) == 2  # the store folder itself: a clear line
    assert "is a trendflow price store" in capsys.readouterr().err


@pytest.fixture()
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.prefect
def test_the_flow_runs_the_data_stage_first_when_asked(harness, eastmoney, tmp_path, monkeypatch, capsys):
    import shlex

    import stages.data.fetch as fetch_module
    from flows.cli import main

    monkeypatch.setattr(fetch_module, "make_source", lambda name: {"akshare": akshare_source()}[name])
    monkeypatch.chdir(tmp_path)
    line = """trendflow run --stages data,signal,trading,reporting --set 'data.symbols=["510300.SH","512010.SH"]' --out out/"""
    assert line in (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    extra = ["--set", "fetch.history_start=2024-01-02", "--set", "fetch.min_interval_seconds=0", "--set", "fetch.store=store"]
    assert main(shlex.split(line)[1:] + extra) == 0
    out = tmp_path / "out"
    prices = pd.read_parquet(out / "prices.parquet")
    assert set(prices["symbol"]) == {"510300.SH", "512010.SH"} and detect_jumps(prices).empty  # from the store, adjusted
    assert (out / "report.html").exists() and (tmp_path / "store" / "bars.parquet").exists()


def test_trendflow_fetch_reports_a_failing_symbol_and_exits_1(eastmoney, tmp_path, monkeypatch, capsys):
    import stages.data.fetch as fetch_module
    from flows.cli import main

    monkeypatch.setattr(fetch_module, "make_source", lambda name: akshare_source())
    code = main(["fetch", "--symbols", "510300.SH,159999.SZ", "--end", "2024-02-29", "--store", str(tmp_path / "store"),
                 "--set", "fetch.history_start=2024-01-02", "--set", "fetch.min_interval_seconds=0"])
    out = capsys.readouterr().out
    assert code == 1 and "fetched 1, skipped 0, failed 1" in out and "FAILED  159999.SZ" in out
    assert set(pd.read_parquet(tmp_path / "store" / "adjusted_prices.parquet")["symbol"]) == {"510300.SH"}
    assert main(["fetch", "--store", str(tmp_path / "store")]) == 2  # no symbols: one error line
    assert "no symbols to fetch" in capsys.readouterr().err
