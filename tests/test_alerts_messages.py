"""What a person reads: error lines, log lines and alert texts carry plain values (no numpy reprs),
alert texts are one line, and `trendflow run/daily` speak before Prefect is even imported."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from stages.common.errors import DataError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_error_lines_and_log_lines_show_numpy_values_as_plain_values(capsys, tmp_path):
    from stages.common.cli import run_command, setup_logging

    symbols = list(np.array(["159370.SZ", "510300.SH"]))
    assert repr(symbols) == "[np.str_('159370.SZ'), np.str_('510300.SH')]"  # numpy 2: what used to leak

    def body(_):
        logging.getLogger("trendflow.test").warning("skipped %s (%s rows)", symbols, np.int64(3))
        raise DataError(f"no prices for {symbols} on {np.datetime64('2024-08-30')}, ratio {np.float64(0.5)}")

    setup_logging("INFO", tmp_path / "run.log")
    assert run_command(body, None) == 2
    err = capsys.readouterr().err
    assert "error: no prices for ['159370.SZ', '510300.SH'] on 2024-08-30, ratio 0.5" in err
    assert "skipped ['159370.SZ', '510300.SH'] (3 rows)" in err
    assert "skipped ['159370.SZ', '510300.SH'] (3 rows)" in (tmp_path / "run.log").read_text()
    assert "np." not in err and "np." not in (tmp_path / "run.log").read_text()


def test_failure_alert_text_is_one_plain_line_naming_reason_and_folder():
    from flows.alerts import failure_message

    reason = f"signals for {list(np.array(['159370.SZ']))}\n  are stale\n(see data_quality.csv)"
    text = failure_message({"mode": "daily", "out": "live/", "as_of_date": "2024-08-30"}, reason, "brave-fox")
    assert text == ("trendflow daily run for 2024-08-30 failed (brave-fox): signals for ['159370.SZ'] are stale "
                    "(see data_quality.csv) -- folder live/")


def test_daily_alert_summary_names_orders_breaker_and_equity():
    from flows.alerts import daily_message

    summary = {"as_of_date": "2024-08-30", "out": "live", "stages": [
        {"stage": "signal", "summary": {}},
        {"stage": "trading", "summary": {"order_list": ["SELL 900 512880.SH", "BUY 1200 159915.SZ"], "breaker_on": True,
                                         "equity": 1234567.891}}]}
    assert daily_message(summary) == ("trendflow daily 2024-08-30: 2 order(s) for the next session: SELL 900 512880.SH, "
                                      "BUY 1200 159915.SZ; breaker ON; equity 1,234,567.89 -- folder live")
    assert daily_message({"skipped": "2024-10-01", "stages": []}) is None  # a holiday: nothing to tell


def test_run_and_daily_print_their_first_line_and_check_inputs_without_importing_prefect(tmp_path):
    code = ("import sys; from flows.cli import main; "
            f"rc = main(['daily', '--data', {str(tmp_path / 'missing')!r}, '--out', {str(tmp_path / 'live')!r}]); "
            "print('prefect imported:', 'prefect' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "TRENDFLOW_WEBHOOK_URL": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "trendflow daily: checking the config, data and snapshot ..."
    assert lines[-1] == "prefect imported: False"
    assert done.stderr.strip() == f"error: --data {tmp_path / 'missing'}: no such file or folder"
