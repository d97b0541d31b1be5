"""The older design's config.json (signal_pipeline / V4) converts, loads with one warning, and runs.

tests/fixtures/signal_pipeline_config.json is the JSON block of the older design's documentation
(strategies, scoring with buffer_thresholds and "20d" weights, clustering, risk, position_sizing),
written out with the MACD parameters of its strategy entry."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from stages.common.config import load_config
from stages.common.legacy import convert, is_legacy

FIXTURE = Path(__file__).parent / "fixtures" / "signal_pipeline_config.json"


def _leaves(tree, prefix=""):
    if isinstance(tree, list):
        for k, item in enumerate(tree):
            yield from _leaves(item, f"{prefix}[{k}]")
    elif isinstance(tree, dict) and not prefix.endswith("momentum_weights"):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_the_older_example_converts_key_by_key():
    raw = json.loads(FIXTURE.read_text())
    assert is_legacy(raw)
    new, mapped, dropped = convert(raw)
    assert new == {
        "strategy": {"name": "macd", "macd": {"fast": 12, "slow": 26, "signal": 9}},
        "scoring": {"momentum_weights": {"20": 0.3, "60": 0.4, "120": 0.3}, "buy_top_n": 10, "hold_until_rank": 15,
                    "inertia_bonus": 0.05, "rebalance_frequency": 5},
        "clustering": {"correlation_window": 60, "max_positions_per_cluster": 2, "update_frequency": 20},
        "risk": {"atr_window": 14, "atr_multiplier": 2.0, "time_stop_days": 60, "time_stop_threshold": -0.05,
                 "circuit_breaker_threshold": -0.1},
        "position_sizing": {"volatility_method": "ewma", "max_positions": 20, "max_position_size": 0.15,
                            "max_cluster_size": 0.3, "max_total_exposure": 0.95},
    }
    assert dropped == []
    said = [line.split(" ")[0] for line in mapped]
    for leaf in _leaves(raw):  # every key of the older example is accounted for
        assert leaf in said, leaf


def test_the_other_older_shapes_map_or_are_dropped_with_a_reason():
    raw = {
        "env": {"root_dir": "/mnt/d/git/backtesting"}, "modes": {"run_mode": "signal"}, "universe": {"pool_file": "p.csv"},
        "io": {"signals_dir": "signals"},
        "strategies": [{"type": "combo", "mode": "or", "macd_config": {"fast_period": 8}, "kama_config": {"kama_period": 12},
                        "enable_adx_filter": True, "adx_threshold": 25, "weights": {"macd": 0.6}}],
        "scoring": {"buffer_thresholds": {"buy_top_n": 8, "hold_until_rank": 12, "sell_below": 20}},
        "risk": {"enable_t1_restriction": True},
        "position_sizing": {"min_cash_reserve": 0.15},
        "execution": {"commission_rate": 0.0002},
    }
    new, mapped, dropped = convert(raw)
    assert new["strategy"] == {"name": "combo", "combo_mode": "either", "macd": {"fast": 8}, "kama": {"er_window": 12},
                               "filters": {"adx_enabled": True, "adx_threshold": 25}}
    assert new["scoring"] == {"buy_top_n": 8, "hold_until_rank": 12}
    assert new["execution"] == {"commission_rate": 0.0002}
    assert [d.split(" ")[0] for d in dropped] == ["env", "modes", "universe", "io", "strategies[0].weights",
                                                  "scoring.buffer_thresholds.sell_below", "risk.enable_t1_restriction",
                                                  "position_sizing.min_cash_reserve"]
    assert "max_total_exposure" in dropped[-1]
    several, _, _ = convert({"strategies": [{"type": "macd", "fast_period": 10}, {"type": "kama", "kama_period": 8}]})
    assert several["strategy"] == {"name": "combo", "combo_mode": "both", "macd": {"fast": 10}, "kama": {"er_window": 8}}
    split, _, why = convert({"strategies": [{"type": "combo", "mode": "split"}]})
    assert split["strategy"] == {"name": "combo"} and "split" in why[0]


def test_config_import_prints_the_new_config_and_what_it_mapped(tmp_path):
    # the README command, as written
    (tmp_path / "old.json").write_text(FIXTURE.read_text())
    done = subprocess.run(f"{Path(sys.executable).parent / 'trendflow'} config import old.json > new.json", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mapped  scoring.buffer_thresholds.buy_top_n -> scoring.buy_top_n" in done.stderr
    converted = load_config(tmp_path / "new.json")
    assert converted.scoring.buy_top_n == 10 and converted.strategy.name == "macd"
    assert converted.scoring.momentum_weights == {"20": 0.3, "60": 0.4, "120": 0.3}


def test_config_import_of_a_bad_file_is_one_error_line(tmp_path, capsys):
    from flows.cli import main

    (tmp_path / "old.json").write_text(json.dumps({"strategies": [{"type": "macd", "fast_period": 30}]}))
    assert main(["config", "import", str(tmp_path / "old.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "strategy.macd" in err[0]


def test_loading_an_older_file_directly_works_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = load_config(FIXTURE)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "trendflow config import" in warnings[0].getMessage()
    new, _, _ = convert(json.loads(FIXTURE.read_text()))
    from stages.common.config import config_from_dict

    assert config == config_from_dict(new)
    assert load_config(FIXTURE, ["scoring.buy_top_n=5"]).scoring.buy_top_n == 5  # --set applies after conversion


def test_the_older_example_runs(small_demo_dir, tmp_path):
    from stages.signal.__main__ import main as signal_main
    from stages.trading.__main__ import main as trade_main

    argv = ["--config", str(FIXTURE), "--out", str(tmp_path), "--log-level", "WARNING"]
    assert signal_main(argv + ["--data", str(small_demo_dir)]) == 0
    assert trade_main(argv) == 0
    assert (tmp_path / "trade_log.csv").stat().st_size > 100
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    made_with = manifest["lineage"][manifest["artifacts"]["signals_output.parquet"]["lineage"]["keys_hash"]]["config"]
    assert made_with["scoring.momentum_weights.20"] == 0.3 and made_with["strategy.name"] == "macd"
