"""Charts of the tear sheet: matplotlib (Agg, no pyplot state), rendered to inline SVG.

Deterministic: every chart has its own `svg.hashsalt` (so ids are reproducible and unique within
the page) and no date metadata. Lines longer than MAX_POINTS are thinned for drawing only, keeping
each bucket's minimum and maximum so peaks and troughs survive; metrics always use every value.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib (0.3 s of imports) is loaded by the first chart drawn, not when the reporting command
# starts: `_load_matplotlib` binds these names, and every chart function runs under `_styled`, which
# calls it first. Read them as `charts.mticker` etc. only inside a `_styled` function.
matplotlib = mdates = mticker = Figure = None  # noqa: F811

MAX_POINTS = 1500
BLUE, GREY, RED, GREEN, ORANGE = "#1f5fa8", "#7f7f7f", "#c0392b", "#2e7d32", "#d68910"
STYLE = {
    "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.titlelocation": "left",
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False,
    "axes.axisbelow": True, "legend.frameon": False, "legend.fontsize": 8, "figure.dpi": 72,
    # titles at the top of the axes, where matplotlib's automatic placement puts them anyway here (no x
    # labels and no offset text above the axes): a fixed place saves a tick-label layout pass per axes
    "axes.titley": 1.0,
}
WIDTH = 11.0  # inches; the page scales the SVG to its column width


def thin(index: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points for drawing: per bucket of consecutive points, its min and its max
    (in time order). NaN values are kept out of the choice unless a bucket is all NaN."""
    n = len(values)
    if n <= max_points:
        return index, values
    size = -(-n // (max_points // 2))
    pad = (-n) % size
    v = np.concatenate([values.astype(float), np.full(pad, np.nan)]).reshape(-1, size)
    base = np.arange(v.shape[0]) * size
    low = np.argmin(np.where(np.isnan(v), np.inf, v), axis=1) + base
    high = np.argmax(np.where(np.isnan(v), -np.inf, v), axis=1) + base
    keep = np.unique(np.concatenate([low, high, [0, n - 1]]))
    keep = keep[keep < n]
    return index[keep], values[keep]


def render_svg(fig: Figure, name: str) -> str:
    """The figure as an <svg> element: no XML prologue, no metadata (so no timestamp), every id prefixed
    with `name` (unique in the page) and hashed ids salted with it (reproducible)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"trendflow-{name}", "svg.id": f"chart-{name}"}), warnings.catch_warnings():
        # text stays text in the SVG (svg.fonttype none): the browser draws names such as 沪深300ETF with its own
        # fonts, so matplotlib's font lacking those glyphs is only a measuring matter
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    # matplotlib numbers its element ids per figure (figure_1, axes_1, ...): prefix them so they stay
    # unique in a page that inlines several charts
    text = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", text)
    return re.sub(r'href="#([^"]+)"', rf'href="#{name}-\1"', text)


def _figure(rows: int, height: float, ratios: list[float] | None = None):
    """A figure of `rows` stacked axes sharing the time axis, with margins fixed in inches (room for
    each title and the date labels whatever the height), so no tight-bbox second pass is needed."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, height))
        axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios} if ratios else None)[:, 0]
    top, bottom, gap = 0.32, 0.36, 0.5  # inches: title above the first axes, date labels, title between axes
    axes_height = (height - top - bottom - gap * (rows - 1)) / rows
    fig.subplots_adjust(left=0.8 / WIDTH, right=1 - 0.15 / WIDTH, top=1 - top / height, bottom=bottom / height,
                        hspace=gap / axes_height)
    return fig, axes


def _load_matplotlib() -> None:
    """Import matplotlib (Agg backend, no pyplot) and bind this module's names for it; once per process."""
    global matplotlib, mdates, mticker, Figure
    if Figure is not None:
        return
    import matplotlib as mpl

    mpl.use("Agg")
    with _without_property_docs():
        from matplotlib import dates, figure, ticker

    matplotlib, mdates, mticker, Figure = mpl, dates, ticker, figure.Figure


@contextlib.contextmanager
def _without_property_docs():
    """While matplotlib's modules are imported, each Artist class it defines writes a docstring for
    its `set()` listing every property (`matplotlib.artist.kwdoc`): 0.1-0.2 CPU-s of the report
    command, for text nobody reads there. Those docstrings are left empty; classes defined after
    the import get matplotlib's own. Drawing never reads them."""
    import matplotlib.artist

    kwdoc = matplotlib.artist.kwdoc
    matplotlib.artist.kwdoc = lambda artist: ""
    try:
        yield
    finally:
        matplotlib.artist.kwdoc = kwdoc


def _styled(draw):
    """Run a chart function under the report's rcParams (so callers' settings never leak in or out),
    matplotlib loaded first."""
    def wrapper(*args, **kwargs):
        _load_matplotlib()
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    wrapper.__doc__, wrapper.__name__ = draw.__doc__, draw.__name__
    return wrapper


def _dates(ax, start: np.datetime64, end: np.datetime64) -> None:
    """Date ticks at calendar boundaries chosen from the span (years, half-years, quarters or months),
    placed directly: the same labels as matplotlib's auto locator at a fraction of its cost."""
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    months = (last.year - first.year) * 12 + last.month - first.month
    step = next((k for limit, k in ((6, 1), (18, 3), (48, 6), (144, 12), (288, 24)) if months <= limit), 60)
    ticks = pd.date_range(first.to_period("M").to_timestamp(), last, freq="MS")
    ticks = ticks[(ticks >= first) & ((ticks.month - 1) % step == 0 if step <= 12 else (ticks.month == 1) & (ticks.year % (step // 12) == 0))]
    ax.set_xlim(mdates.date2num(np.array([start, end], dtype="datetime64[ns]")))
    if len(ticks) < 2:  # under two months: let matplotlib pick days
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        return
    labels = [str(t.year) if t.month == 1 or step >= 12 else t.strftime("%b") for t in ticks]
    if ticks[0].month != 1 and step < 12:
        labels[0] = ticks[0].strftime("%b %Y")
    ax.xaxis.set_major_locator(mticker.FixedLocator(mdates.date2num(ticks.to_numpy())))
    ax.xaxis.set_major_formatter(mticker.FixedFormatter(labels))


def _percent(ax, decimals: int = 0) -> None:
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=decimals))


def _line(ax, s: pd.Series, **kwargs):
    x, y = thin(s.index.to_numpy(), s.to_numpy(dtype=float))
    return ax.plot(x, y, **kwargs)


@_styled
def equity_chart(wealth: pd.Series, benchmark: pd.Series | None, benchmark_label: str | None,
                 drawdowns: list[tuple[np.datetime64, np.datetime64]] = ()) -> str:
    """Growth of 1 for the strategy (and the benchmark, rebased to the strategy on its first date), log y;
    `drawdowns` (peak, recovery-or-last-close) spans are shaded."""
    fig, (ax,) = _figure(1, 3.6)
    for k, (start, end) in enumerate(drawdowns):
        ax.axvspan(start, end, color=RED, alpha=0.09, lw=0, label="top drawdowns" if k == 0 else None)
    _line(ax, wealth, color=BLUE, lw=1.4, label="strategy")
    if benchmark is not None:
        _line(ax, benchmark, color=GREY, lw=1.1, label=benchmark_label or "benchmark")
    ax.set_yscale("log")
    both = pd.concat([wealth, benchmark]) if benchmark is not None else wealth
    low, high = float(np.nanmin(both)), float(np.nanmax(both))
    # label 1-2-5 steps (plain steps when the range is narrow); a log axis alone would label only powers of 10
    ax.yaxis.set_major_locator(mticker.MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]) if high / low < 2.5 else mticker.LogLocator(10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("value of 1 invested (log scale)")
    ax.set_title("Equity vs benchmark" if benchmark is not None else "Equity (no benchmark)")
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=3, borderaxespad=0.1)
    _dates(ax, wealth.index[0], wealth.index[-1])
    return render_svg(fig, "equity")


@_styled
def histogram_chart(r: pd.Series, var: float, cvar: float, bins: int = 60) -> str:
    """Daily returns as a density histogram, the normal density with the same mean and standard deviation
    over it (fat tails show as bars beyond the curve), and the historical VaR/CVaR 95% as lines."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 2.8))
        ax = fig.subplots()
    fig.subplots_adjust(left=0.8 / WIDTH, right=1 - 0.15 / WIDTH, top=1 - 0.32 / 2.8, bottom=0.4 / 2.8)
    x = r.to_numpy(dtype=float)
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    reach = max(abs(float(np.percentile(x, 0.5)) - mean), abs(float(np.percentile(x, 99.5)) - mean), 4 * sd)
    density, edges = np.histogram(np.clip(x, mean - reach, mean + reach), bins=bins, range=(mean - reach, mean + reach), density=True)
    ax.stairs(density, edges, fill=True, color=BLUE, alpha=0.45, label="daily returns")
    grid = np.linspace(mean - reach, mean + reach, 200)
    ax.plot(grid, np.exp(-0.5 * ((grid - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color="black", lw=1.1,
            label="normal, same mean and std")
    ax.axvline(var, color=ORANGE, lw=1.1, ls="--", label=f"VaR 95% {var:.2%}")
    ax.axvline(cvar, color=RED, lw=1.1, ls=":", label=f"CVaR 95% {cvar:.2%}")
    ax.set_xlim(mean - reach, mean + reach)
    ax.xaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=1))
    ax.set_yticks([])
    ax.set_ylabel("density")
    ax.set_title("Distribution of daily returns from the first fill (outliers beyond the axis piled at its ends)")
    ax.legend(loc="upper left", fontsize=7.5)
    return render_svg(fig, "histogram")


@_styled
def underwater_chart(drawdown: pd.Series) -> str:
    """Drawdown from the running peak, as a filled area below zero."""
    fig, (ax,) = _figure(1, 2.4)
    x, y = thin(drawdown.index.to_numpy(), drawdown.to_numpy(dtype=float))
    ax.fill_between(x, y, 0, color=RED, alpha=0.3, lw=0)
    ax.plot(x, y, color=RED, lw=0.8)
    ax.set_ylim(top=0)
    _percent(ax)
    ax.set_ylabel("below peak")
    ax.set_title("Underwater: drawdown from the running peak")
    _dates(ax, drawdown.index[0], drawdown.index[-1])
    return render_svg(fig, "underwater")


@_styled
def rolling_chart(sharpe: pd.Series, volatility: pd.Series, window: int, sortino: pd.Series | None = None,
                  beta: pd.Series | None = None, benchmark_label: str | None = None) -> str:
    """Rolling Sharpe and Sortino (top), annualised volatility, and beta to the benchmark when there is
    one (bottom), over `window` sessions."""
    has_beta = beta is not None and beta.notna().any()
    fig, axes = _figure(3 if has_beta else 2, 6.2 if has_beta else 4.2)
    top, middle = axes[0], axes[1]
    _line(top, sharpe, color=BLUE, lw=1.0, label="Sharpe")
    if sortino is not None:
        # Sortino's denominator nears 0 in calm windows: clip the drawing (not the numbers) to keep Sharpe readable
        finite = sharpe.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        limit = 3 * float(np.max(np.abs(finite))) if len(finite) else 10.0
        _line(top, sortino.clip(-limit, limit), color=GREEN, lw=0.9, alpha=0.8, label="Sortino")
        top.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=2, borderaxespad=0.1)
    top.axhline(0, color="black", lw=0.6)
    top.set_ylabel("ratio (annualised)")
    top.set_title(f"Rolling {window}-session (~{window / 21:.0f}-month) Sharpe" + (" and Sortino" if sortino is not None else ""))
    _line(middle, volatility, color=ORANGE, lw=1.0)
    middle.set_ylim(bottom=0)
    _percent(middle)
    middle.set_ylabel("volatility (p.a.)")
    middle.set_title(f"Rolling {window}-session volatility")
    if has_beta:
        bottom = axes[2]
        _line(bottom, beta.dropna(), color=GREY, lw=1.0)
        bottom.axhline(1, color="black", lw=0.5, ls=":")
        bottom.axhline(0, color="black", lw=0.6)
        bottom.set_ylabel("beta")
        bottom.set_title(f"Rolling {window}-session beta to {benchmark_label or 'the benchmark'}")
    _dates(axes[-1], sharpe.index[0], sharpe.index[-1])
    return render_svg(fig, "rolling")


@_styled
def exposure_chart(exposure: pd.Series, holdings: pd.Series, smooth: int = 20) -> str:
    """Invested share of equity (top) and number of holdings (bottom) at each close: the daily values
    thin and light, their `smooth`-session mean on top."""
    fig, (top, bottom) = _figure(2, 4.2)
    _line(top, exposure, color=BLUE, lw=0.5, alpha=0.35, label="daily")
    _line(top, exposure.rolling(smooth, min_periods=1).mean(), color=BLUE, lw=1.4, label=f"{smooth}-session mean")
    top.set_ylim(0, max(1.05, float(exposure.max()) * 1.05) if len(exposure) else 1.05)
    _percent(top)
    top.set_ylabel("invested")
    top.set_title("Exposure: positions value / equity")
    top.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=2, borderaxespad=0.1)
    _line(bottom, holdings.astype(float), color="black", lw=0.5, alpha=0.35, label="daily")
    _line(bottom, holdings.rolling(smooth, min_periods=1).mean(), color="black", lw=1.4, label=f"{smooth}-session mean")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    bottom.set_ylabel("holdings")
    bottom.set_title("Number of holdings")
    bottom.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=2, borderaxespad=0.1)
    _dates(bottom, exposure.index[0], exposure.index[-1])
    return render_svg(fig, "exposure")


@_styled
def holdings_chart(weights: pd.DataFrame, max_points: int = 260) -> str:
    """Stacked weights (share of equity) of the largest holdings and 'other' at each close; the white space
    above is cash. Long histories are drawn as means over buckets of k sessions (at most `max_points`)."""
    fig, (ax,) = _figure(1, 3.4)
    step = max(1, -(-len(weights) // max_points))
    buckets = np.arange(len(weights)) // step
    drawn = weights.groupby(buckets).mean().set_axis(weights.index[::step])  # each bucket's mean, at its first session
    palette = ["#1f5fa8", "#d68910", "#2e7d32", "#c0392b", "#7d3c98", "#17a589", "#a04000", "#5d6d7e", "#c7c7c7"]
    colours = [palette[k % (len(palette) - 1)] for k in range(drawn.shape[1])]
    if "other" in drawn.columns:
        colours[list(drawn.columns).index("other")] = palette[-1]
    ax.stackplot(drawn.index.to_numpy(), drawn.to_numpy(dtype=float).T, labels=list(drawn.columns), colors=colours,
                 alpha=0.85, lw=0)
    ax.set_ylim(0, max(1.0, float(drawn.sum(axis=1).max())))
    _percent(ax)
    ax.set_ylabel("share of equity")
    ax.set_title("Holdings over time (largest by average weight; white = cash)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7.5)
    fig.subplots_adjust(right=1 - 2.1 / WIDTH)
    _dates(ax, weights.index[0], weights.index[-1])
    return render_svg(fig, "holdings")


@_styled
def turnover_chart(monthly: pd.Series) -> str:
    """One-way turnover per calendar month, as a share of equity."""
    fig, (ax,) = _figure(1, 2.4)
    starts = (monthly.index - pd.offsets.MonthBegin(1)).to_numpy()
    edges = np.concatenate([starts, [monthly.index[-1].to_numpy() + np.timedelta64(1, "D")]]) if len(monthly) else starts
    if len(monthly):
        ax.stairs(monthly.to_numpy(dtype=float), edges, fill=True, color=GREY, alpha=0.8)
    ax.set_ylim(bottom=0)
    _percent(ax)
    ax.set_ylabel("of equity")
    ax.set_title("Monthly turnover (one-way: (buys + sells) / 2)")
    if len(monthly):
        _dates(ax, edges[0], edges[-1])
    return render_svg(fig, "turnover")


@_styled
def signal_quality_chart(quintiles: dict[int, list[float]], ic: dict[int, pd.Series], window: int = 252) -> str:
    """Left: mean forward return by score quintile per horizon. Right: rolling mean rank IC per horizon."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 3.2))
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    fig.subplots_adjust(left=0.8 / WIDTH, right=1 - 0.15 / WIDTH, top=1 - 0.32 / 3.2, bottom=0.5 / 3.2, wspace=0.22)
    colours = [BLUE, ORANGE, GREEN, RED, GREY]
    width = 0.8 / max(len(quintiles), 1)
    for k, (h, values) in enumerate(sorted(quintiles.items())):
        x = np.arange(1, 6) + (k - (len(quintiles) - 1) / 2) * width
        left.bar(x, np.nan_to_num(np.asarray(values, dtype=float)), width=width, color=colours[k % 5], label=f"{h}-session")
    left.axhline(0, color="black", lw=0.6)
    left.set_xticks(range(1, 6), ["1\nlowest", "2", "3", "4", "5\nhighest"])
    _percent(left, 1)
    left.set_ylabel("mean forward return")
    left.set_title("Forward return by momentum-score quintile")
    left.legend(loc="upper left")
    for k, (h, series) in enumerate(sorted(ic.items())):
        rolling = series.rolling(window, min_periods=window // 4).mean()
        _line(right, rolling, color=colours[k % 5], lw=1.0, label=f"{h}-session")
    right.axhline(0, color="black", lw=0.6)
    right.set_ylabel("rank IC")
    right.set_title(f"Rank IC, rolling {window}-session mean")
    right.legend(loc="upper left")
    dates = next(iter(ic.values())).index if ic else None
    if dates is not None and len(dates) > 1:
        _dates(right, dates[0], dates[-1])
    return render_svg(fig, "signal-quality")


@_styled
def walk_forward_chart(walk_forward: pd.Series, in_sample_best: pd.Series, buy_and_hold: pd.Series,
                       boundaries: list[pd.Timestamp]) -> str:
    """Growth of 1 over the test spans: the stitched out-of-sample curve, the in-sample best (hindsight)
    and buy-and-hold, log y; dotted lines where a new window (a new choice of parameters) starts."""
    fig, (ax,) = _figure(1, 3.6)
    for k, day in enumerate(boundaries):
        ax.axvline(day, color=GREY, lw=0.6, ls=":", label="new window" if k == 0 else None)
    _line(ax, walk_forward, color=BLUE, lw=1.5, label="walk-forward (out of sample)")
    if in_sample_best.notna().any():
        _line(ax, in_sample_best, color=RED, lw=1.0, ls="--", label="in-sample best (hindsight)")
    if buy_and_hold.notna().any():
        _line(ax, buy_and_hold, color=GREY, lw=1.0, label="buy-and-hold, equal weight")
    ax.set_yscale("log")
    values = pd.concat([walk_forward, in_sample_best, buy_and_hold]).to_numpy(dtype=float)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    ax.yaxis.set_major_locator(mticker.MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]) if high / low < 2.5 else mticker.LogLocator(10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("value of 1 (log scale)")
    ax.set_title("Walk-forward: stitched out-of-sample equity")
    ax.legend(loc="lower left", ncols=2, frameon=True, framealpha=0.9, edgecolor="none")
    _dates(ax, walk_forward.index[0], walk_forward.index[-1])
    return render_svg(fig, "walk-forward")


@_styled
def pbo_chart(logits: np.ndarray, pbo: float, bins: int = 40) -> str:
    """Histogram of the CSCV logits log(w / (1 - w)) of the in-sample best's out-of-sample rank w: the mass at or
    below 0 (red) is the PBO; far right = the in-sample best stays near the top out of sample."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, 2.4))
        ax = fig.subplots()
    fig.subplots_adjust(left=0.8 / WIDTH, right=1 - 0.15 / WIDTH, top=1 - 0.32 / 2.4, bottom=0.45 / 2.4)
    x = np.asarray(logits, dtype=float)
    reach = max(1.0, float(np.max(np.abs(x))))
    edges = np.linspace(-reach, reach, bins + 1)
    counts, _ = np.histogram(x, bins=edges)
    share = counts / len(x)
    centres = (edges[:-1] + edges[1:]) / 2
    ax.bar(centres, share, width=edges[1] - edges[0], color=np.where(centres <= 0, RED, GREEN), alpha=0.6, lw=0)
    ax.axvline(0, color="black", lw=0.8)
    _percent(ax)
    ax.set_ylabel("share of splits")
    ax.set_xlabel("logit of the in-sample best's out-of-sample rank (0 = median)")
    ax.set_title(f"CSCV: where the in-sample best lands out of sample (PBO {pbo:.2f} = red share)")
    return render_svg(fig, "pbo")
