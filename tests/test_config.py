"""Config loading: defaults, every kind of config error (message names the file and key path), --set overrides."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from schemas.config import TrendflowConfig
from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.common.config import DEFAULT_CONFIG_PATH, load_config, parse_override
from stages.common.errors import ConfigError


def _write(tmp_path: Path, content, name: str = "my_config.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_default_json_holds_every_key_of_the_model():
    assert json.loads(DEFAULT_CONFIG_PATH.read_text()) == TrendflowConfig().model_dump(mode="json")


def test_a_file_may_omit_keys_and_defaults_fill_them(tmp_path):
    config = load_config(_write(tmp_path, {"risk": {"atr_multiplier": 3.0}}))
    assert config.risk.atr_multiplier == 3.0
    assert config.risk.atr_window == 14 and config.scoring.buy_top_n == 10
    assert config.scoring.momentum_weights == {"20": 0.3, "60": 0.4, "120": 0.3}


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"riskk": {}}, "unknown key 'riskk' (did you mean 'risk'?)"),
        ({"risk": {"atr_multipler": 2}}, "unknown key 'risk.atr_multipler' (did you mean 'atr_multiplier'?)"),
        ({"strategy": {"macd": {"fastt": 5}}}, "unknown key 'strategy.macd.fastt' (did you mean 'fast'?)"),
        ({"risk": {"zzz": 1}}, "unknown key 'risk.zzz' (known keys: atr_multiplier, atr_window"),
        ({"risk": {"atr_multiplier": "2.5"}}, "key 'risk.atr_multiplier': Input should be a valid number; got '2.5' (str)"),
        ({"execution": {"lot_size": True}}, "key 'execution.lot_size': Input should be a valid integer; got True"),
        ({"execution": {"lot_size": 100.5}}, "key 'execution.lot_size'"),
        ({"risk": 5}, "key 'risk': Input should be a valid dictionary"),
        ({"data": {"symbols": "510300.SH"}}, "key 'data.symbols': Input should be a valid list"),
        ({"risk": {"atr_multiplier": -1}}, "key 'risk.atr_multiplier': Input should be greater than 0; got -1"),
        ({"position_sizing": {"max_positions": 0}}, "key 'position_sizing.max_positions': Input should be greater than or equal to 1"),
        ({"position_sizing": {"max_position_size": 1.5}}, "key 'position_sizing.max_position_size': Input should be less than or equal to 1"),
        ({"execution": {"fill_price": "vwap"}}, "key 'execution.fill_price': Input should be 'next_open' or 'close'; got 'vwap'"),
        ({"data": {"bad_rows": "ignore"}}, "key 'data.bad_rows': Input should be 'error' or 'drop'"),
        ({"data": {"start_date": "2020-13-01"}}, "key 'data.start_date'"),
        ({"strategy": {"macd": {"fast": 30}}}, "key 'strategy.macd': fast (30) must be below slow (26)"),
        ({"scoring": {"buy_top_n": 20, "hold_until_rank": 15}}, "hold_until_rank (15) must be >= buy_top_n (20)"),
        ({"scoring": {"momentum_weights": {"x": 1.0}}}, "momentum_weights key 'x' must be a window length in days"),
        ({"scoring": {"momentum_weights": {"20": 0.0, "60": 0.0}}}, "momentum_weights must not all be 0"),
    ],
    ids=["unknown-section", "unknown-key", "unknown-nested-key", "unknown-key-no-close-match", "string-for-number",
         "bool-for-int", "float-for-int", "value-for-section", "string-for-list", "negative", "zero-positions",
         "above-one", "bad-choice", "bad-policy", "bad-date", "macd-fast-above-slow", "buffer-zone-inverted",
         "weights-key", "weights-all-zero"],
)
def test_config_errors_name_the_file_and_key_path(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message, message


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"risk": {"atr_multiplier": "x", "nope": 1}, "execution": {"lot_size": 0}}))
    message = str(err.value)
    assert "risk.atr_multiplier" in message and "risk.nope" in message and "execution.lot_size" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[1, 2]", "the top level must be a JSON object, got an array"),
        ("null", "the top level must be a JSON object, got null"),
        ('"risk"', "the top level must be a JSON object, got a string"),
        ('{"risk": {\n  "atr_multiplier": 2.0,,\n}}', "is not valid JSON: Expecting property name enclosed in double quotes at line 2 column 25"),
        ("", "is not valid JSON: Expecting value at line 1 column 1"),
        ('{"risk": {"atr_multiplier": NaN}}', "NaN is not a number JSON allows"),
        ('{"execution": {"initial_cash": Infinity}}', "Infinity is not a number JSON allows"),
        ('{"risk": {"atr_multiplier": 2.0}} trailing', "is not valid JSON: Extra data at line 1 column 35"),
        (b'{"data": {"source": "\xff\xfe"}}', "is not UTF-8 text (byte 21"),
    ],
    ids=["array", "null", "string", "syntax-error", "empty-file", "nan", "infinity", "trailing-garbage", "not-utf8"],
)
def test_unreadable_or_invalid_json_files_are_named(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_utf8_bom_is_accepted(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps({"risk": {"atr_multiplier": 3.5}}).encode())
    assert load_config(path).risk.atr_multiplier == 3.5


def test_missing_config_file_and_folder_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json does not exist"):
        load_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="is a folder, not a JSON file"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- --set overrides
def test_overrides_are_json_values_or_text():
    config = load_config(None, [
        "risk.atr_multiplier=2.5",
        "execution.lot_size=200",
        "strategy.filters.adx_enabled=true",
        'data.symbols=["510300.SH", "159915.SZ"]',
        "data.start_date=2020-01-02",
        "strategy.name=kama",
        'scoring.momentum_weights={"20": 0.5, "60": 0.5}',
    ])
    assert config.risk.atr_multiplier == 2.5 and config.execution.lot_size == 200
    assert config.strategy.filters.adx_enabled is True and config.strategy.name == "kama"
    assert config.data.symbols == ["510300.SH", "159915.SZ"]
    assert str(config.data.start_date) == "2020-01-02"
    assert config.scoring.momentum_weights == {"20": 0.5, "60": 0.5}


def test_text_settings_keep_digits_as_text_and_lists_take_commas():
    config = load_config(None, ["reporting.benchmark=510300", "data.symbols=510300.SH, 159915.SZ",
                                "reporting.signal_horizons=5,20,60", "data.source=null"])
    assert config.reporting.benchmark == "510300"
    assert config.data.symbols == ["510300.SH", "159915.SZ"]
    assert config.reporting.signal_horizons == [5, 20, 60]
    assert config.data.source is None
    assert load_config(None, ["data.symbols=000001"]).data.symbols == ["000001"]
    assert load_config(None, ["reporting.signal_horizons=5"]).reporting.signal_horizons == [5]


def test_overrides_apply_on_top_of_a_file_without_touching_its_other_keys(tmp_path):
    path = _write(tmp_path, {"risk": {"atr_multiplier": 3.0, "atr_window": 10}})
    config = load_config(path, ["risk.atr_multiplier=1.5", " risk.time_stop_days = 30 "])
    assert (config.risk.atr_multiplier, config.risk.atr_window, config.risk.time_stop_days) == (1.5, 10, 30)
    assert json.loads(path.read_text()) == {"risk": {"atr_multiplier": 3.0, "atr_window": 10}}


def test_later_overrides_win():
    assert load_config(None, ["risk.atr_multiplier=1.5", "risk.atr_multiplier=4"]).risk.atr_multiplier == 4


@pytest.mark.parametrize(
    "override, expected",
    [
        ("risk.atr_multiplier", "override 'risk.atr_multiplier' must look like section.key=value"),
        ("=3", "override '=3' must look like section.key=value"),
        ("risk..atr_multiplier=3", "must look like section.key=value"),
        ("risk.=3", "must look like section.key=value"),
        ("risk.atr_multiplier.x=1", "'risk.atr_multiplier' is a value, not a section"),
        ("risk.nope=1", "unknown key 'risk.nope'"),
        ("rsk.atr_multiplier=3", "unknown key 'rsk' (did you mean 'risk'?)"),
        ("risk.atr_multiplier=abc", "key 'risk.atr_multiplier': Input should be a valid number; got 'abc'"),
        ("risk.atr_multiplier=NaN", "key 'risk.atr_multiplier': Input should be a valid number; got 'NaN'"),
        ("execution.initial_cash=Infinity", "key 'execution.initial_cash': Input should be a valid number; got 'Infinity'"),
        ("risk=1", "key 'risk': Input should be a valid dictionary"),
        ("execution.fill_price=vwap", "key 'execution.fill_price'"),
    ],
    ids=["no-equals", "no-key", "empty-part", "trailing-dot", "into-a-value", "unknown-key", "unknown-section",
         "not-a-number", "nan", "infinity", "section-as-value", "bad-choice"],
)
def test_bad_overrides_are_errors_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value), str(err.value)


def test_parse_override_splits_the_key_path():
    assert parse_override("strategy.macd.fast=8") == (["strategy", "macd", "fast"], 8)
    assert parse_override("data.source=/data/etf") == (["data", "source"], "/data/etf")


def test_command_lines_take_repeated_set_and_report_bad_ones_with_exit_code_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(["--config", str(_write(tmp_path, {"risk": {"atr_window": 10}})),
                              "--set", "risk.atr_multiplier=2.5", "--set", "scoring.buy_top_n=5"])
    config = config_from_args(args)
    assert (config.risk.atr_window, config.risk.atr_multiplier, config.scoring.buy_top_n) == (10, 2.5, 5)

    seen = []
    code = parse_and_run(parser, lambda a: seen.append(config_from_args(a)), ["--set", "risk.atr_multipler=2.5"])
    assert code == 2 and not seen
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown key 'risk.atr_multipler'" in err and "Traceback" not in err
