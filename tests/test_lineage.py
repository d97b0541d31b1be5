"""Lineage: a stage refuses inputs made under other settings (one line, exit 2), `trendflow run`
reruns the stale upstream stages itself, and `trendflow status --lineage` shows what is stale."""
from __future__ import annotations

import json
import shutil

import pytest

from stages.common.config import load_config


def _quiet(argv: list[str]) -> list[str]:
    return argv + ["--log-level", "WARNING"]


@pytest.fixture(scope="module")
def made(small_demo_dir, tmp_path_factory):
    """signal -> trading -> reporting on the small demo universe, default config, stage by stage."""
    from stages.reporting.__main__ import main as report_main
    from stages.signal.__main__ import main as signal_main
    from stages.trading.__main__ import main as trade_main

    out = tmp_path_factory.mktemp("lineage")
    assert signal_main(_quiet(["--data", str(small_demo_dir), "--out", str(out)])) == 0
    assert trade_main(_quiet(["--out", str(out)])) == 0
    assert report_main(_quiet(["--out", str(out)])) == 0
    return out


@pytest.fixture
def folder(made, tmp_path):
    """A private copy of the made folder (tests rewrite artifacts in it)."""
    for path in made.iterdir():
        if path.is_file():
            shutil.copy2(path, tmp_path / path.name)
    return tmp_path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_artifact_records_the_hash_and_values_of_its_own_keys(made):
    from schemas.config import REPORTING_KEYS, SIGNAL_KEYS, TRADING_KEYS

    config = load_config()
    manifest = json.loads((made / "manifest.json").read_text())
    entries, table = manifest["artifacts"], manifest["lineage"]
    expected = {"signal": SIGNAL_KEYS, "trading": TRADING_KEYS, "reporting": REPORTING_KEYS,
                "prices.parquet": ("data",), "data_quality.csv": ("data", "risk.data_ended_sessions"),
                "signals_output.csv": tuple(dict.fromkeys(SIGNAL_KEYS + TRADING_KEYS))}  # the twin: target weights
    for name, entry in entries.items():
        keys = expected.get(name, expected[entry["stage"]])
        digest = entry["lineage"]["keys_hash"]
        assert digest == config.parameters_hash(keys) and tuple(table[digest]["keys"]) == keys, name
    assert len(table) == len({expected.get(name, expected[e["stage"]]) for name, e in entries.items()})  # one per key set
    signals = table[entries["signals_output.parquet"]["lineage"]["keys_hash"]]
    assert entries["signals_output.parquet"]["lineage"]["keys_hash"] == config.signal_hash()
    assert signals["config"]["strategy.macd.fast"] == 12
    assert set(entries["equity_curve.parquet"]["inputs"]) == {"prices.parquet", "signals_output.parquet"}
    assert "equity_curve.parquet" in entries["report.html"]["inputs"]


def test_trading_refuses_signals_made_with_another_signal_key(folder, capsys):
    from stages.trading.__main__ import main as trade_main

    before = (folder / "trade_log.csv").read_bytes()
    assert trade_main(_quiet(["--out", str(folder), "--set", "strategy.macd.fast=5"])) == 2
    assert _error_line(capsys) == ("error: signals_output.parquet was made with strategy.macd.fast=12, now 5: "
                                   "rerun the signal stage or use --stages signal,trading")
    assert (folder / "trade_log.csv").read_bytes() == before
    assert trade_main(_quiet(["--out", str(folder), "--dry-run", "--set", "scoring.momentum_weights={\"20\": 1.0}"])) == 2
    line = _error_line(capsys)
    assert "scoring.momentum_weights.120=0.3, now unset" in line and "scoring.momentum_weights.20=0.3, now 1.0" in line


def test_trading_keys_do_not_make_signals_stale(folder):
    from stages.trading.__main__ import main as trade_main

    assert trade_main(_quiet(["--out", str(folder), "--set", "risk.atr_multiplier=3.0"])) == 0


def test_reporting_refuses_trading_artifacts_made_with_another_trading_key(folder, capsys):
    from stages.reporting.__main__ import main as report_main

    before = (folder / "report.html").read_bytes()
    assert report_main(_quiet(["--out", str(folder), "--set", "risk.atr_multiplier=3.0"])) == 2
    assert _error_line(capsys) == ("error: equity_curve.parquet was made with risk.atr_multiplier=2.0, now 3.0: "
                                   "rerun the trading stage or use --stages trading,reporting")
    assert (folder / "report.html").read_bytes() == before


def test_reporting_refuses_trading_artifacts_made_from_stale_or_rewritten_signals(folder, small_demo_dir, capsys):
    from stages.reporting.__main__ import main as report_main
    from stages.signal.__main__ import main as signal_main

    assert report_main(_quiet(["--out", str(folder), "--set", "strategy.kama.er_window=8"])) == 2
    assert _error_line(capsys) == (
        "error: equity_curve.parquet was made from signals_output.parquet, which was made with strategy.kama.er_window=10, "
        "now 8: rerun the signal stage or use --stages signal,trading,reporting")
    assert signal_main(_quiet(["--data", str(small_demo_dir), "--out", str(folder), "--set", "strategy.kama.er_window=8"])) == 0
    assert report_main(_quiet(["--out", str(folder), "--set", "strategy.kama.er_window=8"])) == 2
    assert _error_line(capsys) == ("error: equity_curve.parquet was made from an earlier signals_output.parquet "
                                   "(rewritten since): rerun the trading stage or use --stages trading,reporting")


def test_plan_adds_the_stale_upstream_stages(folder):
    from stages.common.lineage import plan_stages

    default = load_config()
    assert plan_stages(["trading", "reporting"], folder, default) == (["trading", "reporting"], [])
    assert plan_stages(["reporting"], folder, load_config(overrides=["risk.atr_multiplier=3.0"]))[0] == ["trading", "reporting"]
    stages, notes = plan_stages(["reporting"], folder, load_config(overrides=["strategy.macd.fast=5"]))
    assert stages == ["signal", "trading", "reporting"]
    assert notes[0] == ("equity_curve.parquet was made from signals_output.parquet, which was made with "
                        "strategy.macd.fast=12, now 5: rerunning the signal stage too")
    assert plan_stages(["signal", "reporting"], folder, default)[0] == ["signal", "trading", "reporting"]
    assert plan_stages(["trading"], folder, load_config(overrides=["reporting.risk_free_rate=0.02"]))[0] == ["trading"]


def test_status_lineage_shows_what_each_artifact_was_made_from_and_whether_it_is_stale(folder, capsys):
    from flows.cli import main

    assert main(["status", "--lineage", "--out", str(folder), "--set", "risk.time_stop_days=30"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["signals_output.parquet"].endswith("-> fresh")
    assert "from prices.parquet, signals_output.parquet" in lines["equity_curve.parquet"]
    assert lines["equity_curve.parquet"].endswith("STALE: equity_curve.parquet was made with risk.time_stop_days=60, now 30")
    assert "STALE: report.html was made from equity_curve.parquet, which was made with" in lines["report.html"]


@pytest.mark.prefect
def test_run_reruns_the_stale_signal_stage_and_matches_a_fresh_full_run(small_demo_dir, tmp_path, capsys):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import main, trend_pipeline

    reused, fresh = tmp_path / "reused", tmp_path / "fresh"
    data = ["--data", str(small_demo_dir)]
    with prefect_test_harness(server_startup_timeout=120):
        trend_pipeline(data=str(small_demo_dir), out=str(reused), retry_delay_seconds=0)
        # the README command, as written: --stages trading,reporting after a signal key changed
        assert main(["--out", str(reused)] + data + ["--stages", "trading,reporting", "--set", "strategy.macd.fast=5"]) == 0
        trend_pipeline(data=str(small_demo_dir), out=str(fresh), overrides=["strategy.macd.fast=5"], retry_delay_seconds=0)
    said = "\n".join(p.read_text() for p in sorted((reused / "logs").glob("*.log")))
    assert "signals_output.parquet was made with strategy.macd.fast=12, now 5: rerunning the signal stage too" in said
    assert "[1/3] signal stage finished" in said.split("rerunning the signal stage too", 1)[1]

    def artifacts(folder):
        return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "manifest.json"
                      and not p.name.startswith("."))

    names = artifacts(fresh)
    assert names == artifacts(reused) and "report.html" in names and "signals_output.parquet" in names
    for name in names:
        assert (reused / name).read_bytes() == (fresh / name).read_bytes(), name


# A valid other value for the keys whose default cannot simply be nudged (None, choices, lists).
OTHER_VALUE = {
    "data.bad_rows": "drop", "data.end_date": "2024-06-28", "data.start_date": "2022-01-03", "data.source": "elsewhere",
    "data.symbols": ["A", "B"], "data.market_index_symbol": "A", "strategy.combo_mode": "either", "strategy.name": "macd",
    "clustering.linkage": "complete", "position_sizing.volatility_method": "std", "execution.fill_price": "close",
    "reporting.benchmark": "A", "reporting.signal_horizons": [5], "data.corporate_actions": "actions.csv", "data.calendar": "XSHG",
    "execution.max_volume_share": 0.1, "execution.sell_commission_rate": 0.0002, "execution.stamp_duty_rate": 0.0005,
    "execution.transfer_fee_rate": 0.00001, "execution.volume_unit": "lots", "market.preset": "cn_etf",
    "market.price_decimals": 2, "market.price_limits": True, "risk.market_data": "index.csv",
    "market.settlement": "T+1", "market.symbol_table": "t.csv",
}


def _choices(key):
    """The values a Literal config key allows (empty for other types)."""
    import typing

    from schemas.config import TrendflowConfig

    *sections, leaf = key.split(".")
    model = TrendflowConfig
    for part in sections:
        model = model.model_fields[part].annotation
    field = getattr(model, "model_fields", {}).get(leaf)
    if field is None:
        return []
    literals = [field.annotation] + list(typing.get_args(field.annotation))
    return [v for a in literals if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]


def _other(key, value):
    if key in OTHER_VALUE:
        return OTHER_VALUE[key]
    choices = [c for c in _choices(key) if c != value]
    if choices:
        return choices[0]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.9, 6) if value else 0.01
    pytest.skip(f"no other value known for {key}={value!r}")


def _leaves(keys):
    from stages.common.lineage import leaf_values

    return sorted(leaf_values(load_config(), keys).items())


def _all_leaves():
    from schemas.config import REPORTING_KEYS, SIGNAL_KEYS, TRADING_KEYS

    return ([("signals_output.parquet", "signal", k, v) for k, v in _leaves(SIGNAL_KEYS)]
            + [("equity_curve.parquet", "trading", k, v) for k, v in _leaves(TRADING_KEYS)]
            + [("report.html", "reporting", k, v) for k, v in _leaves(REPORTING_KEYS)])


@pytest.mark.parametrize("name, stage, key, value", _all_leaves(), ids=[f"{s}:{k}" for _, s, k, _ in _all_leaves()])
def test_changing_any_key_of_a_stage_makes_its_outputs_stale_naming_the_key(made, name, stage, key, value):
    from stages.common.lineage import Lineage, StaleArtifactError, staleness

    other = _other(key, value)
    override = f"{key}={json.dumps(other)}"
    if key.startswith("scoring.momentum_weights."):  # the weights sum to 1: move 0.1 from another window
        weights = dict(load_config().scoring.momentum_weights)
        window = key.rsplit(".", 1)[1]
        donor = max((w for w in weights if w != window), key=lambda w: weights[w])
        other = round(value + 0.1, 6)
        weights[window], weights[donor] = other, round(weights[donor] - 0.1, 6)
        override = f"scoring.momentum_weights={json.dumps(weights)}"
    config = load_config(overrides=[override])
    found = staleness(made / name, config)
    shown = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731
    assert found is not None and found.rerun_from == stage
    assert f"{key}={shown(value)}, now {shown(other)}" in found.reason
    downstream = {"signal": "trading", "trading": "reporting"}.get(stage)
    if downstream is not None:  # and the next stage refuses it, saying which stages to run
        with pytest.raises(StaleArtifactError, match=f"rerun the {stage} stage or use --stages {stage},{downstream}$"):
            Lineage(downstream, config).check_input(made / name)


def test_inputs_read_from_another_folder_are_followed(made, tmp_path, monkeypatch, capsys):
    from stages.reporting.__main__ import main as report_main
    from stages.trading.__main__ import main as trade_main

    monkeypatch.chdir(made.parent)
    relative = made.name  # --in given relative to the working directory, as people type it
    assert trade_main(_quiet(["--in", relative, "--out", str(tmp_path)])) == 0
    from stages.common.lineage import staleness

    assert staleness(tmp_path / "equity_curve.parquet", load_config()) is None
    found = staleness(tmp_path / "equity_curve.parquet", load_config(overrides=["strategy.macd.fast=5"]))
    assert found.reason == ("equity_curve.parquet was made from signals_output.parquet, which was made with "
                            "strategy.macd.fast=12, now 5")
    assert report_main(_quiet(["--out", str(tmp_path), "--set", "strategy.macd.fast=5"])) == 2
    assert "rerun the signal stage or use --stages signal,trading,reporting" in capsys.readouterr().err


def test_an_edited_file_named_by_the_config_makes_what_was_made_from_it_stale(folder, small_demo_dir, capsys):
    from stages.common.lineage import staleness
    from stages.reporting.__main__ import main as report_main
    from stages.trading.__main__ import main as trade_main

    index = folder / "index.csv"
    index.write_text((sorted(small_demo_dir.glob("*.csv"))[0]).read_text())
    with_index = ["--set", f"risk.market_data={index}"]
    assert trade_main(_quiet(["--out", str(folder)] + with_index)) == 0
    config = load_config(overrides=[f"risk.market_data={index}"])
    assert staleness(folder / "equity_curve.parquet", config) is None
    index.write_text(index.read_text() + "\n")  # the index file edited since
    found = staleness(folder / "equity_curve.parquet", config)
    assert found.reason == (f"equity_curve.parquet was made from risk.market_data = {index.resolve()} as it was then "
                            "(changed since)") and found.rerun_from == "trading"
    assert report_main(_quiet(["--out", str(folder)] + with_index)) == 2
    assert "rerun the trading stage or use --stages trading,reporting" in capsys.readouterr().err


def test_a_refetched_data_panel_makes_the_signals_made_from_it_stale(made, tmp_path, capsys):
    import pandas as pd

    from schemas.prices import PricesSchema
    from stages.common.artifacts import stage_run
    from stages.common.lineage import staleness
    from stages.signal.__main__ import main as signal_main
    from stages.trading.__main__ import main as trade_main

    store, out = tmp_path / "data_store", tmp_path / "out"
    panel = pd.read_parquet(made / "prices.parquet")
    with stage_run("data", store) as run:  # what `trendflow fetch` writes
        run.write(panel, "adjusted_prices.parquet", PricesSchema, csv_twin=False)
    assert signal_main(_quiet(["--data", str(store / "adjusted_prices.parquet"), "--out", str(out)])) == 0
    assert staleness(out / "signals_output.parquet", load_config()) is None
    with stage_run("data", store) as run:  # a re-fetch revised the last close
        run.write(panel.assign(close=panel["close"].where(panel.index != len(panel) - 1, panel["close"] * 1.01)),
                  "adjusted_prices.parquet", PricesSchema, csv_twin=False)
    found = staleness(out / "signals_output.parquet", load_config())
    assert found.reason == "signals_output.parquet was made from an earlier adjusted_prices.parquet (rewritten since)"
    assert trade_main(_quiet(["--out", str(out)])) == 2
    assert _error_line(capsys) == ("error: prices.parquet was made from an earlier adjusted_prices.parquet "
                                   "(rewritten since): rerun the signal stage or use --stages signal,trading")
