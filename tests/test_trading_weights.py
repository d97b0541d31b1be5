"""External weights mode: every kind of bad weights file is refused with a clear message before
any trading; good files are traded to their targets with the same lots and costs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.common.errors import DataError
from stages.signal import run_signal_stage
from stages.trading import run_backtest, run_trading_stage
from stages.trading.__main__ import main
from stages.trading.weights import load_weights_file, validate_weights
from tests.test_trading_rules import frictionless, hand_frames, hand_market

# dates of hand_market: 2024-01-01 (Mon) .. business days
CASES = [
    ("date,A,Z\n2024-01-01,0.5,0.2\n", "symbols not in prices.parquet: ['Z']"),
    ("date,A,B\n2024-01-06,0.5,0.2\n", "not trading days in prices.parquet"),
    ("date,A,B\n2023-12-29,0.5,0.2\n", "not trading days in prices.parquet"),
    ("date,A,B\n2024-01-01,,0.2\n", "is nan: every weight must be a finite number"),
    ("date,A,B\n2024-01-01,inf,0.2\n", "is inf: every weight must be a finite number"),
    ("date,A,B\n2024-01-01,abc,0.2\n", "'abc' at 2024-01-01 / A is not a number"),
    ("date,A,B\n2024-01-01,1.5,0.2\n", "weight 1.5 at 2024-01-01 / A is outside [0, 1]"),
    ("date,A,B\n2024-01-01,-0.1,0.2\n", "weight -0.1 at 2024-01-01 / A is outside [0, 1]"),
    ("date,A,B\n2024-01-01,0.5,0.2\n2024-01-02,0.7,0.6\n", "weights on 2024-01-02 sum to 1.300000 > 1"),
    ("A,B\n0.5,0.5\n", "needs a 'date' column"),
    ("date,A,B\n", "has no rows"),
    ("date\n2024-01-01\n", "has no symbol columns"),
    ("date,A,B\n2024-01-01,0.5,0.2\n2024-01-01,0.5,0.2\n", "duplicate dates ['2024-01-01']"),
    ("date,A,B\nJan first,0.5,0.2\n", "unreadable date"),
    ("date,A,B\n2024-01-01 10:30,0.5,0.2\n", "without a time of day"),
]


def market():
    return hand_market([[10.0, 20.0], [10.0, 20.0], [11.0, 19.0], [12.0, 18.0]])


@pytest.mark.parametrize("text, message", CASES, ids=[m.split(":")[0][:40] for _, m in CASES])
def test_bad_weights_files_are_refused_naming_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "my_weights.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        validate_weights(load_weights_file(path), market(), str(path))
    assert message in str(err.value) and "my_weights.csv" in str(err.value)


def test_weights_files_that_cannot_be_read(tmp_path):
    with pytest.raises(DataError, match="missing.csv does not exist"):
        load_weights_file(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="is a folder"):
        load_weights_file(tmp_path)
    (tmp_path / "w.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported type '.xlsx'"):
        load_weights_file(tmp_path / "w.xlsx")
    (tmp_path / "w.parquet").write_text("not parquet at all")
    with pytest.raises(DataError, match="w.parquet cannot be read as parquet"):
        load_weights_file(tmp_path / "w.parquet")


def test_a_parquet_file_with_a_date_index_is_read(tmp_path):
    frame = pd.DataFrame({"A": [0.5, 0.0], "B": [0.25, 0.5]}, index=pd.DatetimeIndex(["2024-01-01", "2024-01-03"]))
    frame.to_parquet(tmp_path / "w.parquet")
    plan = validate_weights(load_weights_file(tmp_path / "w.parquet"), market(), "w.parquet")
    assert sorted(plan) == [0, 2]
    np.testing.assert_array_equal(plan[0], [0.5, 0.25])


def test_weights_mode_trades_to_the_targets_with_lots_and_holds_between_dates():
    prices, signals = hand_frames([[10.0, 20.0], [10.0, 20.0], [11.0, 19.0], [12.0, 18.0], [12.0, 18.0]], score=1.0)
    weights = pd.DataFrame({"date": ["2024-01-01", "2024-01-03"], "A": [0.5, 0.0], "B": [0.25, 0.5]})
    config = frictionless("execution.initial_cash=10000", "execution.lot_size=10")
    result = run_backtest(signals, prices, config, weights=weights)
    log = result.trade_log
    # day 1 (open 10, 20): 0.5 x 10,000 / 10 = 500 A; 0.25 x 10,000 / 20 = 125 -> 120 B (lots of 10)
    assert log[["symbol", "side", "quantity"]].values.tolist()[:2] == [["A", "BUY", 500], ["B", "BUY", 120]]
    # decided at the close of day 2 (A 11, B 19; equity 10,000 + 500 + (-120)): sell all A, B up to 0.5
    equity = 10_000 - 5000 - 2400 + 500 * 11 + 120 * 19
    day3 = log[log["date"] == result.market.dates[3]]
    assert day3[["symbol", "side", "quantity"]].values.tolist() == [["A", "SELL", 500],
                                                                   ["B", "BUY", int(0.5 * equity / 19 // 10 * 10) - 120]]
    assert set(log["reason"]) == {"target_weight"} and (log["decision_date"] < log["date"]).all()
    assert len(log[log["date"] == result.market.dates[4]]) == 0  # no weights row on day 3: nothing traded on day 4
    assert result.positions[result.positions["date"] == result.market.dates[-1]]["symbol"].tolist() == ["B"]


def test_weights_mode_works_without_signals_and_costs_apply():
    prices, _ = hand_frames([[10.0, 20.0]] * 3, score=1.0)
    weights = pd.DataFrame({"date": ["2024-01-01"], "A": [0.3], "B": [0.3]})
    config = load_config(None, ["execution.initial_cash=100000"])
    log = run_backtest(None, prices, config, weights=weights).trade_log
    assert log["quantity"].tolist() == [3000, 1500]  # lots of 100
    np.testing.assert_allclose(log["commission"], np.maximum(log["quantity"] * log["price"] * 0.0003, 5.0))
    np.testing.assert_allclose(log["price"], [10.005, 20.01])


def test_the_weights_file_is_checked_before_any_trading(small_demo_dir, tmp_path):
    config = load_config()
    run_signal_stage(config, small_demo_dir, tmp_path)
    prices = pd.read_parquet(tmp_path / "prices.parquet")
    dates = sorted(prices["date"].unique())
    symbols = sorted(prices["symbol"].unique())
    good = tmp_path / "weights.csv"
    rows = [f"{pd.Timestamp(d).date()},{0.3 if i % 2 else 0.0},{0.3}" for i, d in enumerate(dates[50::20])]
    good.write_text(f"date,{symbols[0]},{symbols[1]}\n" + "\n".join(rows) + "\n")
    before = {p.name for p in tmp_path.iterdir()}
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text() + "2099-01-01,0.1,0.1\n")
    assert main(["--out", str(tmp_path), "--weights", str(bad)]) == 2
    assert {p.name for p in tmp_path.iterdir()} == before | {"bad.csv"}
    assert main(["--out", str(tmp_path), "--weights", str(good)]) == 0
    log = pd.read_csv(tmp_path / "trade_log.csv")
    assert set(log["reason"]) == {"target_weight"} and set(log["symbol"]) == set(symbols[:2])
    # a daily run in weights mode: the day's row of targets becomes orders_{D}.csv
    day = pd.Timestamp(dates[-1]).date()
    extra = tmp_path / "today.csv"
    extra.write_text(f"date,{symbols[0]}\n{day},0.2\n")
    run_trading_stage(config, tmp_path, tmp_path / "next", weights=extra, as_of_date=day, fresh=True)
    orders = pd.read_csv(tmp_path / "next" / f"orders_{day}.csv")
    assert orders["reason"].tolist() == ["target_weight"] and orders["symbol"].tolist() == [symbols[0]]
