"""The reporting stage end to end: a demo run (signal -> trading -> reporting) renders a well-formed,
self-contained, reproducible report.html with every chart; degenerate inputs give a report that says
what is missing; bad inputs give clear errors; the command line; the sweep section renderer."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.reporting import PerformanceSummary, PerformanceSummaryCsvSchema
from schemas.trading import EquityCurveSchema, PositionsSchema, TradeLogSchema
from stages.common.artifacts import StageRun, read_artifact, read_json_artifact, read_manifest, stage_run
from stages.common.config import load_config
from stages.common.errors import ArtifactMissingError, DataError, IntegrityError
from stages.reporting import page, render_sweep_section, run_reporting_stage
from stages.reporting.__main__ import main as report_main
from tests.conftest import shared_data_dir
from tests.test_reporting_metrics import make_curve, make_trades

CHARTS = {"equity", "underwater", "histogram", "holdings", "rolling", "exposure", "turnover", "signal-quality"}
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source", "track", "embed", "param"}


class PageCheck(HTMLParser):
    """Collects what a well-formed, self-contained page must show: balanced tags, charts, links, text."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.charts: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.tags: dict[str, int] = {}
        self.ids: list[str] = []
        self.in_svg = 0

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if "data-chart" in attrs:
            self.charts.append(attrs["data-chart"])
        for name in ("src", "href", "xlink:href"):
            if attrs.get(name):
                self.links.append(attrs[name])
        if tag == "svg":
            self.in_svg += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if dict(attrs).get("id"):
            self.ids.append(dict(attrs)["id"])
        for name in ("src", "href", "xlink:href"):
            if dict(attrs).get(name):
                self.links.append(dict(attrs)[name])

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "svg":
            self.in_svg -= 1

    def handle_data(self, data):
        if not self.in_svg and data.strip():
            self.text.append(data.strip())


def check_page(text: str) -> PageCheck:
    parser = PageCheck()
    parser.feed(text)
    parser.close()
    assert text.startswith("<!DOCTYPE html>")
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    assert parser.tags["html"] == parser.tags["head"] == parser.tags["body"] == 1
    assert all(link.startswith("#") for link in parser.links), [x for x in parser.links if not x.startswith("#")]
    assert len(parser.ids) == len(set(parser.ids)), "duplicate element ids"
    assert {link[1:] for link in parser.links} <= set(parser.ids), "links to missing ids"
    assert {ref for ref in re.findall(r"url\(#([^)]+)\)", text)} <= set(parser.ids), "references to missing ids"
    assert "<script" not in text and "url(http" not in text and "<img" not in text
    visible = " ".join(parser.text)
    assert not re.search(r"\bnan\b|\bNaN\b|\bNone\b|\binf\b", visible), visible[:200]
    return parser


@pytest.fixture(scope="module")
def demo_run(small_demo_dir, tmp_path_factory):
    """signal -> trading -> reporting on the small demo universe, benchmarked to one of its symbols."""
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    out = tmp_path_factory.mktemp("report")
    config = load_config()
    run_signal_stage(config, small_demo_dir, out)
    run_trading_stage(config, out, out)
    symbol = sorted(pd.read_parquet(out / "prices.parquet", columns=["symbol"])["symbol"].unique())[0]
    result = run_reporting_stage(config, out, out, benchmark=symbol)
    return out, config, symbol, result


def test_demo_report_is_well_formed_self_contained_and_holds_every_chart(demo_run):
    out, _, symbol, result = demo_run
    text = (out / "report.html").read_text(encoding="utf-8")
    parsed = check_page(text)
    assert set(parsed.charts) == CHARTS and len(parsed.charts) == len(CHARTS)
    assert text.count("<svg") == len(CHARTS) == text.count("</svg>")
    for anchor in ("performance", "monthly", "risk", "exposure", "metrics", "years", "trades", "holdings", "signal-quality"):
        assert f'<section id="{anchor}">' in text, anchor
    for heading in ("Equity vs benchmark", "Underwater", "Rolling 126-session", "Exposure: positions value / equity",
                    "Number of holdings", "Monthly turnover", "Top 5 drawdowns", "Calendar years", "Closed trades by exit reason",
                    "Holdings at the close of", "Orders decided at the close of", "Rank IC, rolling", "Forward return by momentum-score quintile"):
        assert heading in text, heading
    assert 'class="heat"' in text and ">Jan<" in text and ">Year<" in text
    assert f"benchmark {symbol}" in text
    assert result.outputs.keys() == {"performance_summary.json", "performance_summary.csv", "report.html"}
    assert result.summary["report"] == str(out / "report.html")


def test_summary_json_and_csv_hold_the_same_numbers(demo_run):
    out, _, symbol, _ = demo_run
    summary = read_json_artifact(out / "performance_summary.json", PerformanceSummary)
    table = read_artifact(out / "performance_summary.csv", PerformanceSummaryCsvSchema)
    values = dict(zip(table["metric"], table["value"]))
    for key, value in summary.metrics.model_dump().items():
        assert (values[key] is None or pd.isna(values[key])) if value is None else values[key] == (
            repr(value) if isinstance(value, float) else str(value)), key
    # a benchmark is used on its own sessions only: a suspension day of the symbol is not a fake 0% day
    sessions = pd.read_parquet(out / "prices.parquet", filters=[("symbol", "==", symbol)])["date"]
    assert summary.benchmark == symbol and summary.metrics.benchmark_days == len(sessions) <= summary.metrics.trading_days
    assert summary.metrics.closed_trades > 0 and summary.metrics.beta is not None
    assert [h.horizon_days for h in summary.signal_quality.horizons] == [5, 20]
    assert summary.signal_quality.horizons[1].ic_days > 100
    assert "signal.ic_mean_20d" in values and "signal.q5_return_5d" in values
    inputs = read_manifest(out)["artifacts"]["report.html"]["inputs"]
    assert {Path(p).name for p in inputs} >= {"equity_curve.parquet", "trade_log.csv", "positions.parquet",
                                             "signals_output.parquet", "prices.parquet"}


def test_same_inputs_give_byte_identical_outputs(demo_run, tmp_path):
    out, config, symbol, _ = demo_run
    run_reporting_stage(config, out, tmp_path, benchmark=symbol)
    for name in ("report.html", "performance_summary.json", "performance_summary.csv"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_fixed_title_position_draws_what_automatic_placement_draws(demo_run, tmp_path, monkeypatch):
    """charts.STYLE fixes axes.titley, which skips matplotlib's per-axes title placement (a tick-label
    layout pass); with automatic placement the demo report is the very same bytes."""
    from stages.reporting import charts

    out, config, symbol, _ = demo_run
    monkeypatch.setitem(charts.STYLE, "axes.titley", None)
    run_reporting_stage(config, out, tmp_path, benchmark=symbol)
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_benchmark_from_a_price_file_equals_the_same_symbol_from_prices(demo_run, small_demo_dir, tmp_path):
    out, config, symbol, _ = demo_run
    file = next(p for p in Path(small_demo_dir).iterdir() if p.stem == symbol)
    run_reporting_stage(config, out, tmp_path, benchmark=str(file))
    by_file = json.loads((tmp_path / "performance_summary.json").read_text())["metrics"]
    by_symbol = json.loads((out / "performance_summary.json").read_text())["metrics"]
    for key in ("beta", "alpha", "correlation", "tracking_error", "information_ratio", "benchmark_total_return"):
        assert by_file[key] == pytest.approx(by_symbol[key], rel=1e-12), key
    assert str(file) in read_manifest(tmp_path)["artifacts"]["report.html"]["inputs"]


def _write_trading_artifacts(folder: Path, curve: pd.DataFrame, trades: pd.DataFrame, positions: pd.DataFrame | None = None):
    if positions is None:
        positions = pd.DataFrame({c: [] for c in PositionsSchema.to_schema().columns})
    with stage_run("trading", folder) as run:
        run.write(curve, "equity_curve.parquet", EquityCurveSchema)
        run.write(trades, "trade_log.csv", TradeLogSchema)
        run.write(positions, "positions.parquet", PositionsSchema)


def test_one_day_without_trades_benchmark_or_signals_gives_a_report_that_says_so(tmp_path):
    _write_trading_artifacts(tmp_path, make_curve([0.0]), make_trades([]))
    run_reporting_stage(load_config(), tmp_path, tmp_path)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    check_page(text)
    for sentence in ("No benchmark configured", "No trades in this run", "One day of history",
                     "signals_output.parquet not found", "No holdings: all cash", "No orders_{date}.csv"):
        assert sentence in text, sentence
    assert ">n/a<" in text and "n/a: the rolling window is 126 sessions and the history has 1" in text
    assert text.count("n/a: one session, nothing to chart over time.") == 2 and "<svg" not in text
    summary = json.loads((tmp_path / "performance_summary.json").read_text())
    assert summary["metrics"]["sharpe"] is None and summary["metrics"]["beta"] is None
    assert summary["signal_quality"] is None and len(summary["notes"]) == 4


def test_trades_that_never_close_say_so(tmp_path):
    curve = make_curve(np.zeros(30))
    _write_trading_artifacts(tmp_path, curve, make_trades([(curve["date"][3], "A", "BUY", 100, 10.0, 5.0, 0.5, "new_entry")]))
    run_reporting_stage(load_config(), tmp_path, tmp_path)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    check_page(text)
    assert "No position was closed yet" in text and "The first 3 sessions hold only cash" in text
    summary = json.loads((tmp_path / "performance_summary.json").read_text())["metrics"]
    assert summary["closed_trades"] == 0 and summary["open_trades"] == 1 and summary["win_rate"] is None


def test_a_benchmark_that_starts_late_is_compared_over_the_common_sessions(tmp_path):
    curve = make_curve(np.r_[0.0, np.full(59, 0.001)])
    _write_trading_artifacts(tmp_path, curve, make_trades([]))
    bench = pd.DataFrame({"date": curve["date"][20:], "open": 10.0, "high": 11.0, "low": 9.0,
                          "close": 10.0 * 1.002 ** np.arange(40), "volume": 1000.0})
    bench.to_csv(tmp_path / "INDEX.csv", index=False)
    run_reporting_stage(load_config(), tmp_path, tmp_path, benchmark=str(tmp_path / "INDEX.csv"))
    summary = json.loads((tmp_path / "performance_summary.json").read_text())
    assert summary["metrics"]["benchmark_days"] == 40
    assert summary["metrics"]["benchmark_total_return"] == pytest.approx(1.002**39 - 1)
    assert any("has prices from" in n and "40 of 60 sessions" in n for n in summary["notes"])
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    check_page(text)
    assert "(from " in text and "rebased)" in text


def test_an_unknown_benchmark_is_a_clear_error(demo_run, tmp_path):
    out, config, _, _ = demo_run
    with pytest.raises(DataError, match=r"benchmark 'NOPE' is neither an existing price file nor a symbol in .*prices.parquet"):
        run_reporting_stage(config, out, tmp_path, benchmark="NOPE")
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,volume\n2020-01-02,1,1,1,-1,5\n")
    with pytest.raises(DataError, match="bad.csv"):
        run_reporting_stage(config, out, tmp_path, benchmark=str(bad))
    assert not (tmp_path / "report.html").exists()


def test_missing_or_edited_inputs_are_refused(demo_run, tmp_path):
    out, config, _, _ = demo_run
    with pytest.raises(ArtifactMissingError, match="equity_curve.parquet"):
        run_reporting_stage(config, tmp_path / "empty", tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    table = pd.read_parquet(copy / "signals_output.parquet")
    table.loc[0, "momentum_score"] = 99.0
    table.to_parquet(copy / "signals_output.parquet")
    with pytest.raises(IntegrityError, match="signals_output.parquet was changed"):
        run_reporting_stage(config, copy, tmp_path / "out")


def test_inputs_hashed_once_are_recorded_as_stage_run_records_them(demo_run, tmp_path):
    """Inputs are hashed once, beside the read (StageRun.read / read_with): the manifest must still name
    and hash every input as StageRun.record_input does, with --in the output folder or another one."""
    out, config, symbol, _ = demo_run
    run_reporting_stage(config, out, tmp_path, benchmark=symbol)
    inputs = [out / n for n in ("equity_curve.parquet", "trade_log.csv", "positions.parquet", "signals_output.parquet",
                                "prices.parquet")] + sorted(out.glob("orders_*.csv"))[-1:]
    for folder in (out, tmp_path):
        probe = StageRun("probe", folder)
        for path in inputs:
            probe.record_input(path)
        assert read_manifest(folder)["artifacts"]["report.html"]["inputs"] == probe.inputs, folder


@pytest.mark.parametrize("name, column, value", [("signals_output.parquet", "close", -1.0),
                                                 ("prices.parquet", "close", -1.0)])
def test_an_edited_input_is_refused_as_edited_even_when_it_no_longer_validates(demo_run, tmp_path, name, column, value):
    """The hash is checked after the read; a read or schema error must not hide that the file was edited."""
    out, config, symbol, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    table = pd.read_parquet(copy / name)
    table.loc[0, column] = value
    table.to_parquet(copy / name)
    with pytest.raises(IntegrityError, match=f"{name} was changed"):
        run_reporting_stage(config, copy, tmp_path / "out", benchmark=symbol)
    assert not (tmp_path / "out" / "report.html").exists()


def test_command_line_writes_the_report_and_reports_errors(demo_run, tmp_path, capsys):
    out, _, symbol, _ = demo_run
    assert report_main(["--in", str(out), "--out", str(tmp_path), "--benchmark", symbol]) == 0
    assert "report: " in capsys.readouterr().out
    assert (tmp_path / "report.html").read_bytes() == (out / "report.html").read_bytes()
    assert report_main(["--in", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert report_main(["--in", str(out), "--out", str(tmp_path), "--set", "reporting.rolling_window_days=1"]) == 2


def test_real_etfs_with_a_benchmark_file(tmp_path):
    """Real Chinese ETF prices (skipped when ../shared/data is absent), benchmarked to a CSI 300 ETF file."""
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    folder = shared_data_dir("cn_etf")
    benchmark = folder / "510360.SH.csv"
    symbols = sorted(p.stem for p in folder.glob("*.csv") if p != benchmark)[:15]
    config = load_config(overrides=[f"data.symbols={json.dumps(symbols)}"])
    run_signal_stage(config, folder, tmp_path)
    run_trading_stage(config, tmp_path, tmp_path)
    run_reporting_stage(config, tmp_path, tmp_path, benchmark=str(benchmark))
    check_page((tmp_path / "report.html").read_text(encoding="utf-8"))
    metrics = json.loads((tmp_path / "performance_summary.json").read_text())["metrics"]
    assert metrics["benchmark_days"] > 200 and metrics["beta"] is not None and -1 < metrics["correlation"] < 1


# --------------------------------------------------------------------------- sweep section
def _sweep_results() -> pd.DataFrame:
    rows = []
    for i, (lookback, n, stop) in enumerate([(lb, n, s) for lb in (5, 10, 20) for n in (3, 10) for s in (2.0, 3.0)]):
        rows.append({"combo_id": f"c{i:02d}", "status": "ok", "error": None, "param:strategy.lookback": json.dumps(lookback),
                     "param:strategy.top_n": json.dumps(n), "param:risk.stop": json.dumps(stop),
                     "sharpe": lookback / 10 + n / 100 + stop / 1000, "annual_volatility": 0.1 + lookback / 100,
                     "cagr": 0.05, "max_drawdown": -0.2})
    rows.append({"combo_id": "c99", "status": "failed", "error": "boom", "param:strategy.lookback": "5",
                 "param:strategy.top_n": "3", "param:risk.stop": "2.0", "sharpe": np.nan, "annual_volatility": np.nan,
                 "cagr": np.nan, "max_drawdown": np.nan})
    return pd.DataFrame(rows)


def test_sweep_section_heatmap_and_top_ten():
    fragment = render_sweep_section(_sweep_results(), "sharpe", x="strategy.lookback", y="param:strategy.top_n")
    text = page("sweep", "test", [fragment])
    check_page(text)
    heat = fragment[fragment.index('<table class="heat">'):fragment.index("</table>")]
    assert re.findall(r"<th>([^<]*)</th>", heat) == ["strategy.top_n \\ strategy.lookback", "5", "10", "20"]  # numeric order, not text
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", heat)
    assert [label for label, _ in rows] == ["3", "10"]
    assert re.findall(r">([0-9.]+)</td>", rows[0][1]) == ["0.53", "1.03", "2.03"]  # best over risk.stop
    assert "each cell is the best over risk.stop" in fragment and "1 failed combination(s) left out" in fragment
    top = fragment[fragment.index("Top 10 combinations"):]
    assert top.count("<tr>") == 1 + 10
    firsts = re.findall(r"<tr><td class=\"t\">(c\d\d)</td>", top)
    assert firsts[:2] == ["c11", "c10"] and "c99" not in firsts


def test_sweep_section_colours_lower_is_better_metrics_green_at_the_low_end():
    fragment = render_sweep_section(_sweep_results(), "annual_volatility", x="strategy.lookback", y="strategy.top_n")
    cells = re.findall(r'<td style="background:(#[0-9a-f]{6})">([^<]*)</td>', fragment)
    colour = {text: c for c, text in cells}
    low, high = colour["15.00%"], colour["30.00%"]
    assert int(low[3:5], 16) > int(low[1:3], 16)  # green channel dominates: good
    assert int(high[1:3], 16) > int(high[3:5], 16)  # red dominates: bad
    with pytest.raises(KeyError, match="no parameter column 'nope'"):
        render_sweep_section(_sweep_results(), "sharpe", x="nope", y="strategy.top_n")
