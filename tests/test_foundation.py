"""Config model, market-data loader, artifact I/O, demo universe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.prices import PricesSchema
from stages.common import artifacts
from stages.common.artifacts import read_artifact, sha256_file, stage_run
from stages.common.config import load_config
from stages.common.demo import DemoSpec, generate_demo_prices, write_demo_universe
from stages.common.errors import ConfigError, DataError, IntegrityError, SchemaError
from stages.common.market_data import load_market_data
from stages.common.panel import to_panel
from tests.conftest import shared_data_dir

GOOD = "date,open,high,low,close,volume\n2024-01-02,1.0,1.1,0.9,1.05,100\n2024-01-03,1.05,1.2,1.0,1.1,200\n2024-01-04,1.1,1.2,1.0,1.15,300\n"


# --------------------------------------------------------------------------- config
def test_default_config_file_holds_every_key():
    from schemas.config import TrendflowConfig

    on_disk = json.loads(Path("config/default.json").read_text())
    assert on_disk == TrendflowConfig().model_dump(mode="json")


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"risk": {"atr_multiplier": "abc"}}, "key 'risk.atr_multiplier'"),
        ({"risk": {"atr_multipler": 2}}, "unknown key 'risk.atr_multipler'"),
        ({"scoring": {"buy_top_n": 20, "hold_until_rank": 15}}, "hold_until_rank (15) must be >= buy_top_n (20)"),
        ({"execution": {"fill_price": "vwap"}}, "key 'execution.fill_price'"),
        ({"position_sizing": {"max_positions": 0}}, "key 'position_sizing.max_positions'"),
        ([1, 2], "top level must be a JSON object"),
    ],
)
def test_config_errors_name_the_key(tmp_path, content, expected):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert "c.json" in str(err.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"risk": {\n "atr_multiplier": 2.0,,\n}}')
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(path)


def test_overrides_parse_json_and_reject_unknown_keys():
    cfg = load_config(None, ["risk.atr_multiplier=2.5", "data.symbols=[\"510300.SH\"]", "strategy.name=kama"])
    assert cfg.risk.atr_multiplier == 2.5 and cfg.data.symbols == ["510300.SH"] and cfg.strategy.name == "kama"
    with pytest.raises(ConfigError, match="risk.nope"):
        load_config(None, ["risk.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE|="):
        load_config(None, ["risk.atr_multiplier"])


# --------------------------------------------------------------------------- loader: bad input
def _folder(tmp_path: Path, name: str, text: str | bytes) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / "510300.SH.csv").write_text(GOOD)
    target = folder / name
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize(
    "text, expected",
    [
        ("date,open,high,low,volume\n2024-01-02,1,1.1,0.9,100\n", "missing column(s) close"),
        ("date,open,high,low,close,volume\n2024-01-02,1,1.1,0.9,,100\n", "line 2"),
        ("date,open,high,low,close,volume\n2024-01-02,1,1.1,0.9,1,100\n2024-01-03,0,1.1,0.9,1,100\n", "line 3"),
        ("date,open,high,low,close,volume\n2024-01-02,1,1.1,0.9,-1,100\n", "line 2"),
        ("date,open,high,low,close,volume\n2024-01-02,1,0.8,0.9,1,100\n", "high"),
        ("date,open,high,low,close,volume\n2024-01-02,1,1.1,0.9,1,100\n2024-01-02,1,1.1,0.9,1,100\n", "duplicate"),
        ("date,open,high,low,close,volume\n2024-01-03,1,1.1,0.9,1,100\n2024-01-02,1,1.1,0.9,1,100\n", "not ascending|unsorted|ascending"),
        ("", "empty"),
        (b"\xff\xfe\x00\x01garbage\x00\x00", "159915.SZ.csv"),
        ("date,open,high,low,close,volume\nnot-a-date,1,1.1,0.9,1,100\n", "line 2"),
    ],
    ids=["missing-column", "nan-price", "zero-price", "negative-price", "high-below-low", "duplicate-date",
         "unsorted", "empty-file", "binary-garbage", "bad-date"],
)
def test_bad_input_is_a_clear_error(tmp_path, text, expected):
    folder = _folder(tmp_path, "159915.SZ.csv", text)
    with pytest.raises(DataError) as err:
        load_market_data(folder)
    message = str(err.value)
    assert "159915.SZ.csv" in message
    assert any(part.lower() in message.lower() for part in expected.split("|")), message


def test_non_utf8_file_is_named(tmp_path):
    folder = _folder(tmp_path, "159915.SZ.csv", "date,open,high,low,close,volume,名\n2024-01-02,1,1.1,0.9,1,100,x\n".encode("gbk"))
    with pytest.raises(DataError, match="159915.SZ.csv"):
        load_market_data(folder)


@pytest.mark.parametrize("symbol", ["../etc/passwd", "..", "a/b", "a\\b", "/abs"])
def test_path_traversal_symbols_are_rejected(tmp_path, symbol):
    folder = _folder(tmp_path, "159915.SZ.csv", GOOD)
    with pytest.raises(DataError, match="symbol"):
        load_market_data(folder, symbols=[symbol])


def test_drop_policy_drops_bad_rows_with_a_warning(tmp_path, caplog):
    bad = GOOD + "2024-01-05,1.1,1.2,1.0,-1,300\n"
    folder = _folder(tmp_path, "159915.SZ.csv", bad)
    data = load_market_data(folder, bad_rows="drop")
    assert len(data.prices[data.prices.symbol == "159915.SZ"]) == 3
    assert "159915.SZ.csv" in caplog.text


def test_missing_symbol_is_skipped_but_no_usable_symbol_is_an_error(tmp_path, caplog):
    folder = _folder(tmp_path, "159915.SZ.csv", GOOD)
    data = load_market_data(folder, symbols=["510300.SH", "999999.SH"])
    assert data.symbols == ["510300.SH"] and "999999.SH" in data.skipped
    with pytest.raises(DataError, match="no usable symbol"):
        load_market_data(folder, symbols=["999999.SH"])


def test_column_spellings_and_yyyymmdd_dates(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "510300.SH.csv").write_text("trade_date,Open,High,Low,Close,Vol\n20240102,1,1.1,0.9,1.05,100\n20240103,1.05,1.2,1,1.1,200\n")
    prices = load_market_data(folder).prices
    assert list(prices["date"].dt.strftime("%Y-%m-%d")) == ["2024-01-02", "2024-01-03"]
    assert prices["volume"].tolist() == [100, 200]


def test_long_file_and_parquet_inputs(tmp_path):
    demo = generate_demo_prices(DemoSpec(n_symbols=3, years=0.5, seed=1))
    long_csv = tmp_path / "long.csv"
    demo.to_csv(long_csv, index=False)
    from_long = load_market_data(long_csv).prices
    folder = tmp_path / "pq"
    folder.mkdir()
    for symbol, rows in demo.groupby("symbol"):
        rows.drop(columns="symbol").to_parquet(folder / f"{symbol}.parquet")
    from_parquet = load_market_data(folder).prices
    pd.testing.assert_frame_equal(from_long, from_parquet)


def test_suspension_days_stay_missing_in_the_panel(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "A.SH.csv").write_text(GOOD)
    (folder / "B.SH.csv").write_text("date,open,high,low,close,volume\n2024-01-02,1,1.1,0.9,1,1\n2024-01-04,1,1.1,0.9,1,1\n")
    panel = to_panel(load_market_data(folder).prices)
    assert panel.tradable[:, 1].tolist() == [True, False, True]
    assert np.isnan(panel.close[1, 1])


# --------------------------------------------------------------------------- artifact I/O
def _prices(n=3):
    return pd.DataFrame({"date": pd.bdate_range("2024-01-02", periods=n), "symbol": ["A"] * n, "open": 1.0,
                         "high": 1.1, "low": 0.9, "close": 1.0, "volume": 10.0})


def test_failure_mid_stage_leaves_previous_artifacts_intact(tmp_path, monkeypatch):
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
        run.write(_prices(), "other.parquet", PricesSchema)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = artifacts._write_table
    calls = []

    def failing(df, path, kind):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(df, path, kind)

    monkeypatch.setattr(artifacts, "_write_table", failing)
    with pytest.raises(OSError):
        with stage_run("signal", tmp_path) as run:
            run.write(_prices(5), "prices.parquet", PricesSchema)
            run.write(_prices(5), "other.parquet", PricesSchema)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before


def test_schema_violation_on_write_names_column_and_row(tmp_path):
    bad = _prices()
    bad.loc[1, "close"] = -1.0
    with pytest.raises(SchemaError) as err:
        with stage_run("signal", tmp_path) as run:
            run.write(bad, "prices.parquet", PricesSchema)
    assert "close" in str(err.value) and "2024-01-03" in str(err.value)
    assert not (tmp_path / "prices.parquet").exists()


def test_tampered_artifact_fails_the_hash_check(tmp_path):
    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
    csv = tmp_path / "prices.csv"
    csv.write_text(csv.read_text().replace("1.1", "1.2", 1))
    with pytest.raises(IntegrityError, match="prices.csv"):
        read_artifact(csv, PricesSchema)
    assert len(read_artifact(tmp_path / "prices.parquet", PricesSchema)) == 3


def test_same_data_same_bytes(tmp_path):
    for name in ("a", "b"):
        with stage_run("signal", tmp_path / name) as run:
            run.write(_prices(), "prices.parquet", PricesSchema)
    for file in ("prices.parquet", "prices.csv"):
        assert sha256_file(tmp_path / "a" / file) == sha256_file(tmp_path / "b" / file)


# --------------------------------------------------------------------------- demo universe
def test_demo_generator_is_deterministic_and_realistic(tmp_path):
    spec = DemoSpec(n_symbols=40, years=3, seed=3)
    a = write_demo_universe(tmp_path / "a", spec)
    b = write_demo_universe(tmp_path / "b", spec)
    files = sorted(p.name for p in a.glob("*.csv"))
    assert len(files) == 40
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    other = generate_demo_prices(DemoSpec(n_symbols=40, years=3, seed=4))
    assert not other.equals(generate_demo_prices(spec))
    prices = load_market_data(a).prices
    close = prices.pivot(index="date", columns="symbol", values="close")
    returns = np.log(close).diff()
    assert close.isna().any().any()  # suspensions / late listings are absent rows
    kurt = returns.kurt().median()
    assert kurt > 1.0  # fat tails (excess kurtosis)
    corr = returns.corr().to_numpy()
    assert np.nanmean(corr[np.triu_indices(40, 1)]) > 0.1


def test_demo_data_command(tmp_path):
    from flows.cli import main

    assert main(["demo-data", "--out", str(tmp_path / "d"), "--symbols", "5", "--years", "1"]) == 0
    assert len(list((tmp_path / "d").glob("*.csv"))) == 5


# --------------------------------------------------------------------------- real data
@pytest.mark.parametrize("market", ["cn_etf", "us_etf", "cn_ashare"])
def test_real_data_loads(market):
    folder = shared_data_dir(market)
    data = load_market_data(folder)
    assert data.prices["symbol"].nunique() >= 30
    PricesSchema.validate(data.prices.head(1000))


def test_validate_command(tmp_path, capsys):
    from flows.cli import main

    with stage_run("signal", tmp_path) as run:
        run.write(_prices(), "prices.parquet", PricesSchema)
    assert main(["validate", str(tmp_path / "prices.parquet"), str(tmp_path / "prices.csv")]) == 0
    (tmp_path / "prices.csv").write_text("date,symbol\n")
    assert main(["validate", str(tmp_path / "prices.csv"), "--no-hash"]) == 1
    assert "FAIL" in capsys.readouterr().out
