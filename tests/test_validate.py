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
