"""report.html: the tear sheet, assembled from metrics, tables and charts (pure: frames in, HTML out)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.reporting import attribution, charts
from stages.reporting.html import cards, chart, fmt, heat_table, note, page, section, table
from stages.reporting.live import LiveRecord, live_section
from stages.reporting.metrics import (TRAILING_PERIODS, drawdown_episodes, drawdown_series, per_period_rate, period_returns,
                                      rolling_beta, rolling_sortino, round_trips, strategy_returns, trailing_return)
from stages.reporting.provenance import Provenance, display

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass
class ReportInputs:
    curve: pd.DataFrame
    trades: pd.DataFrame
    positions: pd.DataFrame
    orders: pd.DataFrame | None
    orders_date: str | None
    metrics: dict
    quality: dict | None
    ic_series: dict[int, pd.Series]
    benchmark_returns: pd.Series | None
    benchmark_label: str | None
    notes: list[str]
    config: TrendflowConfig
    live: LiveRecord | None = None
    provenance: Provenance | None = None
    names: dict[str, str] = field(default_factory=dict)  # symbol -> display name (names.csv)


# label, kind for each metric in the tables (the JSON keeps the raw keys)
RETURN_ROWS = [("total_return", "benchmark_total_return", "Total return", "pct"), ("cagr", "benchmark_cagr", "CAGR", "pct"),
               ("annual_volatility", "benchmark_annual_volatility", "Volatility (p.a.)", "pct"),
               ("sharpe", "benchmark_sharpe", "Sharpe ratio", "num"), ("sortino", "benchmark_sortino", "Sortino ratio", "num"),
               ("max_drawdown", "benchmark_max_drawdown", "Max drawdown", "pct"), ("calmar", "benchmark_calmar", "Calmar ratio", "num"),
               ("best_day", None, "Best day", "pct"), ("worst_day", None, "Worst day", "pct"),
               ("best_month", None, "Best month", "pct"), ("worst_month", None, "Worst month", "pct"),
               ("best_year", None, "Best calendar year", "pct"), ("worst_year", None, "Worst calendar year", "pct")]
TAIL_ROWS = [("skew", "Skew", "num"), ("kurtosis", "Excess kurtosis", "num"), ("daily_var_95", "Daily VaR 95% (historical)", "pct"),
             ("daily_cvar_95", "Daily CVaR 95% (historical)", "pct"), ("tail_ratio", "Tail ratio (95th / 5th pct)", "num"),
             ("omega", "Omega ratio", "num"), ("win_rate_days", "Up sessions", "pct1"), ("win_rate_months", "Up months", "pct1"),
             ("min_track_record_days", "Sessions needed for 95% confidence", "int"),
             ("probabilistic_sharpe", "PSR: P(true Sharpe > 0)", "pct1")]
TRAILING_LABELS = [("return_mtd", "Month to date"), ("return_ytd", "Year to date"), ("return_1y", "1 year"),
                   ("return_3y", "3 years (p.a.)"), ("return_5y", "5 years (p.a.)")]
DRAWDOWN_ROWS = [("max_drawdown_peak", "Max drawdown: peak", "date"), ("max_drawdown_trough", "Max drawdown: trough", "date"),
                 ("max_drawdown_recovery", "Max drawdown: recovered", "date"),
                 ("max_drawdown_days", "Max drawdown: sessions peak to recovery", "int"),
                 ("longest_drawdown_days", "Longest drawdown (sessions)", "int")]
RELATIVE_ROWS = [("beta", "Beta", "num"), ("alpha", "Alpha (p.a.)", "pct"), ("correlation", "Correlation", "num"),
                 ("tracking_error", "Tracking error (p.a.)", "pct"), ("information_ratio", "Information ratio", "num"),
                 ("benchmark_days", "Sessions compared", "int")]
TRADING_ROWS = [("number_of_fills", "Fills", "int"), ("closed_trades", "Closed trades (round trips)", "int"),
                ("open_trades", "Open positions", "int"), ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"),
                ("avg_trade_return", "Average trade return", "pct"), ("avg_holding_days", "Average holding (sessions)", "num"),
                ("annual_turnover", "Turnover (one-way, per year)", "times"), ("avg_exposure", "Average exposure", "pct"),
                ("current_exposure", "Current exposure", "pct"), ("avg_holdings", "Average holdings", "num"),
                ("current_holdings", "Current holdings", "int"), ("max_position_weight", "Largest position weight", "pct"),
                ("total_return_before_costs", "Total return before costs", "pct"),
                ("total_costs", "Costs paid (commission + slippage)", "money"), ("total_commission", "– of which commission", "money"),
                ("total_slippage", "– of which slippage", "money"), ("start_equity", "Starting equity", "money"),
                ("final_equity", "Final equity", "money"), ("first_trade_date", "First fill", "date")]


@dataclass(frozen=True)
class Section:
    """One section of the page, in the order of `SECTIONS`: `body(inp, r)` (r = the daily returns) gives its
    HTML parts, or None to leave the section (and its link) out -- e.g. when its input is absent."""

    anchor: str
    nav: str
    title: str
    body: Callable[["ReportInputs", pd.Series], list[str] | str | None]


def render_report(inp: ReportInputs) -> str:
    """The whole page: headline cards, notes, then every section of `SECTIONS`."""
    m, rp = inp.metrics, inp.config.reporting
    r = strategy_returns(inp.curve)
    has_bench = inp.benchmark_returns is not None
    parts = [_headline(m, has_bench)] + [note(n) for n in inp.notes]
    nav = []
    for s in SECTIONS:
        body = s.body(inp, r)
        if body is None:
            continue
        parts.append(section(s.anchor, s.title, *([body] if isinstance(body, str) else body)))
        nav.append((s.anchor, s.nav))
    initial = m["start_equity"]
    subtitle = (f"{m['start_date']} to {m['end_date']} · {m['trading_days']:,} session{'s' if m['trading_days'] != 1 else ''} · starting equity {fmt(initial, 'money')}"
                + (f" · benchmark {inp.benchmark_label}" if has_bench else " · no benchmark")
                + f" · risk-free rate {rp.risk_free_rate:.2%} p.a. · config {inp.config.config_hash()[:12]}")
    return page("trendflow performance report", subtitle, parts, nav)


def _headline(m: dict, has_bench: bool) -> str:
    items = [("Total return", fmt(m["total_return"], "pct")), ("CAGR", fmt(m["cagr"], "pct")), ("Sharpe", fmt(m["sharpe"])),
             ("Sortino", fmt(m["sortino"])), ("Max drawdown", fmt(m["max_drawdown"], "pct")), ("Calmar", fmt(m["calmar"])),
             ("Volatility", fmt(m["annual_volatility"], "pct")), ("Win rate", fmt(m["win_rate"], "pct")),
             ("Closed trades", fmt(m["closed_trades"], "int")), ("Avg exposure", fmt(m["avg_exposure"], "pct"))]
    if has_bench:
        items += [("Benchmark return", fmt(m["benchmark_total_return"], "pct")), ("Beta", fmt(m["beta"])),
                  ("Information ratio", fmt(m["information_ratio"]))]
    return cards(items)


NOTHING_TO_CHART = '<p class="sub">n/a: one session, nothing to chart over time.</p>'


def _performance_charts(inp: ReportInputs, r: pd.Series) -> list[str]:
    if len(r) < 2:
        return [NOTHING_TO_CHART]
    wealth = (1.0 + r).cumprod()
    bench = None
    label = None
    if inp.benchmark_returns is not None:
        b = inp.benchmark_returns.reindex(r.index)
        first = b.first_valid_index()
        bench = (1.0 + b).cumprod() * (wealth[first] if first is not None else 1.0)
        label = inp.benchmark_label if first == r.index[0] else f"{inp.benchmark_label} (from {first.date()}, rebased)"
    episodes = drawdown_episodes(r).head(5)
    spans = [(r.index[0].to_datetime64() if pd.isna(e.peak) else e.peak.to_datetime64(),
              (r.index[-1] if pd.isna(e.recovery) else e.recovery).to_datetime64()) for e in episodes.itertuples()]
    return [chart(charts.equity_chart(wealth, bench, label, spans), "equity",
                  "Growth of 1 for the strategy" + (" and the benchmark" if bench is not None else "")
                  + ", log scale; the five deepest drawdowns shaded from peak to recovery"),
            chart(charts.underwater_chart(drawdown_series(r)), "underwater", "Drawdown from the running peak")]


def _monthly_table(r: pd.Series) -> str:
    if len(r) < 2:
        return '<p class="sub">n/a: fewer than two sessions.</p>'
    monthly = period_returns(r, "ME")
    frame = pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month, "r": monthly.to_numpy()})
    grid = frame.pivot(index="year", columns="month", values="r").reindex(columns=range(1, 13))
    grid.columns = MONTHS
    yearly = period_returns(r, "YE")
    extra = pd.DataFrame({"Year": yearly.to_numpy()}, index=yearly.index.year)
    return ('<p class="sub">Compounded return per calendar month (green up, red down; colour saturates at the 95th '
            'percentile of |return|); Year = the calendar year compounded. A partial first or last month counts only its sessions.</p>'
            + heat_table(grid, "pct1", centre=0.0, corner="", extra=extra.reindex(grid.index)))


def _rolling(inp: ReportInputs, r: pd.Series) -> str:
    rp = inp.config.reporting
    window, ppy = rp.rolling_window_days, rp.periods_per_year
    rf = per_period_rate(rp.risk_free_rate, ppy)
    if len(r) < window + 1:
        return f'<p class="sub">n/a: the rolling window is {window} sessions and the history has {len(r)}.</p>'
    excess = r - rf
    sd = excess.rolling(window).std()
    sharpe = (excess.rolling(window).mean() / sd.where(sd > 0)) * np.sqrt(ppy)
    vol = r.rolling(window).std() * np.sqrt(ppy)
    sortino = rolling_sortino(r, window, rf, ppy)
    beta = rolling_beta(r, inp.benchmark_returns, window) if inp.benchmark_returns is not None else None
    start = sharpe.first_valid_index()
    return chart(charts.rolling_chart(sharpe[start:], vol[start:], window, sortino[start:],
                                      beta[start:] if beta is not None else None, inp.benchmark_label), "rolling",
                 f"Rolling {window}-session Sharpe, Sortino, volatility" + (" and beta" if beta is not None else ""))


def _distribution(inp: ReportInputs, r: pd.Series) -> list[str]:
    """The daily-return histogram beside the tail statistics and the trailing returns."""
    m = inp.metrics
    if len(r) < 20:
        return ['<p class="sub">n/a: fewer than 20 sessions.</p>']
    rows = [{"statistic": name, "value": fmt(m[key], kind)} for key, name, kind in TAIL_ROWS]
    psr = m["probabilistic_sharpe"]
    if psr is not None and np.isfinite(psr):
        rows[-1]["value"] += f" ({'significant' if psr >= 0.95 else 'not significant'} at 95%)"
    tails = _text_table(pd.DataFrame(rows))
    trailing = {"period": [label for _, label in TRAILING_LABELS], "strategy": [fmt(m[key], "pct") for key, _ in TRAILING_LABELS]}
    if inp.benchmark_returns is not None:
        b = inp.benchmark_returns.reindex(r.index).dropna()
        trailing[inp.benchmark_label or "benchmark"] = [fmt(trailing_return(b, p), "pct") for p in TRAILING_PERIODS]
    active = r[r.index >= _first_active(inp)]
    histogram = (chart(charts.histogram_chart(active, m["daily_var_95"], m["daily_cvar_95"]), "histogram",
                       "Histogram of daily returns with a normal curve")
                 if len(active) >= 20 and active.std() > 0 else '<p class="sub">n/a: fewer than 20 sessions invested.</p>')
    return [histogram,
            '<div class="grid2"><div><h3>Tails and consistency</h3>' + tails
            + '<p class="sub">Historical VaR/CVaR: the 5th percentile of daily returns and the mean of the worst 5%. '
              "PSR: the probability that the true Sharpe ratio is above 0, given the history's length, skew and kurtosis "
              "(Bailey &amp; L&oacute;pez de Prado 2012); sessions needed: the minimum track record length for PSR to "
              "reach 95% (compare with the sessions there are). Win rates count only sessions/months that moved.</p>"
              "</div><div><h3>Trailing returns</h3>" + _text_table(pd.DataFrame(trailing))
            + '<p class="sub">To the last close; 3Y and 5Y annualised; n/a when the history is shorter.</p></div></div>']


def _first_active(inp: ReportInputs) -> pd.Timestamp:
    """The first fill's date (sessions before it are all cash and would pile up at 0 in the histogram)."""
    return inp.trades["date"].min() if len(inp.trades) else inp.curve["date"].iloc[0]


def _exposure_charts(curve: pd.DataFrame) -> list[str]:
    if len(curve) < 2:
        return [NOTHING_TO_CHART]
    c = curve.set_index("date")
    monthly = c["turnover"].resample("ME").sum() / 2.0
    return [chart(charts.exposure_chart(c["exposure"], c["n_positions"]), "exposure", "Exposure and number of holdings"),
            chart(charts.turnover_chart(monthly), "turnover", "Monthly one-way turnover")]


def _metric_tables(m: dict, has_bench: bool, label: str | None) -> str:
    rows = []
    for key, bkey, name, kind in RETURN_ROWS:
        row = {"metric": name, "strategy": fmt(m[key], kind)}
        if has_bench:
            row[label or "benchmark"] = fmt(m[bkey], kind) if bkey else ""
        rows.append(row)
    rows += [{"metric": name, "strategy": fmt(m[key], kind), **({label or "benchmark": ""} if has_bench else {})}
             for key, name, kind in DRAWDOWN_ROWS]
    left = "<h3>Returns and risk</h3>" + _text_table(pd.DataFrame(rows))
    if has_bench:
        left += "<h3>Against the benchmark</h3>" + _text_table(
            pd.DataFrame([{"metric": name, "value": fmt(m[key], kind)} for key, name, kind in RELATIVE_ROWS]))
    right = "<h3>Trading</h3>" + _text_table(
        pd.DataFrame([{"metric": name, "value": fmt(m[key], kind)} for key, name, kind in TRADING_ROWS]))
    return f'<div class="grid2"><div>{left}</div><div>{right}</div></div>'


def _text_table(frame: pd.DataFrame) -> str:
    """A table of already formatted strings (right-aligned except the first column)."""
    head = "".join(f"<th>{c}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join((f"<td>{v}</td>" if i else f'<td class="t">{v}</td>') for i, v in enumerate(row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _yearly_table(r: pd.Series, bench: pd.Series | None, ppy: int) -> str:
    """Per calendar year: compounded return, benchmark and difference, volatility, and the year's own max drawdown."""
    if not len(r):
        return '<p class="sub">n/a</p>'
    year = r.index.year
    wealth = (1.0 + r).groupby(year).cumprod()
    peak = np.maximum(wealth.groupby(year).cummax(), 1.0)
    frame = pd.DataFrame({
        "year": [str(y) for y in sorted(set(year))],
        "sessions": r.groupby(year).size().to_numpy(),
        "return": (wealth.groupby(year).last() - 1.0).to_numpy(),
    })
    if bench is not None:
        b = bench.reindex(r.index)
        frame["benchmark"] = ((1.0 + b).groupby(year).prod(min_count=1) - 1.0).to_numpy()
        frame["difference"] = frame["return"] - frame["benchmark"]
    frame["volatility"] = (r.groupby(year).std(ddof=1) * np.sqrt(ppy)).to_numpy()
    frame["max drawdown"] = (wealth / peak - 1.0).groupby(year).min().to_numpy()
    return table(frame, {"sessions": "int", "return": "pct", "benchmark": "pct", "difference": "pct", "volatility": "pct",
                         "max drawdown": "pct"})


def _drawdown_table(r: pd.Series) -> str:
    episodes = drawdown_episodes(r).head(5)
    if episodes.empty:
        return '<p class="sub">No drawdown: equity never fell below a previous peak.</p>'
    frame = pd.DataFrame({
        "depth": episodes["depth"],
        "peak": [fmt(d, "date") if pd.notna(d) else "start" for d in episodes["peak"]],
        "trough": [fmt(d, "date") for d in episodes["trough"]],
        "recovered": [fmt(d, "date") if pd.notna(d) else "not yet" for d in episodes["recovery"]],
        "decline": episodes["decline_days"],
        "recovery": [int(v) if pd.notna(v) else None for v in episodes["recovery_days"]],
        "total": episodes["total_days"],
    })
    return (table(frame, {"depth": "pct", "decline": "int", "recovery": "int", "total": "int"})
            + '<p class="sub">Durations in sessions: peak to trough (decline), trough to recovery, peak to recovery '
              "(total; to the last close while not recovered).</p>")


def _trade_tables(trades: pd.DataFrame, sessions: pd.DatetimeIndex) -> str:
    if trades.empty:
        return '<p class="sub">No trades in this run.</p>'
    trips = round_trips(trades, sessions)
    if trips.empty:
        by_reason = pd.DataFrame()
    else:
        grouped = trips.groupby("reason", sort=True)
        by_reason = pd.DataFrame({
            "exit reason": list(grouped.groups),
            "trades": grouped.size().to_numpy(),
            "win rate": (trips["pnl"] > 0).groupby(trips["reason"], sort=True).mean().to_numpy(),
            "avg return": grouped["return"].mean().to_numpy(),
            "total pnl": grouped["pnl"].sum().to_numpy(),
            "avg hold (sessions)": grouped["holding_days"].mean().to_numpy(),
        })
        total = pd.DataFrame({"exit reason": ["all"], "trades": [len(trips)], "win rate": [(trips["pnl"] > 0).mean()],
                              "avg return": [trips["return"].mean()], "total pnl": [trips["pnl"].sum()],
                              "avg hold (sessions)": [trips["holding_days"].mean()]})
        by_reason = pd.concat([by_reason, total], ignore_index=True)
    keyed = trades.assign(value=trades["quantity"] * trades["price"], costs=trades["commission"] + trades["slippage"])
    fills = keyed.groupby(["side", "reason"], sort=True).agg(fills=("quantity", "size"), value=("value", "sum"),
                                                             costs=("costs", "sum")).reset_index()
    return ('<div class="grid2"><div><h3>Closed trades by exit reason</h3>'
            + table(by_reason, {"trades": "int", "win rate": "pct", "avg return": "pct", "total pnl": "money",
                                "avg hold (sessions)": "num"}, "No position has been closed yet.")
            + '<p class="sub">A trade is a round trip: from flat to flat, all its fills together; pnl after commission and '
              "slippage; return = pnl / amount bought.</p></div><div><h3>Fills by side and reason</h3>"
            + table(fills, {"fills": "int", "value": "money", "costs": "money"}) + "</div></div>")


def _holdings(positions: pd.DataFrame, curve: pd.DataFrame, names: dict[str, str]) -> str:
    last = curve["date"].iloc[-1]
    held = positions[positions["date"] == last].sort_values(["weight", "symbol"], ascending=[False, True])
    title = f"<h3>Holdings at the close of {last.date()}</h3>"
    if held.empty:
        return title + '<p class="sub">No holdings: all cash.</p>'
    frame = pd.DataFrame({
        "symbol": [display(x, names) for x in held["symbol"]], "shares": held["shares"].to_numpy(), "close": held["close"].to_numpy(),
        "market value": held["market_value"].to_numpy(), "weight": held["weight"].to_numpy(),
        "entry date": [fmt(d, "date") for d in held["entry_date"]], "entry price": held["entry_price"].to_numpy(),
        "since entry": (held["close"] / held["entry_price"] - 1.0).to_numpy(), "cluster": held["cluster"].to_numpy(),
    })
    return title + table(frame, {"shares": "int", "close": "num3", "market value": "money", "weight": "pct",
                                 "entry price": "num3", "since entry": "pct", "cluster": "int"})


def _orders(orders: pd.DataFrame | None, day: str | None, names: dict[str, str]) -> str:
    if orders is None:
        return "<h3>Latest orders</h3><p class=\"sub\">No orders_{date}.csv in the input folder (a daily run writes one).</p>"
    title = f"<h3>Orders decided at the close of {day} (orders_{day}.csv), for the next session</h3>"
    if names:
        orders = orders.assign(symbol=[display(x, names) for x in orders["symbol"]])
    return title + table(orders, {"shares": "int", "signal_strength": "num", "momentum_score": "num3", "target_weight": "pct",
                                  "current_price": "num3", "estimated_value": "money"}, "No orders for the next session.")


def _signal_quality(q: dict | None, ic_series: dict[int, pd.Series]) -> str:
    if q is None:
        return '<p class="sub">n/a: signals_output.parquet was not in the input folder.</p>'
    rows = []
    for h in q["horizons"]:
        rows.append({"horizon": h["horizon_days"], "mean IC": h["ic_mean"], "IC std": h["ic_std"], "t": h["ic_t_stat"],
                     "t (NW)": h["ic_t_stat_nw"], "IC > 0": h["ic_positive_share"], "dates": h["ic_days"],
                     "buys": h["buy_signals"], "hit rate": h["buy_hit_rate"], "beat universe": h["buy_excess_hit_rate"],
                     "excess return": h["buy_mean_excess_return"]})
    stats = pd.DataFrame(rows)
    quint = pd.DataFrame({"quintile": ["1 (lowest score)", "2", "3", "4", "5 (highest score)", "5 minus 1"]})
    for h in q["horizons"]:
        quint[f"{h['horizon_days']}-session forward return"] = [*h["quintile_returns"], h["top_minus_bottom"]]
    quintiles = {h["horizon_days"]: h["quintile_returns"] for h in q["horizons"]}
    kinds = {"horizon": "int", "mean IC": "num3", "IC std": "num3", "IC > 0": "pct1", "dates": "int",
             "buys": "int", "hit rate": "pct1", "beat universe": "pct1", "excess return": "pct"}
    return (f'<p class="sub">Momentum score at the close of each date against the close-to-close return over the next '
            f"<i>horizon</i> sessions ({q['symbols']} symbols, {q['dates']} dates). <b>IC</b>: Spearman rank correlation across "
            "symbols per date; <b>t</b> = mean / (std / &radic;dates), inflated by overlapping windows, so read <b>t (NW)</b>, "
            "the Newey-West t with horizon &minus; 1 lags. <b>Buys</b>: days the trend signal turned to 1; <b>hit rate</b>: share "
            "with a positive forward return; <b>beat universe</b>: share above that date's mean forward return; "
            "<b>excess return</b>: their mean return above it. These figures look ahead by design and never feed a trading "
            "decision.</p>"
            + table(stats, kinds)
            + chart(charts.signal_quality_chart(quintiles, ic_series), "signal-quality",
                    "Forward return by score quintile and rolling rank IC")
            + "<h3>Mean forward return by momentum-score quintile (equal weight per date)</h3>"
            + table(quint, {c: "pct" for c in quint.columns if c != "quintile"}))


def _years_and_drawdowns(inp: ReportInputs, r: pd.Series) -> str:
    return ('<div class="grid2"><div><h3>Calendar years</h3>'
            + _yearly_table(r, inp.benchmark_returns, inp.config.reporting.periods_per_year)
            + "</div><div><h3>Top 5 drawdowns</h3>" + _drawdown_table(r) + "</div></div>")



def _provenance(inp: ReportInputs, r: pd.Series) -> str | None:
    """What produced these numbers: version, config hash, data, non-default parameters, holdings' price dates."""
    p = inp.provenance
    if p is None:
        return None
    run = pd.DataFrame({"item": ["trendflow version", "config hash (sha256)", "price data", "prices.parquet (sha256)",
                                 "symbols in the price panel", "price panel dates", "display names"],
                        "value": [p.version, p.config_hash, p.data_source, p.prices_sha256 or "n/a", fmt(p.symbols, "int"),
                                  f"{fmt(p.first_date, 'date')} to {fmt(p.last_date, 'date')}",
                                  f"names.csv ({len(inp.names)} symbols)" if inp.names else "none (no names.csv)"]})
    changed = pd.DataFrame(p.changed, columns=["parameter", "value", "default"])
    parts = ['<div class="grid2"><div><h3>Run</h3><div class="wrap">' + table(run, {"item": "text", "value": "text"}) + "</div>"
             + "</div><div><h3>Parameters that differ from the defaults</h3>"
             + table(changed, empty="none: every parameter at its default") + "</div></div>"]
    if len(p.holdings):
        h = p.holdings
        stale = h["sessions_behind"] > 0
        frame = pd.DataFrame({"symbol": [display(x, inp.names) for x in h["symbol"]],
                              "last price": [fmt(d, "date") for d in h["last_price_date"]],
                              "sessions old": h["sessions_behind"].to_numpy(),
                              "status": np.where(stale, "STALE: valued at an old close", "current")})
        parts.append(f"<h3>Last price date of each holding at {fmt(r.index[-1], 'date')}</h3>"
                     + (note(f"{int(stale.sum())} of {len(h)} holdings are valued at a close older than the last session: "
                             "their marks (and the equity) may be wrong.") if stale.any() else "")
                     + table(frame, {"sessions old": "int"}))
    return "".join(parts)


def _attribution(inp: ReportInputs, r: pd.Series) -> list[str]:
    """P&L by symbol and by cluster from fills and marks (summing to the total P&L), top contributors and
    detractors, round trips by symbol, and the holdings-over-time chart."""
    if inp.trades.empty:
        return ['<p class="sub">No trades in this run: nothing to attribute.</p>']
    pnl = attribution.daily_pnl(inp.trades, inp.positions, r.index)
    symbols = attribution.by_symbol(pnl, round_trips(inp.trades, r.index)).rename(
        columns={"win_rate": "win rate", "avg_return": "avg return"})
    if inp.names:
        symbols.insert(1, "name", [inp.names.get(x, "") for x in symbols["symbol"]])
    total = float(pnl["pnl"].sum())
    kinds = {"pnl": "money", "share": "pct1", "trades": "int", "win rate": "pct1", "avg return": "pct"}
    top = symbols[symbols["pnl"] > 0].head(10)
    bottom = symbols[symbols["pnl"] < 0].iloc[::-1].head(10)
    clusters = attribution.by_cluster(pnl)
    clusters["cluster"] = clusters["cluster"].map(lambda c: "none" if c == attribution.NO_CLUSTER else str(c))
    parts = [f'<p class="sub">Total P&amp;L {fmt(total, "money")} = final equity &minus; starting capital, split by symbol '
             "from its fills (after commission and slippage) and daily marks to the close; share = P&amp;L / |total|.</p>",
             '<div class="grid2"><div><h3>Top 10 contributors</h3>' + table(top, kinds, "no symbol made money")
             + "</div><div><h3>Top 10 detractors</h3>" + table(bottom, kinds, "no symbol lost money") + "</div></div>"]
    weights = attribution.holdings_weights(inp.positions, r.index)
    if len(r) > 1 and weights.shape[1]:
        weights.columns = [c if c == "other" else display(c, inp.names) for c in weights.columns]
        parts.append(chart(charts.holdings_chart(weights), "holdings", "Weights of the largest holdings over time"))
    parts.append('<div class="grid2"><div><h3>P&amp;L by cluster</h3><div class="tall">'
                 + table(clusters, {"pnl": "money", "symbols": "int"}) + "</div>"
                 + '<p class="sub">A day\'s P&amp;L goes to the cluster the symbol was in at that close. Clusters are '
                   "re-estimated at each refresh, so an id is a label at the time, not a fixed group.</p></div>"
                 "<div><h3>Round trips and P&amp;L by symbol</h3>"
                 + '<div class="tall">' + table(symbols, kinds) + "</div>"
                 + '<p class="sub">trades = closed round trips; win rate and average return over them; P&amp;L includes '
                   "open positions at their last mark.</p></div></div>")
    return parts


# The page, top to bottom: add a section by writing its body function and listing it here.
SECTIONS: list[Section] = [
    Section("provenance", "Provenance", "Provenance: parameters, data and version", _provenance),
    Section("performance", "Performance", "Performance", _performance_charts),
    Section("live", "Live", "Live track record", live_section),
    Section("monthly", "Monthly", "Monthly returns", lambda inp, r: _monthly_table(r)),
    Section("distribution", "Distribution", "Return distribution, tails and trailing returns", _distribution),
    Section("risk", "Rolling risk", "Rolling risk", _rolling),
    Section("exposure", "Exposure", "Exposure, holdings and turnover", lambda inp, r: _exposure_charts(inp.curve)),
    Section("metrics", "Metrics", "Metrics", lambda inp, r: _metric_tables(inp.metrics, inp.benchmark_returns is not None,
                                                                          inp.benchmark_label)),
    Section("years", "Years & drawdowns", "Yearly returns and drawdowns", _years_and_drawdowns),
    Section("attribution", "Attribution", "P&L attribution and holdings over time", _attribution),
    Section("trades", "Trades", "Trades", lambda inp, r: _trade_tables(inp.trades, r.index)),
    Section("holdings", "Holdings & orders", "Latest holdings and orders",
            lambda inp, r: [_holdings(inp.positions, inp.curve, inp.names), _orders(inp.orders, inp.orders_date, inp.names)]),
    Section("signal-quality", "Signal quality", "Signal quality", lambda inp, r: _signal_quality(inp.quality, inp.ic_series)),
]
