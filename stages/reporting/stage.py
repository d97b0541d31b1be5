"""The reporting stage: read trading artifacts, compute metrics and signal quality, write
performance_summary.json (+ csv) and report.html."""
from __future__ import annotations

import glob
import logging
import math
import time
from pathlib import Path

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.prices import PricesSchema
from schemas.reporting import PerformanceSummary, PerformanceSummaryCsvSchema
from schemas.signals import SignalsSchema
from schemas.trading import EquityCurveSchema, OrdersSchema, PositionsSchema, TradeLogSchema
from stages.common.artifacts import stage_run
from stages.common.errors import DataError
from stages.common.market_data import read_symbol_file
from stages.common.stage import StageResult
from stages.reporting import charts
from stages.reporting.html import cards, chart, fmt, page, table
from stages.reporting.metrics import closed_trades, compute_metrics, drawdown_series, period_returns, top_drawdowns
from stages.reporting.signal_quality import signal_quality

log = logging.getLogger(__name__)
ROLLING_WINDOW = 126  # ~6 months of trading days


def run_reporting_stage(config: TrendflowConfig, in_dir: str | Path | None, out_dir: str | Path, *,
                        benchmark: str | None = None) -> StageResult:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    in_dir = Path(in_dir) if in_dir is not None else out_dir
    benchmark = benchmark or config.reporting.benchmark
    notes: list[str] = []
    with stage_run("reporting", out_dir, config_hash=config.config_hash(), csv_twins=config.output.csv_twins) as run:
        curve = run.read(in_dir / "equity_curve.parquet", EquityCurveSchema)
        trades = run.read(in_dir / "trade_log.csv", TradeLogSchema)
        positions = run.read(in_dir / "positions.parquet", PositionsSchema)
        signals = run.read(in_dir / "signals_output.parquet", SignalsSchema) if (in_dir / "signals_output.parquet").exists() else None
        orders_files = sorted(glob.glob(str(in_dir / "orders_????-??-??.csv")))
        orders = run.read(orders_files[-1], OrdersSchema) if orders_files else None
        if curve.empty:
            raise DataError(f"{in_dir / 'equity_curve.parquet'} has no rows: nothing to report")
        bench_returns = None
        if benchmark:
            bench_returns = _benchmark_returns(benchmark, in_dir, run, curve)
        else:
            notes.append("No benchmark configured (reporting.benchmark or --benchmark): benchmark metrics are not shown.")
        if trades.empty:
            notes.append("No trades in this run.")
        if len(curve) < 2:
            notes.append("One day of history: return statistics are undefined (n/a).")
        rp = config.reporting
        metrics = compute_metrics(curve, trades, initial_cash=config.execution.initial_cash, risk_free_rate=rp.risk_free_rate,
                                  periods_per_year=rp.periods_per_year, benchmark_returns=bench_returns)
        quality = signal_quality(signals) if signals is not None and len(signals) else None
        if quality is None:
            notes.append("signals_output.parquet not found: no signal-quality section.")
        summary = PerformanceSummary(metrics={k: _clean(v) for k, v in metrics.items()}, signal_quality=_clean(quality),
                                     benchmark=benchmark, notes=notes)
        run.write_json(summary, "performance_summary.json", PerformanceSummary)
        flat = pd.DataFrame({"metric": list(summary.metrics), "value": [None if v is None else str(v) for v in summary.metrics.values()]})
        run.write(flat, "performance_summary.csv", PerformanceSummaryCsvSchema)
        run.write_text(render_report(curve, trades, positions, orders, metrics, quality, bench_returns, benchmark, notes, config),
                       "report.html", kind="html")
    seconds = time.perf_counter() - t0
    result = StageResult("reporting", dict(run.written), {"metrics": len(summary.metrics)}, seconds,
                         summary={k: metrics.get(k) for k in ("total_return", "cagr", "sharpe", "max_drawdown", "closed_trades")}
                         | {"report": str(out_dir / "report.html")})
    log.info("Report written: %s (Sharpe %s, CAGR %s, max drawdown %s)", out_dir / "report.html", fmt(metrics["sharpe"]),
             fmt(metrics["cagr"], "pct"), fmt(metrics["max_drawdown"], "pct"))
    return result


def _clean(value):
    """NaN -> None so the JSON stays valid (shown as n/a)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _benchmark_returns(benchmark: str, in_dir: Path, run, curve: pd.DataFrame) -> pd.Series:
    """Daily returns of the benchmark: a symbol in prices.parquet, or a price file."""
    path = Path(benchmark)
    if path.suffix in (".csv", ".parquet") and path.exists():
        frame = read_symbol_file(path, path.stem)
        close = frame.set_index("date")["close"]
    else:
        prices = run.read(in_dir / "prices.parquet", PricesSchema)
        rows = prices[prices["symbol"] == benchmark]
        if rows.empty:
            raise DataError(f"benchmark {benchmark!r} is neither a symbol in prices.parquet nor an existing price file")
        close = rows.set_index("date")["close"]
    close = close.reindex(close.index.union(curve["date"])).ffill().reindex(curve["date"])
    return close.pct_change().fillna(0.0).rename(None)


def render_report(curve, trades, positions, orders, metrics, quality, bench_returns, benchmark, notes, config) -> str:
    c = curve.set_index("date")
    ppy = config.reporting.periods_per_year
    initial = config.execution.initial_cash
    r = c["daily_return"]
    bench_growth = (1 + bench_returns).cumprod() if bench_returns is not None else None
    m = metrics
    sections = [cards([
        ("Total return", fmt(m["total_return"], "pct")), ("CAGR", fmt(m["cagr"], "pct")), ("Sharpe", fmt(m["sharpe"])),
        ("Sortino", fmt(m["sortino"])), ("Max drawdown", fmt(m["max_drawdown"], "pct")), ("Calmar", fmt(m["calmar"])),
        ("Volatility", fmt(m["annual_volatility"], "pct")), ("Win rate", fmt(m["win_rate"], "pct")),
        ("Closed trades", fmt(m["closed_trades"], "int")), ("Avg exposure", fmt(m["avg_exposure"], "pct")),
    ])]
    sections += [f'<p class="note">{n}</p>' for n in notes]
    sections.append("<h2>Equity and drawdown</h2>")
    sections.append(chart(charts.equity_chart(c["equity"], bench_growth, initial)))
    sections.append(chart(charts.underwater_chart(drawdown_series(c["equity"], initial))))
    if len(r) > 1:
        sections.append("<h2>Monthly returns</h2>" + chart(charts.monthly_heatmap(period_returns(r, "ME"))))
        sections.append("<h2>Rolling risk</h2>" + chart(charts.rolling_chart(r, min(ROLLING_WINDOW, max(len(r) // 2, 2)), ppy)))
    sections.append("<h2>Exposure and turnover</h2>")
    sections.append(chart(charts.exposure_chart(c["exposure"], c["n_positions"])))
    sections.append(chart(charts.turnover_chart(c["turnover"])))

    metric_rows = pd.DataFrame([(k, v) for k, v in m.items()], columns=["metric", "value"])
    metric_rows["value"] = [_metric_text(k, v) for k, v in m.items()]
    years = period_returns(r, "YE") if len(r) else r
    yearly = pd.DataFrame({"year": [str(d.year) for d in years.index], "return": years.to_numpy()})
    if bench_returns is not None and len(r):
        yearly["benchmark"] = period_returns(bench_returns, "YE").reindex(years.index).to_numpy()
    dds = pd.DataFrame([(d.depth, _date(d.start), _date(d.trough), _date(d.recovery) or "not recovered", d.days)
                        for d in top_drawdowns(c["equity"], initial, 5)], columns=["depth", "peak", "trough", "recovery", "days"])
    closed = closed_trades(trades)
    by_reason = (closed.groupby("reason").agg(trades=("pnl", "size"), win_rate=("pnl", lambda x: (x > 0).mean()),
                                              avg_return=("return", "mean"), total_pnl=("pnl", "sum"),
                                              avg_holding_days=("holding_days", "mean")).reset_index()
                 if len(closed) else pd.DataFrame())
    last_date = c.index[-1]
    latest = positions[positions["date"] == last_date][["symbol", "shares", "close", "market_value", "weight", "entry_date", "cluster"]].copy()
    latest["entry_date"] = latest["entry_date"].dt.strftime("%Y-%m-%d")
    sections.append('<h2>Metrics</h2><div class="grid2"><div>' + table(metric_rows) + "</div><div>"
                    + "<h3>Yearly returns</h3>" + table(yearly, {"return": "pct", "benchmark": "pct"})
                    + "<h3>Top 5 drawdowns</h3>" + table(dds, {"depth": "pct", "days": "int"}, "no drawdown") + "</div></div>")
    sections.append("<h2>Trades by exit reason</h2>" + table(by_reason, {"trades": "int", "win_rate": "pct", "avg_return": "pct",
                                                                          "total_pnl": "money", "avg_holding_days": "num"}, "no closed trades"))
    sections.append(f"<h2>Holdings at {last_date.date()}</h2>" + table(latest, {"shares": "int", "market_value": "money",
                                                                                "weight": "pct", "cluster": "int"}, "no holdings (all cash)"))
    if orders is not None:
        sections.append("<h2>Latest orders (next session)</h2>" + table(orders, {"shares": "int", "target_weight": "pct",
                                                                                "estimated_value": "money"}, "no orders"))
    if quality is not None:
        sections.append("<h2>Signal quality</h2>" + _quality_tables(quality))
    subtitle = (f"{m['start_date']} to {m['end_date']} | {m['trading_days']} trading days | initial capital {initial:,.0f}"
                + (f" | benchmark {benchmark}" if benchmark else ""))
    return page("trendflow performance report", subtitle, sections)


PCT_METRICS = {"total_return", "cagr", "annual_volatility", "max_drawdown", "best_day", "worst_day", "best_month", "worst_month",
               "best_year", "worst_year", "win_rate", "annual_turnover", "avg_exposure", "current_exposure",
               "benchmark_total_return", "alpha", "tracking_error"}


def _metric_text(key: str, value) -> str:
    if key in PCT_METRICS:
        return fmt(value, "pct")
    if key in ("total_costs", "final_equity"):
        return fmt(value, "money")
    if isinstance(value, int):
        return fmt(value, "int")
    return fmt(value)


def _date(ts) -> str | None:
    return None if ts is None else str(pd.Timestamp(ts).date())


def _quality_tables(q: dict) -> str:
    ic = pd.DataFrame([(f"{h} days", q[f"ic_{h}d"]["mean"], q[f"ic_{h}d"]["t_stat"], q[f"ic_{h}d"]["days"],
                        q[f"buy_hit_rate_{h}d"], q[f"buy_signals_{h}d"]) for h in (5, 20)],
                      columns=["horizon", "mean rank IC", "t-stat", "days", "buy hit rate", "buy signals"])
    quint = pd.DataFrame({"quintile": [str(k) for k in range(1, 6)],
                          **{f"fwd {h}d return": [q[f"quintiles_{h}d"].get(k) for k in range(1, 6)] for h in (5, 20)}})
    return (table(ic, {"days": "int", "buy hit rate": "pct", "buy signals": "int"})
            + "<p class=\"sub\">Momentum-score quintiles (5 = highest score), average forward return:</p>"
            + table(quint, {"fwd 5d return": "pct", "fwd 20d return": "pct"}))
