"""Parameter sweeps and walk-forward validation."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import flows.sweep as sweep
from stages.common.config import load_config
from stages.common.errors import ConfigError
from stages.sweep.grid import expand, load_grid
from stages.sweep.overfitting import deflated_sharpe_ratio, pbo_cscv, per_session_sharpes
from stages.sweep.runner import walk_forward_windows
from tests.conftest import shared_data_dir

GRID = {"risk.atr_multiplier": [1.5, 2.5], "clustering.correlation_window": [40, 60]}


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(GRID))
    return path


def test_grid_ranges_and_errors(tmp_path):
    base = load_config().model_dump(mode="json")
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"risk.atr_multiplier": {"start": 1.5, "stop": 2.5, "step": 0.5}, "scoring.buy_top_n": [5, 10]}))
    grid = load_grid(path, base)
    assert grid["risk.atr_multiplier"] == [1.5, 2.0, 2.5] and len(expand(grid)) == 6
    for bad, message in [({"risk.nope": [1]}, "risk.nope"), ({"risk.atr_multiplier": ["x"]}, "risk.atr_multiplier"),
                         ({"risk.atr_multiplier": []}, "empty"), ({"risk.atr_multiplier": 2}, "list of values")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message):
            load_grid(path, base)


def test_sweep_equals_each_combination_run_by_hand_and_reuses_signals(grid_file, small_demo_dir, tmp_path, monkeypatch):
    from stages.reporting import run_reporting_stage
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    calls = []
    real = sweep.compute_signals
    monkeypatch.setattr(sweep, "compute_signals", lambda prices, config: calls.append(config.signal_hash()) or real(prices, config))
    summary = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path / "sweep"), progress=False, local_processes=1)
    assert summary["combinations"] == 4 and len(calls) == 2 == summary["signal_settings"]  # once per signal setting
    results = pd.read_parquet(tmp_path / "sweep" / "sweep_results.parquet")
    assert (results["status"] == "ok").all()
    for row in results.itertuples():
        overrides = [f"risk.atr_multiplier={results.loc[row.Index, 'param:risk.atr_multiplier']}",
                     f"clustering.correlation_window={results.loc[row.Index, 'param:clustering.correlation_window']}"]
        config = load_config(None, overrides)
        out = tmp_path / f"by_hand_{row.combo_id}"
        run_signal_stage(config, small_demo_dir, out)
        run_trading_stage(config, out, out)
        run_reporting_stage(config, out, out)
        metrics = json.loads((out / "performance_summary.json").read_text())["metrics"]
        for key in ("sharpe", "total_return", "max_drawdown", "cagr"):
            assert getattr(row, key) == pytest.approx(metrics[key], rel=1e-12), key
    report = (tmp_path / "sweep" / "sweep_report.html").read_text()
    assert "Sharpe over" in report or "sharpe over" in report  # the heatmap section
    assert all(cid in report for cid in results["combo_id"])  # 4 combinations: all in the top-10 table


def test_interrupted_sweep_resumes_without_redoing_finished_combinations(grid_file, small_demo_dir, tmp_path, monkeypatch):
    real = sweep.evaluate
    done = []

    def interrupt_after_two(*args, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "evaluate", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    counted = []
    monkeypatch.setattr(sweep, "evaluate", lambda *a, **k: counted.append(1) or real(*a, **k))
    summary = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    assert len(counted) == 2 and summary["ran"] == 2 and len(summary["results"]) == 4
    again = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    assert again["ran"] == 0


def test_failed_combination_is_reported_not_dropped(grid_file, small_demo_dir, tmp_path, monkeypatch):
    real = sweep.evaluate

    def fail_wide_stops(prices, signals, config, *a, **k):
        if config.risk.atr_multiplier == 2.5:
            raise RuntimeError("boom")
        return real(prices, signals, config, *a, **k)

    monkeypatch.setattr(sweep, "evaluate", fail_wide_stops)
    summary = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    results = summary["results"]
    assert summary["failed"] == 2 and results.loc[results["status"] == "failed", "error"].str.contains("boom").all()


def test_walk_forward_test_spans_never_touch_their_training_spans(small_demo_dir, tmp_path):
    dates = pd.bdate_range("2015-01-05", periods=2520)
    windows = walk_forward_windows(dates, "train=3y,test=1y,step=1y")
    assert len(windows) >= 6
    for w in windows:
        assert w.train[1] <= w.test[0] and w.train[0] < w.train[1] and w.test[0] < w.test[1]
        assert dates[w.test[0]] > dates[w.train[1] - 1]
    with pytest.raises(ConfigError):
        walk_forward_windows(dates, "train=3x,test=1y,step=1y")
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [1.5, 2.5]}))
    sweep.run_sweep(str(grid), data=str(small_demo_dir), out=str(tmp_path / "wf"), walk_forward="train=1y,test=6m,step=6m",
                    progress=False, local_processes=1)
    wf = pd.read_parquet(tmp_path / "wf" / "walk_forward_results.parquet")
    page = (tmp_path / "wf" / "sweep_report.html").read_bytes()
    assert (wf["test_start"] > wf["train_end"]).all() and len(wf) >= 3
    equity = pd.read_parquet(tmp_path / "wf" / "walk_forward_equity.parquet")
    assert equity["date"].is_monotonic_increasing and equity["date"].min() >= wf["test_start"].min()
    # the training runs are resumable too: a rerun recomputes none of them and gives the same windows
    redone = []
    real = sweep.evaluate
    try:
        sweep.evaluate = lambda *a, **k: redone.append(1) or real(*a, **k)
        sweep.run_sweep(str(grid), data=str(small_demo_dir), out=str(tmp_path / "wf"), walk_forward="train=1y,test=6m,step=6m",
                        progress=False, local_processes=1)
    finally:
        sweep.evaluate = real
    assert redone == []
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "wf" / "walk_forward_results.parquet"), wf)
    assert (tmp_path / "wf" / "sweep_report.html").read_bytes() == page  # the same inputs give the same page


def test_batches_cover_every_job_once_grouped_by_signal_file():
    jobs = [(f"s{i % 3}", {"i": i}, None) for i in range(10)]
    batches = sweep.batches_of(jobs, 4)
    flat = [j for b in batches for j in b]
    assert len(batches) == 4 and sorted(j[1]["i"] for j in flat) == list(range(10))
    assert [j[0] for j in flat] == sorted(j[0] for j in jobs) and max(map(len, batches)) - min(map(len, batches)) <= 1
    assert len(sweep.batches_of(jobs[:2], 8)) == 2


@pytest.mark.prefect
@pytest.mark.slow
def test_sweep_on_a_local_dask_cluster_equals_the_local_result(grid_file, small_demo_dir, tmp_path):
    pytest.importorskip("prefect_dask")
    from prefect.testing.utilities import prefect_test_harness

    local = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path / "local"), progress=False, local_processes=1)
    with prefect_test_harness(server_startup_timeout=120):
        dask = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path / "dask"), workers=2, progress=False)
        # every batch is a task run of the sweep's flow run on the flow's own API, and the table artifact is there
        from prefect import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs()
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sweep-best"])))
    cols = ["combo_id", "sharpe", "total_return", "max_drawdown", "closed_trades"]
    pd.testing.assert_frame_equal(local["results"][cols], dask["results"][cols])
    assert np.isfinite(dask["results"]["sharpe"]).all()
    batches = [r for r in task_runs if r.name.startswith("sweep-combinations")]
    assert len(batches) == 4 and all(r.state.is_completed() for r in batches)
    assert len({r.flow_run_id for r in batches}) == 1 and artifacts[0].flow_run_id == batches[0].flow_run_id
    best = json.loads(artifacts[0].data) if isinstance(artifacts[0].data, str) else artifacts[0].data
    assert len(artifacts) == 1 and {r["combo_id"] for r in best} == set(dask["results"]["combo_id"])


@pytest.mark.prefect
def test_dask_workers_share_the_flows_prefect_api():
    """Without PREFECT_API_URL, the flow and the workers of the LocalCluster use one temporary server (left
    to Prefect, each worker process started its own); a configured server, or a remote cluster that could
    not reach this machine, keeps Prefect's own settings."""
    pytest.importorskip("prefect_dask")
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert sweep._temporary_prefect_server(reachable=True) is None
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert isinstance(sweep._temporary_prefect_server(reachable=True), SubprocessASGIServer)
        assert sweep._temporary_prefect_server(reachable=False) is None


@pytest.mark.slow
def test_dask_workers_that_cannot_start_are_an_error_not_a_hang(monkeypatch):
    pytest.importorskip("prefect_dask")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setattr(sweep, "WORKER_PRELOAD", ["trendflow_no_such_module"])
    monkeypatch.setattr(sweep, "WORKER_START_TIMEOUT", 5)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # never contacted
        with pytest.raises(RuntimeError, match="no Dask worker process started"):
            with sweep.DaskBackend(1, None) as backend, backend.ready():
                pass


def test_resume_is_keyed_by_base_config_too(grid_file, small_demo_dir, tmp_path):
    first = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    other = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1,
                            overrides=["scoring.buy_top_n=3"])
    assert first["ran"] == 4 and other["ran"] == 4  # a different --set is a different sweep: nothing reused
    assert not np.allclose(first["results"]["total_return"], other["results"]["total_return"])


def test_transient_failures_are_retried_and_persistent_ones_reported(grid_file, small_demo_dir, tmp_path, monkeypatch):
    from stages.common.errors import TransientIOError

    real = sweep.evaluate
    seen = {}
    monkeypatch.setattr(sweep, "TRANSIENT_ATTEMPTS", 3)

    def flaky(prices, signals, config, *a, **k):
        key = (config.risk.atr_multiplier, config.clustering.correlation_window)
        seen[key] = seen.get(key, 0) + 1
        if config.risk.atr_multiplier == 2.5 and config.clustering.correlation_window == 60:
            raise TransientIOError("share gone")  # never recovers
        if seen[key] == 1:
            raise TransientIOError("blip")  # recovers on the second attempt
        return real(prices, signals, config, *a, **k)

    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    monkeypatch.setattr(sweep, "evaluate", flaky)
    summary = sweep.run_sweep(str(grid_file), data=str(small_demo_dir), out=str(tmp_path), progress=False, local_processes=1)
    results = summary["results"].set_index("combo_id")
    assert summary["failed"] == 1 and (results["status"] == "ok").sum() == 3
    assert results.loc[results["status"] == "failed", "error"].str.contains("share gone.*after 3 attempts").all()
    assert seen[(2.5, 60)] == 3 and all(n == 2 for k, n in seen.items() if k != (2.5, 60))


def test_walk_forward_selects_on_train_only_and_trades_fresh_from_test_start(small_demo_dir, tmp_path, monkeypatch):
    from stages.sweep import runner

    calls = {"evaluate": [], "backtest": []}
    real_evaluate, real_backtest = sweep.evaluate, sweep.backtest
    monkeypatch.setattr(sweep, "evaluate", lambda p, s, c, start=0, end=None: calls["evaluate"].append((start, end))
                        or real_evaluate(p, s, c, start, end))
    tests = []

    def record_backtest(p, s, c, start=0, end=None):
        result = real_backtest(p, s, c, start, end)
        tests.append((start, end, result))
        return result

    monkeypatch.setattr(sweep, "backtest", record_backtest)
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [1.5, 2.5], "scoring.buy_top_n": [3, 6]}))
    sweep.run_sweep(str(grid), data=str(small_demo_dir), out=str(tmp_path / "wf"), walk_forward="train=1y,test=6m,step=6m",
                    metric="annual_volatility", progress=False, local_processes=1)
    wf = pd.read_parquet(tmp_path / "wf" / "walk_forward_results.parquet")
    prices = pd.read_parquet(next((tmp_path / "wf" / "sweep_state").rglob("prices.parquet")))
    dates = pd.DatetimeIndex(np.unique(prices["date"]))
    windows = runner.walk_forward_windows(dates, "train=1y,test=6m,step=6m")
    wf_calls = calls["evaluate"][-4 * len(windows):]  # the sweep's own full-history evaluations come first
    assert len(tests) == len(windows) == len(wf)
    for w, row, (start, end, test) in zip(windows, wf.itertuples(), tests):
        # selection saw the training span only
        assert set(wf_calls[4 * w.index: 4 * w.index + 4]) == {w.train}
        assert w.train[1] <= w.test[0] and (start, end) == w.test
        # trading starts from cash on the first test day; signals there use earlier prices (no warm-up gap)
        curve = test.equity_curve
        assert curve["date"].iloc[0] == dates[w.test[0]] and curve["date"].iloc[-1] == dates[w.test[1] - 1]
        assert len(test.trade_log) == 0 or test.trade_log["date"].min() >= dates[w.test[0]]
        assert test.market.atr[w.test[0]][test.market.tradable[w.test[0]]].size > 0
        assert np.isfinite(test.market.atr[w.test[0]][test.market.tradable[w.test[0]]]).all()
        # lowest volatility wins for a lower-is-better metric, chosen among the train-span results
        assert row.in_sample == pytest.approx(min(real_evaluate(prices, pd.read_parquet(path), cfg, *w.train)["annual_volatility"]
                                                  for path, cfg in _signal_configs(tmp_path / "wf", grid)), rel=1e-12)
    equity = pd.read_parquet(tmp_path / "wf" / "walk_forward_equity.parquet")
    for (w, (_, _, test)), nxt in zip(zip(windows, tests), windows[1:]):
        # each test span's curve continues from where the previous one ended
        last = equity.loc[equity["window"] == w.index, "equity"].iloc[-1]
        first = equity.loc[equity["window"] == nxt.index, "equity"].iloc[0]
        next_curve = tests[nxt.index][2].equity_curve
        assert first / last == pytest.approx(next_curve["equity"].iloc[0] / load_config().execution.initial_cash, rel=1e-12)


def _signal_configs(out, grid_path):
    from stages.sweep.grid import base_config_dict, combo_id, config_for, expand, load_grid

    base = base_config_dict(None, [])
    state = next((out / "sweep_state").iterdir())
    pairs = []
    for combo in expand(load_grid(grid_path, base)):
        config = config_for(base, combo)
        pairs.append((state / f"signals_{config.signal_hash()[:16]}.parquet", config))
    return pairs


def test_heatmap_axes_are_the_keys_that_move_sharpe_most():
    rows = [{"param:a": json.dumps(a), "param:b": json.dumps(b), "param:c": json.dumps(c), "param:d": "1",
             "sharpe": 1.0 * a + 0.01 * b + 0.3 * c}
            for a in (1, 2) for b in (1, 2, 3) for c in (1, 2)]
    assert sweep.important_axes(pd.DataFrame(rows), ["a", "b", "c", "d"]) == ["a", "c"]


def test_walk_forward_sweep_on_real_etfs_reports_the_oos_chart_dsr_pbo_and_parameters_by_name(tmp_path):
    """cn_etf, 6 symbols, 4 combinations, 2-year training / 1-year test windows: the report names every
    parameter, draws the stitched out-of-sample curve against the in-sample best and buy-and-hold, and
    states the DSR and PBO figures of sweep_overfitting.json in its verdict."""
    from schemas.sweep import OverfittingSummary
    from tests.test_reporting_report import check_page

    folder = shared_data_dir("cn_etf")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [2.0, 3.0], "scoring.buy_top_n": [2, 3]}))
    symbols = ["510360.SH", "518800.SH", "513050.SH", "512880.SH", "511260.SH", "515700.SH"]
    summary = sweep.run_sweep(str(grid), data=str(folder), out=str(tmp_path / "out"), walk_forward="train=2y,test=1y,step=1y",
                              overrides=[f"data.symbols={json.dumps(symbols)}", "data.start_date=2020-01-01",
                                         "data.end_date=2024-12-31"], progress=False, local_processes=1)
    out = tmp_path / "out"
    overfit = OverfittingSummary.model_validate_json((out / "sweep_overfitting.json").read_text())
    results = summary["results"].set_index("combo_id")
    assert overfit.trials == 4 and overfit.pbo_splits == 16 and overfit.pbo_combinations == 12870
    assert 0 <= overfit.pbo <= 1 and 0 <= overfit.deflated_sharpe <= 1
    # the DSR's Sharpe is the results table's Sharpe of the selected combination (same returns, same rate)
    assert overfit.sharpe == pytest.approx(results.loc[overfit.selected_combo_id, "sharpe"], rel=1e-9)
    assert overfit.selected_combo_id == results["sharpe"].idxmax()
    assert set(overfit.selected_params) == {"risk.atr_multiplier", "scoring.buy_top_n"}

    text = (out / "sweep_report.html").read_text()
    parsed = check_page(text)
    assert "walk-forward" in parsed.charts
    visible = " ".join(parsed.text)
    assert f"deflated {overfit.deflated_sharpe:.2f}" in visible and f"PBO {overfit.pbo:.2f}" in visible
    assert re.search(r"selected by sharpe: Sharpe -?\d+\.\d\d, deflated \d\.\d\d after 4 trials .*(not )?significant at 95%", visible)
    wf = pd.read_parquet(out / "walk_forward_results.parquet")
    for key in ("risk.atr_multiplier", "scoring.buy_top_n"):
        assert text.count(f"<th>{key}</th>") >= 2  # the selected combination's table and the per-window table
    assert all(json.loads(p).keys() == {"risk.atr_multiplier", "scoring.buy_top_n"} for p in wf["params"])
    equity = pd.read_parquet(out / "walk_forward_equity.parquet")
    assert equity[["in_sample_best", "buy_and_hold"]].notna().all().all()
    assert "pbo" in parsed.charts
    # the summary over the test spans: each curve's growth from the starting capital
    initial = load_config().execution.initial_cash
    for column, label in [("equity", "walk-forward (out of sample)"), ("in_sample_best", "in-sample best (hindsight)"),
                          ("buy_and_hold", "buy-and-hold, equal weight")]:
        grown = equity[column].iloc[-1] / initial - 1
        assert re.search(rf'<td class="t">{re.escape(label)}</td><td( class="neg")?>{100 * grown:.2f}%</td>', text), label
    # sweep_returns.parquet holds what DSR and PBO were computed from: recomputing from it gives the same figures
    returns = pd.read_parquet(out / "sweep_returns.parquet").set_index("date")
    assert sorted(returns.columns) == sorted(results.index)
    matrix = returns.to_numpy()  # risk-free rate 0 by default
    sharpes = per_session_sharpes(matrix)
    dsr = deflated_sharpe_ratio(returns[overfit.selected_combo_id].to_numpy(), sharpes)
    assert overfit.deflated_sharpe == pytest.approx(dsr.dsr, rel=1e-12)
    assert overfit.pbo == pbo_cscv(matrix, 16).pbo
    from stages.common.validate import main as validate_main  # every sweep artifact checks against its schema

    assert validate_main([str(out)]) == 0


def test_walk_forward_yardsticks_start_with_the_stitched_curve_by_hand():
    dates = pd.bdate_range("2024-01-01", periods=5)
    prices = pd.DataFrame({"date": list(dates) * 2, "symbol": ["A"] * 5 + ["B"] * 5,
                           "close": [10, 11, 12, 12, 15, 20, 20, 18, 24, 24.0]})
    stitched = pd.DataFrame({"date": dates[2:], "equity": [100.0, 101.0, 103.0], "window": [0, 0, 1]})
    best = {"returns": [0.0, 0.1, 0.5, -0.2, 0.1]}
    out = sweep.with_comparisons(stitched, prices, best, 100.0)
    # both start from 100 at the close before the first test day (dates[1])
    np.testing.assert_allclose(out["in_sample_best"], [150.0, 120.0, 132.0])
    np.testing.assert_allclose(out["buy_and_hold"], [100 * (12 / 11 + 18 / 20) / 2, 100 * (12 / 11 + 24 / 20) / 2,
                                                     100 * (15 / 11 + 24 / 20) / 2])


def test_pbo_splits_from_the_command_line(small_demo_dir, tmp_path, capsys):
    """README: `trendflow sweep --grid grid.json --pbo-splits 20`; an odd count is an input error."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [1.5, 2.5]}))
    args = ["--grid", str(grid), "--data", str(small_demo_dir), "--out", str(tmp_path / "out"), "--no-progress", "--processes", "1"]
    assert sweep.main([*args, "--pbo-splits", "20"]) == 0
    overfit = json.loads((tmp_path / "out" / "sweep_overfitting.json").read_text())
    assert overfit["pbo_splits"] == 20 and overfit["pbo_combinations"] == 184756
    assert f"overfitting: {overfit['verdict']}" in capsys.readouterr().out
    assert sweep.main([*args, "--pbo-splits", "15"]) == 2
    assert "error: --pbo-splits 15" in capsys.readouterr().err


def test_a_one_combination_sweep_has_a_dsr_without_deflation_and_says_why_there_is_no_pbo(small_demo_dir, tmp_path):
    from stages.reporting.metrics import probabilistic_sharpe_ratio

    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [2.0]}))
    summary = sweep.run_sweep(str(grid), data=str(small_demo_dir), out=str(tmp_path / "out"), progress=False, local_processes=1)
    overfit = summary["overfitting"]
    returns = pd.read_parquet(tmp_path / "out" / "sweep_returns.parquet").set_index("date").iloc[:, 0]
    assert overfit.trials == 1 and overfit.expected_max_sharpe == 0 and overfit.pbo is None
    assert overfit.deflated_sharpe == pytest.approx(probabilistic_sharpe_ratio(returns, 0.0), rel=1e-9)  # nothing to deflate
    assert "PBO needs at least two successful combinations" in overfit.notes
    text = (tmp_path / "out" / "sweep_report.html").read_text()
    assert "PBO needs at least two successful combinations" in text and "risk.atr_multiplier" in text


def test_a_record_without_daily_returns_is_run_again(small_demo_dir, tmp_path):
    """Records written before the sweep kept each combination's returns cannot feed DSR/PBO: they are redone."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"risk.atr_multiplier": [1.5, 2.5]}))
    args = dict(data=str(small_demo_dir), out=str(tmp_path / "out"), progress=False, local_processes=1)
    sweep.run_sweep(str(grid), **args)
    record = next(p for p in (tmp_path / "out" / "sweep_state").rglob("*.json"))
    row = json.loads(record.read_text())
    del row["returns"]
    record.write_text(json.dumps(row))
    again = sweep.run_sweep(str(grid), **args)
    assert again["ran"] == 1 and again["overfitting"].trials == 2
