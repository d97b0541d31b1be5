"""Charts for the tear sheet: matplotlib, rendered to inline SVG (deterministic: fixed hash salt,
no date metadata). Lines are thinned to <= MAX_POINTS for drawing only; metrics use all data."""
from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MAX_POINTS = 1500
plt.rcParams.update({
    "svg.hashsalt": "trendflow", "svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
})
BLUE, GREY, RED = "#1f5fa8", "#8c8c8c", "#c0392b"


def _thin(s: pd.Series) -> pd.Series:
    step = max(1, len(s) // MAX_POINTS)
    return s.iloc[::step] if step > 1 else s


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def equity_chart(equity: pd.Series, benchmark: pd.Series | None, initial: float) -> str:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(_thin(equity / initial), color=BLUE, lw=1.3, label="strategy")
    if benchmark is not None:
        ax.plot(_thin(benchmark), color=GREY, lw=1.0, label="benchmark")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if round(v * 10) % 2 == 0 else ""))
    ax.set_ylabel("growth of 1 (log scale)")
    ax.set_title("Equity vs benchmark" if benchmark is not None else "Equity (no benchmark configured)")
    ax.legend(loc="upper left", frameon=False)
    return _svg(fig)


def underwater_chart(drawdown: pd.Series) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.4))
    d = _thin(drawdown * 100)
    ax.fill_between(d.index, d.to_numpy(), 0, color=RED, alpha=0.35, lw=0)
    ax.plot(d, color=RED, lw=0.8)
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Underwater (drawdown from running peak)")
    return _svg(fig)


def monthly_heatmap(monthly: pd.Series) -> str:
    table = pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month, "r": monthly.to_numpy() * 100})
    grid = table.pivot(index="year", columns="month", values="r").reindex(columns=range(1, 13))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(grid) + 1.2))
    limit = max(float(np.nanmax(np.abs(grid.to_numpy()))) if grid.notna().any().any() else 1.0, 1e-9)
    im = ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(grid)), [str(y) for y in grid.index])
    ax.grid(False)
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="monthly return (%)", fraction=0.03)
    ax.set_title("Monthly returns (%)")
    return _svg(fig)


def rolling_chart(returns: pd.Series, window: int, ppy: int) -> str:
    fig, ax1 = plt.subplots(figsize=(10, 2.8))
    sd = returns.rolling(window).std()
    sharpe = returns.rolling(window).mean() / sd * np.sqrt(ppy)
    vol = sd * np.sqrt(ppy) * 100
    ax1.plot(_thin(sharpe), color=BLUE, lw=1.0, label="rolling Sharpe")
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_ylabel("Sharpe (annualised)")
    ax2 = ax1.twinx()
    ax2.plot(_thin(vol), color=GREY, lw=1.0, label="rolling volatility")
    ax2.set_ylabel("volatility (% p.a.)")
    ax2.grid(False)
    ax1.set_title(f"Rolling {window}-day (~6-month) Sharpe and volatility")
    lines = ax1.get_lines()[:1] + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper left", frameon=False)
    return _svg(fig)


def exposure_chart(exposure: pd.Series, holdings: pd.Series) -> str:
    fig, ax1 = plt.subplots(figsize=(10, 2.6))
    smooth = exposure.rolling(20, min_periods=1).mean() * 100
    ax1.fill_between(_thin(smooth).index, _thin(smooth).to_numpy(), 0, color=BLUE, alpha=0.25, lw=0)
    ax1.set_ylabel("exposure, 20-day mean (%)")
    ax1.set_ylim(0, 105)
    ax2 = ax1.twinx()
    held = holdings.rolling(20, min_periods=1).mean()
    ax2.plot(_thin(held), color="black", lw=0.9)
    ax2.set_ylabel("holdings, 20-day mean")
    ax2.grid(False)
    ax1.set_title("Exposure (shaded) and number of holdings (line), 20-day averages")
    return _svg(fig)


def turnover_chart(turnover: pd.Series) -> str:
    monthly = turnover.resample("ME").sum() * 100 / 2
    fig, ax = plt.subplots(figsize=(10, 2.4))
    ax.bar(monthly.index, monthly.to_numpy(), width=20, color=GREY)
    ax.set_ylabel("one-way turnover (% of equity)")
    ax.set_title("Monthly turnover")
    return _svg(fig)
