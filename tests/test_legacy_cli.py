"""The older design's command-line habits: --output-dir for --out, --no-dry-run, positional signals files."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def signal_out(small_demo_dir, tmp_path_factory):
    """A folder holding the signal stage's outputs for the small demo universe."""
    from stages.signal.__main__ import main as signal_main

    out = tmp_path_factory.mktemp("legacy_cli")
    assert signal_main(["--data", str(small_demo_dir), "--output-dir", str(out), "--log-level", "WARNING"]) == 0
    return out


def test_output_dir_is_an_alias_of_out(signal_out):
    assert (signal_out / "signals_output.parquet").exists() and (signal_out / "prices.parquet").exists()


@pytest.mark.parametrize("command", ["run", "daily", "signal", "trade", "report", "serve", "sweep", "status"])
def test_every_command_with_out_takes_output_dir(command, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "--out DIR, --output-dir DIR" in capsys.readouterr().out.replace("OUT", "DIR")


def test_trade_no_dry_run_writes_and_dry_run_writes_nothing(signal_out, capsys):
    from stages.trading.__main__ import main as trade_main

    assert trade_main(["--out", str(signal_out), "--dry-run", "--log-level", "WARNING"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert not (signal_out / "trade_log.csv").exists()
    assert trade_main(["--output-dir", str(signal_out), "--no-dry-run", "--log-level", "WARNING"]) == 0
    assert (signal_out / "trade_log.csv").exists()


def test_run_and_daily_accept_no_dry_run():
    from flows.pipeline import _parser

    for daily in (False, True):
        argv = ["--no-dry-run", "--output-dir", "somewhere"] + (["--as-of-date", "2024-08-30"] if daily else [])
        args = _parser("trendflow", daily=daily).parse_args(argv)
        assert args.out == "somewhere" and args.no_dry_run
