"""Market-data loader: accepted layouts, every bad-input case (message names file and line), the
bad_rows policy, skipped symbols, suspensions, and the bulk path agreeing with the per-file path."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.prices import PricesSchema
from stages.common.demo import DemoSpec, demo_csv_bytes, generate_demo_prices
from stages.common.errors import DataError
from stages.common.market_data import load_market_data, read_symbol_file
from stages.common.panel import to_panel

HEADER = "date,open,high,low,close,volume\n"
GOOD = HEADER + "2024-01-02,1.0,1.1,0.9,1.05,100\n2024-01-03,1.05,1.2,1.0,1.1,200\n2024-01-04,1.1,1.2,1.0,1.15,300\n"
ROW = "{day},1.0,1.1,0.9,1.0,100\n"
LOGGER = "stages.common.market_data"


def _folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def _with_bad_file(tmp_path: Path, content: str | bytes) -> Path:
    """A folder with one good file and 159915.SZ.csv holding `content`."""
    return _folder(tmp_path, {"510300.SH.csv": GOOD, "159915.SZ.csv": content})


# --------------------------------------------------------------------------- bad input: clear errors
@pytest.mark.parametrize(
    "content, expected",
    [
        ("date,open,high,low,volume\n2024-01-02,1,1.1,0.9,100\n",
         "missing column(s) close (found: date, open, high, low, volume)"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-01-03,1,1.1,0.9,,100\n",
         "1 bad row(s): missing or non-numeric price at line 3"),
        (HEADER + "2024-01-02,1,1.1,0.9,nan,100\n2024-01-03,1,1.1,0.9,n/a,100\n",
         "missing or non-numeric price at lines 2, 3"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-01-03,0,1.1,0.9,1,100\n",
         "non-positive price at line 3"),
        (HEADER + "2024-01-02,1,1.1,0.9,-1,100\n", "non-positive price at line 2"),
        (HEADER + "2024-01-02,1,0.8,0.9,1,100\n", "high below low at line 2"),
        (HEADER + "2024-01-02,1,1.05,0.9,1.1,100\n", "high below max(open, close) at line 2"),
        (HEADER + "2024-01-02,1,1.1,1.02,1,100\n", "low above min(open, close) at line 2"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,-5\n", "negative volume at line 2"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,\n", "missing or non-numeric volume at line 2"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-01-03,1,1.1,0.9,1,100\n2024-01-03,1,1.1,0.9,1,100\n",
         "duplicate dates at lines 3, 4 (2024-01-03)"),
        (HEADER + "2024-01-03,1,1.1,0.9,1,100\n2024-01-02,1,1.1,0.9,1,100\n",
         "dates are not in ascending order, first at line 3 (2024-01-02 after 2024-01-03)"),
        ("", "file is empty"),
        (HEADER, "file has a header but no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a text CSV file (binary content)"),
        ("date,open,high,low,close,volume,名称\n2024-01-02,1,1.1,0.9,1,100,沪深300\n".encode("gbk"),
         "not UTF-8 text at line 1 (byte 0xc3); save it as UTF-8"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-13-45,1,1.1,0.9,1,100\n", "unparseable date at line 3"),
        (HEADER + "2024-01-02,1,1.1,0.9,1,100,7\n", "line 2 has 7 fields but the header has 6"),
    ],
    ids=["missing-column", "nan-price", "nan-text", "zero-price", "negative-price", "high-below-low",
         "high-below-close", "low-above-open", "negative-volume", "missing-volume", "duplicate-date",
         "unsorted-dates", "empty-file", "header-only", "binary-garbage", "not-utf8", "bad-date", "extra-field"],
)
def test_bad_input_is_an_error_naming_file_and_line(tmp_path, content, expected):
    folder = _with_bad_file(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_market_data(folder)
    message = str(err.value)
    assert f"{folder / '159915.SZ.csv'}: " in message, message
    assert expected in message, message
    assert "510300.SH" not in message


def test_line_numbers_count_blank_lines_and_crlf_files(tmp_path):
    folder = _with_bad_file(tmp_path, HEADER + "2024-01-02,1,1.1,0.9,1,100\n\n2024-01-03,1,1.1,0.9,-1,100\n")
    with pytest.raises(DataError, match="non-positive price at line 4"):
        load_market_data(folder)
    crlf = (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-01-03,1,1.1,0.9,0,100\n").replace("\n", "\r\n")
    folder = _with_bad_file(tmp_path, crlf)
    with pytest.raises(DataError, match="non-positive price at line 3"):
        load_market_data(folder)


def test_many_bad_rows_are_counted_and_the_first_five_listed(tmp_path):
    rows = "".join(f"2024-01-{d:02d},1,1.1,0.9,-1,100\n" for d in range(1, 10))
    with pytest.raises(DataError) as err:
        load_market_data(_with_bad_file(tmp_path, HEADER + rows))
    assert "9 bad row(s): non-positive price at lines 2, 3, 4, 5, 6 (+4 more)" in str(err.value)
    assert "data.bad_rows=drop" in str(err.value)


def test_a_bad_parquet_row_is_named_by_row_number(tmp_path):
    frame = pd.DataFrame({"date": pd.bdate_range("2024-01-02", periods=3), "open": 1.0, "high": 1.1,
                          "low": 0.9, "close": [1.0, -1.0, 1.0], "volume": 10.0})
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD})
    frame.to_parquet(folder / "159915.SZ.parquet")
    with pytest.raises(DataError, match=r"159915\.SZ\.parquet: 1 bad row\(s\): non-positive price at row 1"):
        load_market_data(folder)


@pytest.mark.parametrize("symbol", ["../etc/passwd", "..", "a/b", "a\\b", "/abs", "", " x", "C:evil", "x..y", ".hidden"])
def test_symbols_that_could_escape_the_data_folder_are_rejected(tmp_path, symbol):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD})
    with pytest.raises(DataError, match=r"data.symbols entry .* is not a valid symbol name"):
        load_market_data(folder, symbols=["510300.SH", symbol])


def test_a_path_traversal_symbol_in_a_long_file_is_rejected_with_its_line(tmp_path):
    long_file = tmp_path / "long.csv"
    long_file.write_text("date,symbol,open,high,low,close,volume\n"
                         "2024-01-02,A.SH,1,1.1,0.9,1,100\n2024-01-02,../../etc/cron,1,1.1,0.9,1,100\n")
    with pytest.raises(DataError) as err:
        load_market_data(long_file)
    assert f"{long_file}: symbol '../../etc/cron' is not a valid symbol name" in str(err.value)
    assert "(first at line 3)" in str(err.value)


def test_a_file_name_that_is_not_a_symbol_is_rejected(tmp_path):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD, "my prices.csv": GOOD})
    with pytest.raises(DataError, match=r"file my prices.csv: symbol 'my prices' is not a valid symbol name"):
        load_market_data(folder)


def test_two_files_for_one_symbol_are_an_error(tmp_path):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD})
    generate_demo_prices(DemoSpec(n_symbols=1, years=0.1)).drop(columns="symbol").to_parquet(folder / "510300.SH.parquet")
    with pytest.raises(DataError, match=r"symbol 510300.SH has two files \(510300.SH.csv, 510300.SH.parquet\)"):
        load_market_data(folder)


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_market_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no prices here")
    with pytest.raises(DataError, match="no .csv or .parquet price files found"):
        load_market_data(tmp_path / "empty")
    single = tmp_path / "510300.SH.csv"
    single.write_text(GOOD)
    with pytest.raises(DataError, match="missing column.s. symbol .*for per-symbol files give their folder"):
        load_market_data(single)
    with pytest.raises(DataError, match="data.bad_rows must be 'error' or 'drop'"):
        load_market_data(_folder(tmp_path, {"510300.SH.csv": GOOD}), bad_rows="ignore")


# --------------------------------------------------------------------------- bad_rows=drop
def test_drop_policy_drops_bad_rows_and_warns_with_file_and_line(tmp_path, caplog):
    content = (HEADER + "2024-01-02,1,1.1,0.9,1,100\n2024-01-03,1,1.1,0.9,-1,100\n2024-01-04,1,1.1,0.9,1,100\n"
               "2024-01-05,1,1.1,0.9,,100\n2024-01-08,1,1.1,0.9,1,100\n")
    folder = _with_bad_file(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = load_market_data(folder, bad_rows="drop")
    kept = data.prices[data.prices["symbol"] == "159915.SZ"]
    assert kept["date"].dt.strftime("%m-%d").tolist() == ["01-02", "01-04", "01-08"]
    assert "159915.SZ.csv: 2 bad row(s)" in caplog.text
    assert "non-positive price at line 3" in caplog.text and "missing or non-numeric price at line 5" in caplog.text
    assert "dropped" in caplog.text
    assert len(data.prices[data.prices["symbol"] == "510300.SH"]) == 3


def test_drop_policy_drops_every_copy_of_a_duplicate_date_and_sorts_unsorted_dates(tmp_path, caplog):
    dup = HEADER + ROW.format(day="2024-01-02") + ROW.format(day="2024-01-03") * 2 + ROW.format(day="2024-01-04")
    unsorted = HEADER + ROW.format(day="2024-01-04") + ROW.format(day="2024-01-02") + ROW.format(day="2024-01-03")
    folder = _folder(tmp_path, {"A.SH.csv": dup, "B.SH.csv": unsorted})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        prices = load_market_data(folder, bad_rows="drop").prices
    days = {s: g["date"].dt.strftime("%m-%d").tolist() for s, g in prices.groupby("symbol")}
    assert days == {"A.SH": ["01-02", "01-04"], "B.SH": ["01-02", "01-03", "01-04"]}
    assert "A.SH.csv: duplicate dates at lines 3, 4 (2024-01-03)" in caplog.text
    assert "B.SH.csv: dates not ascending (first at line 3" in caplog.text


def test_drop_policy_in_a_long_file_names_the_symbol(tmp_path, caplog):
    long_file = tmp_path / "long.csv"
    long_file.write_text("date,symbol,open,high,low,close,volume\n2024-01-02,A.SH,1,1.1,0.9,1,100\n"
                         "2024-01-02,B.SH,1,1.1,0.9,1,100\n2024-01-03,A.SH,1,1.1,0.9,-1,100\n"
                         "2024-01-03,B.SH,1,1.1,0.9,1,100\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        prices = load_market_data(long_file, bad_rows="drop").prices
    assert prices.groupby("symbol").size().to_dict() == {"A.SH": 1, "B.SH": 2}
    assert f"{long_file} (symbol A.SH): 1 bad row(s): non-positive price at line 4" in caplog.text
    with pytest.raises(DataError, match=r"long.csv \(symbol A.SH\): 1 bad row\(s\): non-positive price at line 4"):
        load_market_data(long_file)


def test_when_every_row_is_dropped_there_is_no_usable_symbol(tmp_path):
    folder = _folder(tmp_path, {"A.SH.csv": HEADER + "2024-01-02,1,1.1,0.9,-1,100\n"})
    with pytest.raises(DataError, match="no usable symbol"):
        load_market_data(folder, bad_rows="drop")


# --------------------------------------------------------------------------- which symbols
def test_a_missing_symbol_file_is_a_warning_and_a_skip(tmp_path, caplog):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD, "159915.SZ.csv": GOOD})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = load_market_data(folder, symbols=["510300.SH", "999999.SH"])
    assert data.symbols == ["510300.SH"] and data.skipped == ["999999.SH"]
    assert "no price file for symbol 999999.SH" in caplog.text


def test_no_usable_symbol_is_an_error(tmp_path):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD})
    with pytest.raises(DataError, match="no usable symbol"):
        load_market_data(folder, symbols=["999999.SH", "888888.SZ"])
    with pytest.raises(DataError, match="every symbol has fewer than 1 rows between 2030-01-01 and the end"):
        load_market_data(folder, start=pd.Timestamp("2030-01-01").date())


def test_date_window_and_minimum_history(tmp_path, caplog):
    short = HEADER + ROW.format(day="2024-01-03") + ROW.format(day="2024-01-04")
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD, "159915.SZ.csv": short})
    data = load_market_data(folder, start=pd.Timestamp("2024-01-03").date(), end=pd.Timestamp("2024-01-03").date())
    assert data.prices["date"].dt.strftime("%m-%d").tolist() == ["01-03", "01-03"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = load_market_data(folder, min_history_days=3)
    assert data.symbols == ["510300.SH"] and data.skipped == ["159915.SZ"]
    assert "symbol 159915.SZ has 2 rows in the date range (< 3)" in caplog.text


def test_symbols_are_loaded_in_sorted_order_whatever_order_they_are_asked_in(tmp_path):
    folder = _folder(tmp_path, {"B.SH.csv": GOOD, "A.SH.csv": GOOD, "C.SZ.csv": GOOD})
    prices = load_market_data(folder, symbols=["C.SZ", "A.SH", "C.SZ"]).prices
    assert prices["symbol"].tolist() == ["A.SH"] * 3 + ["C.SZ"] * 3


# --------------------------------------------------------------------------- accepted layouts
def test_common_column_spellings_and_yyyymmdd_dates(tmp_path):
    folder = _folder(tmp_path, {
        "A.SH.csv": "trade_date,Open,High,Low,Close,Vol\n20240102,1,1.1,0.9,1.05,100\n20240103,1.05,1.2,1,1.1,200\n",
        "B.SH.csv": "Date,Open,High,Low,Close,Volume,Amount\n2024-01-02,1,1.1,0.9,1.05,100,105\n2024-01-03,1.05,1.2,1,1.1,200,220\n",
        "C.SH.csv": "\ufeffdate, open, high, low, close, volume\n2024/01/02, 1, 1.1, 0.9, 1.05, 100\n2024/01/03, 1.05, 1.2, 1, 1.1, 200\n",
        "D.SH.csv": 'close,volume,low,high,open,date\n"1.05","100","0.9","1.1","1","2024-01-02"\n"1.1","200","1","1.2","1.05","2024-01-03"\n',
        "E.SH.csv": "datetime,open,high,low,close,volume\n2024-01-02 15:00:00,1,1.1,0.9,1.05,100\n2024-01-03 15:00:00,1.05,1.2,1,1.1,200\n",
    })
    prices = load_market_data(folder).prices
    expected = pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-03"]).astype("datetime64[ns]"), "open": [1.0, 1.05],
                             "high": [1.1, 1.2], "low": [0.9, 1.0], "close": [1.05, 1.1], "volume": [100.0, 200.0]})
    assert prices["symbol"].unique().tolist() == ["A.SH", "B.SH", "C.SH", "D.SH", "E.SH"]
    for symbol, rows in prices.groupby("symbol"):
        pd.testing.assert_frame_equal(rows.drop(columns="symbol").reset_index(drop=True), expected, obj=symbol)


def test_loaded_prices_match_the_schema_sorted_by_symbol_and_date(small_demo_dir):
    prices = load_market_data(small_demo_dir).prices
    PricesSchema.validate(prices)
    assert list(prices.columns) == ["date", "symbol", "open", "high", "low", "close", "volume"]
    assert str(prices["date"].dtype) == "datetime64[ns]" and prices["symbol"].dtype == "str"
    assert prices.index.equals(pd.RangeIndex(len(prices)))
    assert prices.equals(prices.sort_values(["symbol", "date"], ignore_index=True))


def test_long_file_parquet_folder_and_csv_folder_give_the_same_prices(tmp_path):
    demo = generate_demo_prices(DemoSpec(n_symbols=4, years=0.5, seed=1))
    csv_folder = _folder(tmp_path, {f"{s}.csv": c for s, c in demo_csv_bytes(demo).items()})
    from_csv = load_market_data(csv_folder).prices
    pd.testing.assert_frame_equal(from_csv, demo)

    long_csv = tmp_path / "long.csv"
    demo.sort_values(["date", "symbol"]).to_csv(long_csv, index=False)  # date-major, as exports often are
    pd.testing.assert_frame_equal(load_market_data(long_csv).prices, demo)
    long_parquet = tmp_path / "long.parquet"
    demo.sample(frac=1.0, random_state=0).sort_values("date", kind="stable").to_parquet(long_parquet)
    pd.testing.assert_frame_equal(load_market_data(long_parquet).prices, demo)

    pq_folder = tmp_path / "pq"
    pq_folder.mkdir()
    for symbol, rows in demo.groupby("symbol"):
        rows.drop(columns="symbol").to_parquet(pq_folder / f"{symbol}.parquet")
    pd.testing.assert_frame_equal(load_market_data(pq_folder).prices, demo)

    some = sorted(demo["symbol"].unique())[1:3]
    pd.testing.assert_frame_equal(load_market_data(long_csv, symbols=some).prices,
                                  demo[demo["symbol"].isin(some)].reset_index(drop=True))


def test_parquet_files_with_unusual_types_take_the_careful_path(tmp_path):
    days = pd.bdate_range("2024-01-02", periods=3)
    base = {"open": [1, 1, 1], "high": [2, 2, 2], "low": [1, 1, 1], "close": [1.5, 1.5, 1.5], "volume": [10, 20, 30]}
    folder = tmp_path / "pq"
    folder.mkdir()
    pd.DataFrame({"date": days.tz_localize("Asia/Shanghai"), **base}).to_parquet(folder / "A.SH.parquet")
    pd.DataFrame({"trade_date": days.strftime("%Y%m%d").astype(int), **base}).to_parquet(folder / "B.SH.parquet")
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), **base}).to_parquet(folder / "C.SH.parquet")
    prices = load_market_data(folder).prices
    assert prices.groupby("symbol")["date"].apply(list).map(lambda d: d == list(days)).all()
    assert prices["volume"].tolist() == [10.0, 20.0, 30.0] * 3


def test_suspension_days_stay_missing_and_are_not_tradable(tmp_path):
    folder = _folder(tmp_path, {
        "A.SH.csv": GOOD,
        "B.SH.csv": HEADER + "2024-01-02,1,1.1,0.9,1,1\n2024-01-04,1.2,1.3,1.1,1.25,1\n",
    })
    prices = load_market_data(folder).prices
    assert prices[prices["symbol"] == "B.SH"]["date"].dt.day.tolist() == [2, 4]  # no filled row for the 3rd
    panel = to_panel(prices)
    assert panel.tradable[:, 1].tolist() == [True, False, True]
    assert all(np.isnan(getattr(panel, field)[1, 1]) for field in ("open", "high", "low", "close", "volume"))
    assert panel.close[2, 1] == 1.25  # the day after the gap is its own price, not a carried one


def test_bulk_path_and_per_file_path_agree_on_a_mixed_folder(tmp_path):
    """Clean files are parsed together; quoted, CRLF, BOM, gapped and Parquet files on their own;
    a bad file with drop policy goes through the careful path. All must give the rows read_symbol_file gives."""
    demo = generate_demo_prices(DemoSpec(n_symbols=8, years=0.3, seed=4))
    files = demo_csv_bytes(demo)
    names = sorted(files)
    files[names[1]] = files[names[1]].replace(b"\n", b"\r\n")
    files[names[2]] = b"\xef\xbb\xbf" + files[names[2]]
    lines = files[names[3]].decode().splitlines(keepends=True)
    files[names[3]] = "".join([lines[0]] + [",".join(f'"{v}"' for v in line.strip().split(",")) + "\n" for line in lines[1:]]).encode()
    files[names[4]] = files[names[4]].replace(b"\n", b"\n\n", 3)  # blank lines
    files[names[5]] = files[names[5]] + b"2031-01-02,1,1,1,-1,1\n"  # a bad row at the end
    folder = _folder(tmp_path, {f"{s}.csv": c for s, c in files.items() if s != names[6]})
    demo[demo["symbol"] == names[6]].drop(columns="symbol").to_parquet(folder / f"{names[6]}.parquet")

    loaded = load_market_data(folder, bad_rows="drop").prices
    one_by_one = pd.concat([read_symbol_file(path, path.name.rsplit(".", 1)[0], "drop")
                            for path in sorted(folder.iterdir())], ignore_index=True)
    pd.testing.assert_frame_equal(loaded, one_by_one.sort_values(["symbol", "date"], ignore_index=True))
    pd.testing.assert_frame_equal(loaded, demo)


# --------------------------------------------------------------------------- a load kept for the next one
def _fresh(folder: Path, **kw):
    """A load that never takes a kept one (a different source key), so the tests start clean."""
    import stages.common.market_data as md

    md._kept.clear()
    return load_market_data(folder, **kw)


def test_a_kept_load_is_taken_once_by_the_same_call_and_only_while_the_files_are_unchanged(tmp_path, caplog):
    import stages.common.market_data as md

    three = GOOD + ROW.format(day="2024-01-05")
    folder = _folder(tmp_path, {"510300.SH.csv": three, "159915.SZ.csv": GOOD})
    _fresh(folder)
    kept = load_market_data(folder, symbols=["510300.SH", "159915.SZ", "588000.SH"], keep=True)  # one absent: a warning
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = load_market_data(folder, symbols=["510300.SH", "159915.SZ", "588000.SH"])
    assert again is kept  # taken: not read again ...
    assert "no price file for symbol 588000.SH" in caplog.text  # ... and its warnings said again for this run's log
    third = load_market_data(folder, symbols=["510300.SH", "159915.SZ", "588000.SH"])
    assert third is not kept  # once only
    pd.testing.assert_frame_equal(third.prices, kept.prices)

    load_market_data(folder, keep=True)
    assert load_market_data(folder, symbols=["510300.SH"]) is not None and not md._kept  # other arguments: read, kept one dropped

    before = load_market_data(folder, keep=True)
    (folder / "159915.SZ.csv").write_text(GOOD + ROW.format(day="2024-01-05"))  # a file rewritten after the checks
    after = load_market_data(folder)
    assert after is not before and len(after.prices) == len(before.prices) + 1


def test_a_kept_load_serves_an_end_date_only_when_it_selects_the_same_rows(tmp_path):
    folder = _folder(tmp_path, {"510300.SH.csv": GOOD + ROW.format(day="2024-01-05"), "159915.SZ.csv": GOOD})
    _fresh(folder)
    kept = load_market_data(folder, keep=True)  # rows up to 2024-01-05
    assert load_market_data(folder, end=pd.Timestamp("2024-01-05").date()) is kept  # the daily run as of the last day

    kept = load_market_data(folder, keep=True)
    earlier = load_market_data(folder, end=pd.Timestamp("2024-01-04").date())  # drops a row: read again
    assert earlier is not kept and earlier.prices["date"].max() == pd.Timestamp("2024-01-04")

    kept = load_market_data(folder, end=pd.Timestamp("2024-01-04").date(), keep=True)
    later = load_market_data(folder, end=pd.Timestamp("2024-01-05").date())  # rows after the kept end were never read
    assert later is not kept and later.prices["date"].max() == pd.Timestamp("2024-01-05")

    # a symbol too short for the kept range is dropped, but its rows still decide: they reach 2024-01-05
    (tmp_path / "two").mkdir()
    folder2 = _folder(tmp_path / "two", {"510300.SH.csv": GOOD, "159915.SZ.csv": HEADER + ROW.format(day="2024-01-05")})
    kept = load_market_data(folder2, min_history_days=2, keep=True)
    assert kept.skipped == ["159915.SZ"] and kept.prices["date"].max() == pd.Timestamp("2024-01-04")
    assert load_market_data(folder2, min_history_days=2, end=pd.Timestamp("2024-01-04").date()) is not kept
