"""V4's wide signals files trade: a Parquet with a DatetimeIndex, or a `date,SPY,TLT,...` CSV, given with
--weights or positionally (`python -m stages.trading path/to/signals.parquet`, as V4's run_trading_phase.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(small_demo_dir, tmp_path_factory):
    """The signal stage's outputs, and V4-style wide weights for them in three spellings."""
    from stages.signal.__main__ import main as signal_main

    out = tmp_path_factory.mktemp("v4")
    assert signal_main(["--data", str(small_demo_dir), "--out", str(out), "--log-level", "WARNING"]) == 0
    prices = pd.read_parquet(out / "prices.parquet")
    dates = pd.DatetimeIndex(sorted(prices["date"].unique()))[60::21]
    symbols = sorted(prices["symbol"].unique())[:4]
    rng = np.random.default_rng(3)
    wide = pd.DataFrame(np.round(rng.dirichlet(np.ones(5), len(dates))[:, :4], 4), index=dates, columns=symbols)
    wide.to_parquet(out / "signals.parquet")                      # DatetimeIndex, unnamed (V4's DataFrame.to_parquet)
    wide.rename_axis("date").to_csv(out / "signals_output.csv")    # date,SYM1,SYM2,...
    wide.to_csv(out / "unnamed_index.csv")                         # ,SYM1,SYM2,... (index without a name)
    return out


def _trade(argv: list[str]) -> int:
    from stages.trading.__main__ import main as trade_main

    return trade_main(argv + ["--log-level", "WARNING"])


def test_v4_wide_files_trade_the_same_in_both_formats(folder, tmp_path):
    logs = {}
    for name in ("signals.parquet", "signals_output.csv", "unnamed_index.csv"):
        out = tmp_path / name.replace(".", "_")
        assert _trade(["--in", str(folder), "--out", str(out), "--weights", str(folder / name)]) == 0, name
        logs[name] = (out / "trade_log.csv").read_bytes()
    assert logs["signals.parquet"] == logs["signals_output.csv"] == logs["unnamed_index.csv"]
    log = pd.read_csv(tmp_path / "signals_parquet" / "trade_log.csv")
    assert set(log["reason"]) == {"target_weight"} and len(log) > 10


def test_the_readme_csv_header_is_read(tmp_path):
    from stages.trading.weights import load_weights_file

    (tmp_path / "w.csv").write_text("date,SPY,TLT\n2024-01-02,0.6,0.4\n")
    frame = load_weights_file(tmp_path / "w.csv")
    assert list(frame.columns) == ["date", "SPY", "TLT"]


def test_python_m_stages_trading_takes_the_signals_file_positionally(folder, tmp_path):
    # the README command, as written: python -m stages.trading path/to/signals.parquet (its folder holds prices.parquet)
    work = tmp_path / "v4_trace_outputs"
    shutil.copytree(folder, work)
    done = subprocess.run([sys.executable, "-m", "stages.trading", str(work / "signals.parquet"), "--out", str(work),
                           "--log-level", "WARNING"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    direct = tmp_path / "direct"
    assert _trade(["--in", str(folder), "--out", str(direct), "--weights", str(folder / "signals.parquet")]) == 0
    assert (work / "trade_log.csv").read_bytes() == (direct / "trade_log.csv").read_bytes()


def test_a_positional_long_signals_file_reads_its_folder(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _trade([str(folder / "signals_output.parquet"), "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "trade_log.csv")["reason"]) != {"target_weight"}  # the signal rules traded
    assert _trade([str(folder / "signals.parquet"), "--weights", str(folder / "signals_output.csv"), "--out", str(out)]) == 2
    assert "give the signals file once" in capsys.readouterr().err
