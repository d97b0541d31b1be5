"""The faster paths of issue 19 give the same bits as the code they replace, and the lazy imports stay lazy."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from stages.signal import indicators as ind


def _run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.94, 1.0 - 1.0 / 14])
def test_lfilter_without_scipy_signal_gives_scipy_lfilter_bits(keep):
    from scipy.signal import lfilter as scipy_lfilter

    rng = np.random.default_rng(7)
    x = rng.standard_t(3, size=(400, 37)) * 1e3
    x[10:13, 4] = np.nan  # a packed column's NaN tail poisons only that column
    x[-5:, 9] = np.inf
    zi = rng.normal(size=(1, 37))
    ours, ours_zf = ind.lfilter([1.0 - keep], [1.0, -keep], x, axis=0, zi=zi)
    theirs, theirs_zf = scipy_lfilter([1.0 - keep], [1.0, -keep], x, axis=0, zi=zi)
    assert ours.tobytes() == theirs.tobytes() and ours_zf.tobytes() == theirs_zf.tobytes()


def test_signal_command_does_not_import_scipy_signal_or_cluster():
    """scipy.signal's package import (scipy.stats, interpolate, optimize...) is what the lfilter loader
    avoids; nor scipy.cluster (spatial, linalg), whose C routines the clustering loads alone."""
    loaded = _run_python(
        "import sys, stages.signal.__main__, stages.signal.stage; "
        "print(sorted(m for m in ('scipy.signal', 'scipy.stats', 'scipy.interpolate', 'scipy.cluster', 'scipy.spatial') "
        "if m in sys.modules))"
    )
    assert loaded == "[]"


def test_report_command_imports_matplotlib_only_when_a_chart_is_drawn():
    """matplotlib is ~0.3 s of the reporting command's start: the chart module loads it on the first chart."""
    loaded = _run_python(
        "import sys, stages.reporting.__main__, stages.reporting.stage; before = 'matplotlib' in sys.modules; "
        "import pandas as pd; from stages.reporting import charts; "
        "svg = charts.underwater_chart(pd.Series([0.0, -0.1, -0.05], index=pd.bdate_range('2024-01-01', periods=3))); "
        "print(before, 'matplotlib' in sys.modules, svg.startswith('<svg'))"
    )
    assert loaded == "False True True"


def test_charts_drawn_without_matplotlibs_property_docstrings_are_the_same_bytes():
    """The chart module imports matplotlib without building each Artist's `set()` property list
    (text nobody reads in a report): the SVG is the one a normally imported matplotlib draws, and
    matplotlib's kwdoc is its own again afterwards."""
    draw = ("import pandas as pd; from stages.reporting import charts; "
            "svg = charts.underwater_chart(pd.Series([0.0, -0.1, -0.05], index=pd.bdate_range('2024-01-01', periods=3))); "
            "import hashlib, matplotlib.artist as a, matplotlib.lines as l; "
            "print(hashlib.sha256(svg.encode()).hexdigest(), a.kwdoc.__name__, 'Properties:' in (l.Line2D.set.__doc__ or ''))")
    lean = _run_python(draw).split()
    normal = _run_python("import matplotlib; matplotlib.use('Agg'); import matplotlib.figure; " + draw).split()
    assert lean[0] == normal[0]
    assert lean[1:] == ["kwdoc", "False"] and normal[1:] == ["kwdoc", "True"]


def test_pack_and_unpack_move_the_values_take_and_put_along_axis_move():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(300, 23))
    valid = rng.random(values.shape) > 0.3
    valid[:, 5] = False  # a symbol that never traded
    values[~valid] = np.nan
    order = np.argsort(~valid, axis=0, kind="stable")
    packing = ind.packing_for(valid)
    packed = ind.pack(values, packing)
    expected = np.take_along_axis(values, order, axis=0)
    expected[~packing.valid] = np.nan
    assert packed.tobytes() == expected.tobytes()
    back = np.full(values.shape, np.nan)
    np.put_along_axis(back, order, np.where(packing.valid, packed, np.nan), axis=0)
    assert ind.unpack(packed, packing).tobytes() == back.tobytes() == values.tobytes()


@pytest.mark.parametrize("method", ["average", "complete", "single", "ward"])
def test_cluster_labels_without_scipy_cluster_give_scipy_labels(method):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from stages.signal import clustering

    rng = np.random.default_rng(11)
    factors = rng.normal(size=(120, 6))
    returns = factors @ rng.normal(size=(6, 90)) * 0.01 + rng.normal(size=(120, 90)) * 0.01
    returns[:, 7] = returns[:, 3]  # an identical pair (distance 0) and a flat column (rho 0 with all)
    returns[:, 8] = 0.0
    ours_linkage, ours_fcluster = clustering._c_hierarchy()  # the C routines, even though scipy.cluster is loaded here
    rho = clustering.correlation_matrix(returns)
    condensed = clustering.correlation_distance(squareform(rho, checks=False))
    assert condensed.tobytes() == clustering.correlation_distance(rho[np.triu_indices(90, k=1)]).tobytes()
    z = linkage(condensed, method=method)
    assert ours_linkage(condensed, method=method).tobytes() == z.tobytes()
    for threshold in (0.5, 1.0, 1.3):
        theirs = fcluster(z, t=threshold, criterion="distance")
        ours = ours_fcluster(z, t=threshold, criterion="distance")
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()
    with pytest.raises(ValueError, match="finite"):
        ours_linkage(np.array([0.5, np.nan, 1.0]), method=method)


def test_signal_run_with_clusters_imports_neither_scipy_cluster_nor_spatial(small_demo_dir, tmp_path):
    loaded = _run_python(
        "import sys; from stages.common.config import load_config; from stages.signal import run_signal_stage; "
        f"run_signal_stage(load_config(), {str(small_demo_dir)!r}, {str(tmp_path)!r}); "
        "import pandas as pd; clusters = pd.read_parquet(" + repr(str(tmp_path / "signals_output.parquet")) + ", columns=['cluster']); "
        "print(int(clusters['cluster'].max()) >= 0, sorted(m for m in ('scipy.cluster', 'scipy.spatial', 'scipy.signal') if m in sys.modules))"
    )
    assert loaded.splitlines()[-1] == "True []"


def test_lfilter_falls_back_to_scipy_when_scipy_signal_is_loaded():
    name = _run_python("import scipy.signal, stages.signal.indicators as i; print(i.lfilter.__module__)")
    assert name.startswith("scipy.signal")


def test_read_artifact_reads_and_checks_only_the_asked_columns(small_demo_dir, tmp_path):
    import pandas as pd

    from schemas.signals import SignalsSchema
    from stages.common.artifacts import read_artifact
    from stages.common.config import load_config
    from stages.common.errors import IntegrityError, SchemaError
    from stages.signal import run_signal_stage
    from stages.trading.market import SIGNAL_COLUMNS_READ

    run_signal_stage(load_config(), small_demo_dir, tmp_path)
    path = tmp_path / "signals_output.parquet"
    whole = read_artifact(path, SignalsSchema)
    part = read_artifact(path, SignalsSchema, columns=SIGNAL_COLUMNS_READ)
    assert list(part.columns) == SIGNAL_COLUMNS_READ
    pd.testing.assert_frame_equal(part, whole[SIGNAL_COLUMNS_READ])

    bad = whole.copy()
    bad.loc[3, "trend_signal"] = 7
    (tmp_path / "other").mkdir()
    bad.to_parquet(tmp_path / "other" / "signals_output.parquet")  # no manifest there: the schema must catch it
    with pytest.raises(SchemaError, match="trend_signal"):
        read_artifact(tmp_path / "other" / "signals_output.parquet", SignalsSchema, columns=SIGNAL_COLUMNS_READ)
    bad.to_parquet(path)  # edited after the run: refused whatever columns are asked
    with pytest.raises(IntegrityError):
        read_artifact(path, SignalsSchema, columns=["date", "symbol"])


def test_panel_fingerprint_hashes_the_same_bytes_a_block_of_days_at_a_time():
    """The state's price fingerprint must not change with how it is computed (saved states stay valid)."""
    import hashlib

    import pandas as pd

    from stages.common.panel import OHLCV, Panel
    from stages.signal.state import panel_fingerprints

    rng = np.random.default_rng(3)
    n_days, n_sym = 600, 7
    fields = {f: rng.random((n_days, n_sym)) for f in OHLCV}
    fields["close"][5, 2] = np.nan
    panel = Panel(dates=pd.bdate_range("2020-01-01", periods=n_days), symbols=pd.Index([f"S{i}" for i in range(n_sym)]), **fields)

    def one_array(prefix_days):
        digest = hashlib.sha256("\x1f".join(map(str, panel.symbols)).encode())
        rows = np.empty((n_days, 1 + len(OHLCV) * n_sym))
        rows[:, 0] = panel.dates.asi8.view(np.float64)
        rows[:, 1:] = np.stack([fields[f] for f in OHLCV], axis=-1).reshape(n_days, -1)
        if prefix_days is None:
            digest.update(rows.tobytes())
            return digest.hexdigest(), None
        digest.update(rows[:prefix_days].tobytes())
        prefix = digest.copy().hexdigest()
        digest.update(rows[prefix_days:].tobytes())
        return digest.hexdigest(), prefix

    for prefix_days in (None, 1, 255, 256, 257, 599, 600):
        assert panel_fingerprints(panel, prefix_days) == one_array(prefix_days)


def test_prices_subset_schema_keeps_the_rules_of_the_columns_read():
    import pandas as pd

    from schemas.prices import _CHECK_COLUMNS, PricesSchema, prices_subset_schema
    from stages.common.artifacts import validate_frame
    from stages.common.errors import SchemaError

    assert {check.name for check in PricesSchema.to_schema().checks} == set(_CHECK_COLUMNS)  # every table check listed
    frame = pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-03"]), "symbol": ["A", "A"],
                          "open": [1.0, 1.1], "close": [1.05, 1.2]})
    schema = prices_subset_schema(["date", "symbol", "open", "close"])
    assert list(schema.columns) == ["date", "symbol", "open", "close"]
    assert [check.name for check in schema.checks] == ["dates_ascending"]
    validate_frame(frame.copy(), schema, "prices.parquet")
    with pytest.raises(SchemaError, match="open"):
        validate_frame(frame.assign(open=[1.0, -1.0]), schema, "prices.parquet")
    with pytest.raises(SchemaError, match="ascending"):
        validate_frame(frame.iloc[::-1].reset_index(drop=True), schema, "prices.parquet")


def test_stage_command_ends_quickly_with_its_output_flushed_and_its_exit_code(small_demo_dir, tmp_path):
    """Stage commands end with os._exit (no interpreter teardown): what they printed to a pipe (block
    buffered) must still arrive, and an error keeps its exit code."""
    def trendflow(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120)

    done = trendflow("signal", "--data", str(small_demo_dir), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("signal stage finished") and done.stdout.endswith("\n")
    failed = trendflow("report", "--out", str(tmp_path / "none"))
    assert failed.returncode == 2
    assert failed.stderr.startswith("error:") and "equity_curve.parquet" in failed.stderr


def test_signal_run_loads_no_trading_stage_and_a_trading_run_no_executor(small_demo_dir, tmp_path):
    """stages.trading and stages.trading.execution load their modules on first use: the signal
    stage's quality gate reads stages.trading.exchange without the trading stage, book and execution
    package; the trading stage reads the execution database without the executor and brokers."""
    loaded = _run_python(
        "import sys; from stages.common.config import load_config; from stages.signal import run_signal_stage; "
        f"run_signal_stage(load_config(), {str(small_demo_dir)!r}, {str(tmp_path)!r}); "
        "print(sorted(m for m in ('stages.trading.exchange', 'stages.trading.stage', 'stages.trading.book', "
        "'stages.trading.execution') if m in sys.modules)); "
        "from stages.trading import run_trading_stage; "
        f"run_trading_stage(load_config(), {str(tmp_path)!r}, {str(tmp_path)!r}); "
        "print(sorted(m for m in ('stages.trading.execution.executor', 'stages.trading.execution.brokers') if m in sys.modules)); "
        "from stages.trading.execution import execute_orders; print(execute_orders.__module__)"
    )
    assert loaded.splitlines()[-3:] == ["['stages.trading.exchange']", "[]", "stages.trading.execution.executor"]


@pytest.mark.parametrize(("command", "preset", "threads"), [("trade", None, "1"), ("daily", None, "1"), ("report", "2", "2")])
def test_stage_commands_run_openblas_on_one_thread_unless_the_user_says(command, preset, threads):
    """A second BLAS thread only spins after the stage commands' small matrix products; a user's
    OPENBLAS_NUM_THREADS is kept."""
    code = ("import sys, flows.cli as cli; sys.argv = ['trendflow', %r]\n"
            "def main():\n"
            "    import numpy, threadpoolctl\n"
            "    print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas'}))\n"
            "    return 0\n"
            "cli.main = main; cli.entry()" % command)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{threads}]"


def test_last_price_dates_read_dictionary_encoded_give_each_symbols_last_date(tmp_path):
    """Row groups with different symbol dictionaries (a symbol in only some of them) are unified first."""
    import pandas as pd
    import pyarrow as pa_arrow
    import pyarrow.parquet as pq

    from stages.reporting.provenance import last_price_dates

    dates = pd.bdate_range("2024-01-01", periods=7)
    frame = pd.DataFrame({"date": list(dates[:4]) + list(dates[2:7]) + list(dates[:2]),
                          "symbol": ["B"] * 4 + ["C"] * 5 + ["A"] * 2})
    pq.write_table(pa_arrow.Table.from_pandas(frame, preserve_index=False), tmp_path / "prices.parquet", row_group_size=3)
    got = last_price_dates(tmp_path / "prices.parquet")
    expected = frame.groupby("symbol")["date"].max()
    assert got.index.tolist() == ["A", "B", "C"] and list(got) == list(expected)
