"""`trendflow validate FILE...`: exit 0 when every file matches its schema (and manifest hash), 1 otherwise."""
from __future__ import annotations

import pandas as pd
import pytest

from flows.cli import main
from schemas.prices import PricesSchema
from stages.common.artifacts import stage_run


@pytest.fixture()
def artifacts_dir(tmp_path):
    prices = pd.DataFrame({"date": pd.bdate_range("2024-01-02", periods=4), "symbol": "510300.SH",
                           "open": 1.0, "high": 1.1, "low": 0.9, "close": 1.0, "volume": 10.0})
    with stage_run("signal", tmp_path) as run:
        run.write(prices, "prices.parquet", PricesSchema)
    return tmp_path


def test_good_files_pass(artifacts_dir, capsys):
    assert main(["validate", str(artifacts_dir / "prices.parquet"), str(artifacts_dir / "prices.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ok  {artifacts_dir / 'prices.parquet'}  (PricesSchema, 4 rows)",
                   f"ok  {artifacts_dir / 'prices.csv'}  (PricesSchema, 4 rows)"]


def test_a_schema_violation_fails_and_names_the_column(artifacts_dir, capsys):
    csv = artifacts_dir / "prices.csv"
    csv.write_text(csv.read_text().replace("0.9", "-0.9"))
    assert main(["validate", str(csv), "--no-hash"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL {csv}: ") and "column 'low' fails greater_than(0)" in out


def test_an_edited_file_fails_the_hash_check_unless_no_hash(artifacts_dir, capsys):
    csv = artifacts_dir / "prices.csv"
    csv.write_text(csv.read_text().replace("1.1", "1.2"))  # still schema-valid
    assert main(["validate", str(csv)]) == 1
    assert "was changed after stage 'signal' wrote it" in capsys.readouterr().out
    assert main(["validate", "--no-hash", str(csv)]) == 0


def test_one_bad_file_among_good_ones_fails_the_run_but_all_are_reported(artifacts_dir, capsys):
    missing = artifacts_dir / "equity_curve.parquet"
    unknown = artifacts_dir / "notes.csv"
    unknown.write_text("a\n1\n")
    snapshot = artifacts_dir / "portfolio_2024-01-05.json"
    snapshot.write_text("{}")
    code = main(["validate", str(artifacts_dir / "prices.parquet"), str(missing), str(unknown), str(snapshot)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and len(out) == 4
    assert out[0].startswith("ok  ")
    assert out[1] == f"FAIL {missing}: {missing} does not exist"
    assert out[2] == f"FAIL {unknown}: {unknown}: not a known artifact name (see schemas/registry.py)"
    assert out[3].startswith(f"FAIL {snapshot}: {snapshot} does not match PortfolioSnapshot")


def test_no_files_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])
    assert exit_info.value.code == 2


def test_a_folder_checks_every_artifact_in_it(artifacts_dir, capsys, tmp_path):
    (artifacts_dir / "notes.txt").write_text("not an artifact: ignored")
    assert main(["validate", str(artifacts_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == [str(artifacts_dir / "prices.csv"), str(artifacts_dir / "prices.parquet")]
    (artifacts_dir / "prices.csv").write_text("date,symbol\n")
    assert main(["validate", str(artifacts_dir)]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 2
    assert "no artifact files in this folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- a folder against its manifest
def _folder_failures(folder, capsys) -> tuple[int, list[str]]:
    code = main(["validate", str(folder)])
    return code, [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]


def test_a_folder_fails_when_a_listed_file_is_missing(artifacts_dir, capsys):
    (artifacts_dir / "prices.csv").unlink()
    code, failures = _folder_failures(artifacts_dir, capsys)
    assert code == 1
    assert failures == [f"FAIL {artifacts_dir / 'prices.csv'}: listed in manifest.json (stage 'signal') but missing"]


def test_a_folder_fails_when_a_file_has_another_size_or_the_same_size_and_other_bytes(artifacts_dir, capsys):
    html = artifacts_dir / "report.html"
    with stage_run("reporting", artifacts_dir) as run:
        run.write_text("<html>report</html>\n", "report.html")
    assert main(["validate", str(artifacts_dir)]) == 0
    assert f"ok  {html}  (sha256 as in manifest.json)" in capsys.readouterr().out
    html.write_text("<html>REPORT</html>\n")  # same size, other bytes: only the sha256 can tell
    code, failures = _folder_failures(artifacts_dir, capsys)
    assert code == 1 and len(failures) == 1 and "was changed after stage 'reporting' wrote it" in failures[0]
    html.write_text("<html>a longer report</html>\n")
    code, failures = _folder_failures(artifacts_dir, capsys)
    assert code == 1 and failures[0].startswith(f"FAIL {html}: 29 bytes, but manifest.json records 20")


def test_a_folder_fails_on_an_artifact_the_manifest_does_not_list_and_on_leftover_temp_files(artifacts_dir, capsys):
    (artifacts_dir / "trade_log.csv").write_text("date,symbol\n")
    (artifacts_dir / ".prices.csv.abc123.tmp").write_bytes(b"half a file")
    code, failures = _folder_failures(artifacts_dir, capsys)
    assert code == 1 and len(failures) == 2
    assert failures[0].startswith(f"FAIL {artifacts_dir / '.prices.csv.abc123.tmp'}: left by an interrupted write")
    assert failures[1].startswith(f"FAIL {artifacts_dir / 'trade_log.csv'}: not listed in manifest.json")


def test_a_folder_says_which_stage_is_not_current_after_its_input_was_rewritten(artifacts_dir, capsys):
    from stages.common.artifacts import read_artifact

    with stage_run("trading", artifacts_dir) as run:
        run.read(artifacts_dir / "prices.parquet", PricesSchema)
        run.write_text("made from prices\n", "report.html")
    assert main(["validate", str(artifacts_dir)]) == 0
    assert "not current" not in capsys.readouterr().out
    prices = read_artifact(artifacts_dir / "prices.parquet", PricesSchema)
    with stage_run("signal", artifacts_dir) as run:  # a new signal run; trading has not run since
        run.write(prices.assign(close=1.05), "prices.parquet", PricesSchema)
    assert main(["validate", str(artifacts_dir)]) == 0  # every file matches the manifest ...
    out = capsys.readouterr().out
    assert (f"note {artifacts_dir}: stage 'trading' is not current: report.html was made from an earlier prices.parquet "
            "(rewritten by stage 'signal' since); rerun stage 'trading'") in out  # ... which says what is stale


def test_a_stage_downstream_of_a_stale_stage_is_not_current_either(artifacts_dir, capsys):
    from stages.common.artifacts import read_artifact

    with stage_run("trading", artifacts_dir) as run:
        run.read(artifacts_dir / "prices.parquet", PricesSchema)
        run.write_text("trades\n", "trades.txt")
    with stage_run("reporting", artifacts_dir) as run:
        run.record_input(artifacts_dir / "trades.txt")
        run.write_text("<html></html>\n", "report.html")
    prices = read_artifact(artifacts_dir / "prices.parquet", PricesSchema)
    with stage_run("signal", artifacts_dir) as run:
        run.write(prices.assign(close=1.05), "prices.parquet", PricesSchema)
    assert main(["validate", str(artifacts_dir)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note")]
    assert [n.split(": ", 1)[1].split(":")[0] for n in notes] == ["stage 'trading' is not current",
                                                                 "stage 'reporting' is not current"]
    assert "report.html was made from the outputs of stage 'trading', which is not current" in notes[1]
