"""The report's live section: the daily runs' track record (live_equity.parquet, live_fills.parquet,
written by the trading stage's daily runs) beside the backtest.

Shown: the live equity overlaid on the backtest's curve, the tracking difference (each live day's
return minus the return the model's own book made that day, cumulated), and realised vs modelled
costs, in currency and in bp of the traded value (a book the risk profile trimmed trades less).
Absent live files leave the section out of the page.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from schemas.live import LiveEquitySchema, LiveFillsSchema
from stages.common.artifacts import StageRun
from stages.reporting import charts
from stages.reporting.html import cards, chart, fmt, table


@dataclass
class LiveRecord:
    equity: pd.DataFrame
    fills: pd.DataFrame | None


def read_live(run: StageRun, folder: Path) -> LiveRecord | None:
    """The live artifacts (hash-checked, recorded as inputs), or None when the folder has none."""
    path = Path(folder) / "live_equity.parquet"
    if not path.exists():
        return None
    equity = run.read(path, LiveEquitySchema)
    fills_path = Path(folder) / "live_fills.parquet"
    fills = run.read(fills_path, LiveFillsSchema) if fills_path.exists() else None
    return LiveRecord(equity.sort_values("date", kind="stable").reset_index(drop=True), fills)


def tracking(equity: pd.DataFrame) -> pd.DataFrame:
    """Per live day: the live and the model's return, their difference, and the cumulated growth of each."""
    out = pd.DataFrame({"date": equity["date"], "live": equity["daily_return"], "model": equity["model_return"]})
    out["difference"] = out["live"] - out["model"]
    out["live_growth"] = (1.0 + out["live"]).cumprod()
    out["model_growth"] = (1.0 + out["model"]).cumprod()
    out["tracking_difference"] = out["live_growth"] - out["model_growth"]
    return out


def live_section(inp, r: pd.Series) -> list[str] | None:
    """The section body (None without live days)."""
    live: LiveRecord | None = getattr(inp, "live", None)
    if live is None or live.equity.empty:
        return None
    eq = live.equity
    tr = tracking(eq)
    realised, modelled = float(eq["costs"].sum()), float(eq["model_costs"].sum())
    realised_bp = 1e4 * realised / eq["traded_value"].sum() if eq["traded_value"].sum() > 0 else float("nan")
    modelled_bp = 1e4 * modelled / eq["model_traded_value"].sum() if eq["model_traded_value"].sum() > 0 else float("nan")
    source = "the executed book (execution database)" if (eq["source"] == "executed").any() else "the model's book (no broker)"
    items = [("Live sessions", fmt(len(eq), "int")), ("From", fmt(eq["date"].iat[0], "date")), ("To", fmt(eq["date"].iat[-1], "date")),
             ("Live return", fmt(tr["live_growth"].iat[-1] - 1.0, "pct")), ("Model return", fmt(tr["model_growth"].iat[-1] - 1.0, "pct")),
             ("Tracking difference", fmt(tr["tracking_difference"].iat[-1], "pct")),
             ("Realised costs", f"{fmt(realised, 'money')} ({fmt(realised_bp)} bp)"),
             ("Modelled costs", f"{fmt(modelled, 'money')} ({fmt(modelled_bp)} bp)"),
             ("Largest drift", fmt(float(eq["drift"].max()), "money"))]
    parts = [cards(items), f'<p class="sub">Live record of {source}; model = what the strategy\'s own book would have '
                           "done the same day (its fills at the same open, marked to the same close).</p>"]
    if len(eq) >= 2:
        parts.append(chart(equity_overlay(inp.curve, eq, tr), "live-equity",
                           "Equity: the backtest and the live record, with the model's track from the first live day"))
    days = tr.assign(equity=eq["equity"], costs=eq["costs"], model_costs=eq["model_costs"], drift=eq["drift"])
    days["difference_bp"] = days["difference"] * 1e4
    shown = days[["date", "equity", "live", "model", "difference_bp", "costs", "model_costs", "drift"]].iloc[::-1].head(60)
    parts.append(table(shown.rename(columns={"live": "live return", "model": "model return", "difference_bp": "difference (bp)",
                                             "costs": "realised costs", "model_costs": "modelled costs"}),
                       {"date": "date", "equity": "money", "live return": "pct", "model return": "pct", "difference (bp)": "num",
                        "realised costs": "money", "modelled costs": "money", "drift": "money"}))
    if live.fills is not None and len(live.fills):
        by_side = live.fills.assign(value=live.fills["quantity"] * live.fills["price"]).groupby("side")[
            ["quantity", "value", "commission", "slippage"]].sum().reset_index()
        parts.append(table(by_side, {"side": "text", "quantity": "int", "value": "money", "commission": "money",
                                     "slippage": "money"}))
    return parts


def backtest_beside_live(curve: pd.DataFrame, live: pd.DataFrame) -> tuple[pd.Series, str]:
    """The backtest's equity around the live period: from a few times the live length (at least 60
    sessions) before it to its end. Where the backtest covers the day before the live start it is
    rebased to the live book's equity there, so the two lines part only where live trading did."""
    live_equity = live.set_index("date")["equity"]
    backtest = curve.set_index("date")["equity"]
    first_live, last_live = live_equity.index[0], live_equity.index[-1]
    context = max(3 * len(live_equity), 60)
    start = backtest.index[max(int(backtest.index.searchsorted(first_live)) - context, 0)]
    backtest = backtest[(backtest.index >= start) & (backtest.index <= last_live)]
    before = backtest[backtest.index < first_live]
    if len(before) and backtest.index[-1] >= first_live:
        opening = live_equity.iat[0] / (1.0 + live["daily_return"].iat[0])
        return backtest * (opening / before.iat[-1]), "backtest (rebased to the live start)"
    return backtest, "backtest"


@charts._styled
def equity_overlay(curve: pd.DataFrame, live: pd.DataFrame, tr: pd.DataFrame) -> str:
    """Backtest and live equity on one time axis, and the model's own track from the live start."""
    fig, (ax,) = charts._figure(1, 3.2)
    live_equity = live.set_index("date")["equity"]
    backtest, label = backtest_beside_live(curve, live)
    start = live_equity.iat[0] / (1.0 + live["daily_return"].iat[0])
    model = pd.Series(start * tr["model_growth"].to_numpy(), index=live_equity.index)
    if len(backtest):
        charts._line(ax, backtest, color=charts.GREY, lw=1.1, label=label)
    charts._line(ax, model, color=charts.ORANGE, lw=1.0, ls="--", label="model (live days)")
    charts._line(ax, live_equity, color=charts.BLUE, lw=1.5, label="live")
    ax.set_title("Live equity beside the backtest")
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=3, borderaxespad=0.1)
    first = min(backtest.index[0], live_equity.index[0]) if len(backtest) else live_equity.index[0]
    charts._dates(ax, first.to_datetime64(), live_equity.index[-1].to_datetime64())
    ax.yaxis.set_major_formatter(charts.mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return charts.render_svg(fig, "live-equity")
