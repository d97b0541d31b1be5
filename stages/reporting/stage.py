"""The reporting stage: read the trading artifacts (+ signals, + an optional benchmark), compute
metrics and signal quality, write performance_summary.json (+ csv) and report.html."""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.prices import PricesSchema
from schemas.reporting import PerformanceSummary, PerformanceSummaryCsvSchema, SignalQualityInputSchema
from schemas.trading import EquityCurveSchema, OrdersSchema, PositionsSchema, TradeLogSchema
from stages.common.artifacts import PARQUET_TO_PANDAS, StageRun, manifest_entry, read_manifest, stage_run, validate_frame
from stages.common.errors import ArtifactMissingError, DataError
from stages.common.lineage import Lineage
from stages.common.market_data import read_symbol_file
from stages.common.stage import DEMO_FOLDER_NAME, StageResult
from stages.data.quality import data_quality_notes
from stages.reporting.html import fmt
from stages.reporting.live import read_live
from stages.reporting.metrics import compute_metrics
from stages.reporting.report import ReportInputs, render_report
from stages.reporting.provenance import (Provenance, changed_parameters, find_names_file, holdings_freshness, last_price_dates,
                                         read_names, trendflow_version)
from stages.reporting.signal_quality import signal_quality

log = logging.getLogger(__name__)
ORDERS_FILE = re.compile(r"^orders_(\d{4}-\d{2}-\d{2})\.csv$")


@dataclass
class Benchmark:
    label: str
    returns: pd.Series  # on the equity curve's dates; NaN where the benchmark has no close (never carried)
    first_date: pd.Timestamp
    last_date: pd.Timestamp


def run_reporting_stage(config: TrendflowConfig, in_dir: str | Path | None, out_dir: str | Path, *,
                        benchmark: str | None = None, data: str | Path | None = None) -> StageResult:
    """Read `in_dir` (default: `out_dir`), write performance_summary.json/.csv and report.html to `out_dir`.

    benchmark: a symbol in `in_dir`/prices.parquet or a price file (default: config reporting.benchmark).
    data: the price folder the signal stage read (default: config data.source), shown in the provenance
    block and searched, after `in_dir`, for names.csv (display names)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    in_dir = Path(in_dir) if in_dir is not None else out_dir
    benchmark = benchmark or config.reporting.benchmark
    rp = config.reporting
    with stage_run("reporting", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins,
                   lineage=Lineage("reporting", config)) as run:
        curve = run.read(in_dir / "equity_curve.parquet", EquityCurveSchema)
        if curve.empty:
            raise DataError(f"{in_dir / 'equity_curve.parquet'} has no rows: nothing to report")
        curve = curve.sort_values("date", kind="stable").reset_index(drop=True)
        trades = run.read(in_dir / "trade_log.csv", TradeLogSchema)
        positions = run.read(in_dir / "positions.parquet", PositionsSchema)
        orders_path = _latest_orders(in_dir)
        orders = run.read(orders_path, OrdersSchema) if orders_path else None
        signals = _read_signals(run, in_dir / "signals_output.parquet")
        bench = _benchmark(benchmark, in_dir, run, curve) if benchmark else None
        source = _data_source(data, config, in_dir)
        names_path = find_names_file(in_dir, Path(source) if Path(source).is_dir() else None)
        names = read_names(names_path) if names_path else {}
        if names_path:
            run.record_input(names_path)
        provenance = _provenance(run, config, source, in_dir / "prices.parquet", positions, curve)

        metrics = compute_metrics(curve, trades, config=config, positions=positions,
                                  benchmark_returns=bench.returns if bench else None)
        quality, ic_series = signal_quality(signals, rp.signal_horizons) if signals is not None and len(signals) else (None, {})
        notes = (_notes(curve, trades, metrics, signals, bench, benchmark, in_dir) + _stale_notes(provenance)
                 + data_quality_notes(in_dir))
        summary = PerformanceSummary(metrics=_clean(metrics), signal_quality=_clean(quality), benchmark=bench.label if bench else None,
                                     notes=notes)
        run.write_json(summary, "performance_summary.json", PerformanceSummary)
        flat = summary_rows(summary)
        run.write(flat, "performance_summary.csv", PerformanceSummaryCsvSchema)
        html = render_report(ReportInputs(
            curve=curve, trades=trades, positions=positions, orders=orders,
            orders_date=ORDERS_FILE.match(orders_path.name).group(1) if orders_path else None,
            metrics=metrics, quality=quality, ic_series=ic_series, benchmark_returns=bench.returns if bench else None,
            benchmark_label=bench.label if bench else None, notes=notes, config=config, live=read_live(run, in_dir),
            provenance=provenance, names=names))
        run.write_text(html, "report.html", kind="html")
    seconds = time.perf_counter() - t0
    log.info("Report written: %s (Sharpe %s, CAGR %s, max drawdown %s) in %.2fs", out_dir / "report.html",
             fmt(metrics["sharpe"]), fmt(metrics["cagr"], "pct"), fmt(metrics["max_drawdown"], "pct"), seconds)
    return StageResult("reporting", dict(run.written), {"performance_summary.csv": len(flat)}, seconds,
                       summary={k: _clean(metrics.get(k)) for k in ("total_return", "cagr", "sharpe", "max_drawdown", "closed_trades")}
                       | {"report": str(out_dir / "report.html")})


# --------------------------------------------------------------------------- inputs
def _latest_orders(folder: Path) -> Path | None:
    """orders_{D}.csv with the latest D, if any."""
    found = sorted(p for p in folder.glob("orders_*.csv") if ORDERS_FILE.match(p.name))
    return found[-1] if found else None


def _read_signals(run: StageRun, path: Path) -> pd.DataFrame | None:
    """The columns of signals_output.parquet that signal quality needs (hash-checked, validated,
    recorded as an input), or None when the folder has no signals."""
    if not path.exists():
        return None

    def read(path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path, columns=list(SignalQualityInputSchema.to_schema().columns),
                                    to_pandas_kwargs=PARQUET_TO_PANDAS)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} cannot be read for signal quality: {exc}") from None
        return validate_frame(frame, SignalQualityInputSchema, str(path), inplace=True)  # just read: no copy

    return run.read_with(path, read)


def _benchmark(spec: str, in_dir: Path, run: StageRun, curve: pd.DataFrame) -> Benchmark:
    """Benchmark returns on the curve's dates: from a price file when `spec` is an existing file, else
    the symbol's closes in prices.parquet. A series, not a holding: a return only on the benchmark's own
    sessions (close / its previous close), NaN on other dates and never carried past its last close, so
    the relative metrics use common sessions only; the first common date has return 0 (both start there)."""
    path = Path(spec)
    if path.is_file():
        frame = read_symbol_file(path, path.stem)
        run.record_input(path)
        label = path.name
    else:
        prices_path = in_dir / "prices.parquet"
        if not prices_path.exists():
            raise ArtifactMissingError(f"benchmark {spec!r} is not a file, and {prices_path} (to look the symbol up) does not exist")
        frame = run.read_with(prices_path, lambda p: pd.read_parquet(p, filters=[("symbol", "==", spec)]))
        if frame.empty:
            raise DataError(f"benchmark {spec!r} is neither an existing price file nor a symbol in {prices_path}")
        frame = validate_frame(frame.reset_index(drop=True), PricesSchema, f"{prices_path} (symbol {spec})")
        label = spec
    close = frame.set_index("date")["close"].sort_index()
    dates = pd.DatetimeIndex(curve["date"])
    own = (close / close.shift(1) - 1.0).reindex(dates)
    common = close.index.intersection(dates)
    if common.empty:
        raise DataError(f"benchmark {label!r} has no close on any of the run's sessions {dates[0].date()}..{dates[-1].date()} "
                        f"(it covers {close.index[0].date()}..{close.index[-1].date()})")
    own[common[0]] = 0.0
    return Benchmark(label, own.rename(None), common[0], common[-1])


def _data_source(data: str | Path | None, config: TrendflowConfig, in_dir: Path) -> str:
    """The price data as the user named it: --data, else config data.source, else what the signal stage
    recorded that it read (so a report remade from saved signals is the same page), the demo universe
    it generated into the input folder named as such."""
    if data is not None:
        return str(data)
    if config.data.source is not None:
        return str(config.data.source)
    recorded = read_manifest(in_dir).get("runs", {}).get("signal", {}).get("data_source")
    demo = in_dir / DEMO_FOLDER_NAME
    if (recorded and Path(recorded).resolve() == demo.resolve()) or (not recorded and demo.is_dir()):
        return f"demo universe ({DEMO_FOLDER_NAME}/ in the input folder)"
    return str(recorded) if recorded else "not recorded: set data.source in the config, or pass --data to trendflow report"


def _provenance(run: StageRun, config: TrendflowConfig, source: str, prices_path: Path, positions: pd.DataFrame,
                curve: pd.DataFrame) -> Provenance:
    """Version, config, data and each holding's last real price date (prices.parquet, when in the folder)."""
    sessions = pd.DatetimeIndex(curve["date"])
    held = sorted(positions.loc[positions["date"] == sessions[-1], "symbol"])
    if prices_path.exists():
        last = run.read_with(prices_path, last_price_dates)  # hash-checked
        first, final, count = _first_date(prices_path), last.max(), len(last)
        entry = manifest_entry(prices_path.parent, prices_path.name)
        digest = entry["sha256"] if entry else None
    else:
        last, first, final, count, digest = pd.Series(dtype="datetime64[ns]"), None, None, 0, None
    return Provenance(version=trendflow_version(), config_hash=config.config_hash(), changed=changed_parameters(config),
                      data_source=source, symbols=count, first_date=first, last_date=final,
                      holdings=holdings_freshness(held, last, sessions), prices_sha256=digest)


def _first_date(path: Path) -> pd.Timestamp:
    """The panel's first date, from the Parquet column statistics when written (no read), else the column."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("date")
    stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max for s in stats):
        return pd.Timestamp(min(s.min for s in stats))
    return pd.Timestamp(pq.read_table(path, columns=["date"]).column("date").to_pandas().min())


def _stale_notes(p: Provenance) -> list[str]:
    stale = p.holdings[p.holdings["sessions_behind"] > 0]
    if stale.empty:
        return []
    listed = ", ".join(f"{row.symbol} (last price {row.last_price_date.date() if pd.notna(row.last_price_date) else 'none'}, "
                       f"{row.sessions_behind} sessions old)" for row in stale.head(5).itertuples())
    return [f"{len(stale)} holding(s) valued at a stale price: {listed}{f' and {len(stale) - 5} more' if len(stale) > 5 else ''}. See Provenance."]


# --------------------------------------------------------------------------- summary
def _notes(curve, trades, metrics, signals, bench, requested, in_dir) -> list[str]:
    """Plain sentences on what is missing or partial, shown at the top of the report and kept in the JSON."""
    notes = []
    if requested is None:
        notes.append("No benchmark configured (reporting.benchmark or --benchmark): benchmark metrics are not shown.")
    elif bench is not None and metrics["benchmark_days"] < len(curve):
        notes.append(f"Benchmark {bench.label} has prices from {bench.first_date.date()} to {bench.last_date.date()} on "
                     f"{metrics['benchmark_days']} of {len(curve)} sessions: benchmark metrics use those common sessions "
                     "only (a benchmark close is never carried forward).")
    if trades.empty:
        notes.append("No trades in this run: the portfolio stayed in cash, so trade statistics are n/a.")
    elif metrics["closed_trades"] == 0:
        notes.append("No position was closed yet: win rate, profit factor and holding period are n/a.")
    if len(curve) < 2:
        notes.append("One day of history: volatility, Sharpe, Sortino and other return statistics are undefined (n/a).")
    if not trades.empty:
        idle = int((curve["date"] < trades["date"].min()).sum())
        if idle > 0:
            notes.append(f"The first {idle} sessions hold only cash (first fill {metrics['first_trade_date']}, after the "
                         "indicators' warm-up); return statistics include them.")
    if signals is None:
        notes.append(f"{in_dir / 'signals_output.parquet'} not found: no signal-quality section.")
    return notes


def _clean(value):
    """NaN/inf -> None (JSON null, shown as n/a), recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_rows(summary: PerformanceSummary) -> pd.DataFrame:
    """performance_summary.csv: every metric, then signal quality as signal.<name>_<h>d; empty = n/a."""
    rows = list(summary.metrics.model_dump().items())
    if summary.signal_quality is not None:
        for h in summary.signal_quality.horizons:
            values = h.model_dump()
            days = values.pop("horizon_days")
            quintiles = values.pop("quintile_returns")
            rows += [(f"signal.{k}_{days}d", v) for k, v in values.items()]
            rows += [(f"signal.q{i}_return_{days}d", v) for i, v in enumerate(quintiles, 1)]
    return pd.DataFrame({"metric": [k for k, _ in rows], "value": [None if v is None else repr(v) if isinstance(v, float) else str(v)
                                                                   for _, v in rows]})
