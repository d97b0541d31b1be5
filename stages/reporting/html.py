"""HTML building blocks of the tear sheet (and of any other trendflow page): one number format,
tables, colour-scaled tables (heatmaps), sections, and a standalone page from fragments.

Self-contained by construction: inline CSS and inline SVG, no scripts, no external URLs, no timestamps.
"""
from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d1f23;font-size:14px;line-height:1.4}
main{max-width:1180px;margin:0 auto;padding:18px 28px 56px}
h1{font-size:24px;margin:6px 0 2px} h2{font-size:17px;margin:30px 0 10px;padding-bottom:4px;border-bottom:2px solid #dfe3e8}
h3{font-size:14px;margin:14px 0 6px;color:#3a3f47}
nav{font-size:12.5px;margin:6px 0 14px} nav a{color:#1f5fa8;text-decoration:none;margin-right:12px}
.sub{color:#5f6670;font-size:13px;margin:2px 0 10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(138px,1fr));gap:8px;margin:10px 0}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px}
.card .k{font-size:11px;color:#5f6670;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:19px;font-weight:600;font-variant-numeric:tabular-nums}
.chart{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:6px 8px;margin:10px 0}
.chart svg{display:block;width:100%;height:auto}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:20px;align-items:start}
@media (max-width:1100px){.grid2{grid-template-columns:1fr}}
@media (max-width:700px){main{padding:12px 10px 40px}.chart{overflow-x:auto}.chart svg{width:720px;max-width:none}}
.scroll{overflow-x:auto}
.tall{max-height:440px;overflow-y:auto}
.wrap td{white-space:normal;overflow-wrap:anywhere}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:4px 0 8px;font-variant-numeric:tabular-nums}
td,th{border:1px solid #e1e4e8;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f4;font-weight:600} td:first-child,th:first-child{text-align:left}
td.t{text-align:left}
table.heat td{min-width:46px;text-align:center} table.heat td:first-child{text-align:left;font-weight:600}
.neg{color:#b03a2e} .note{background:#fff8e1;border:1px solid #ecd27d;padding:7px 11px;border-radius:6px;font-size:13px;margin:6px 0}
.muted{color:#8a9099}
"""


# --------------------------------------------------------------------------- numbers
def fmt(value, kind: str = "num") -> str:
    """The one formatting rule for every value on a page; None/NaN/inf -> 'n/a'.

    kinds: pct (12.34%), pct1 (12.3%), num (1.23), num3 (0.123), times (2.5×), int (1,234), money (1,234,567), date, text."""
    if value is None or value is pd.NaT or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return "n/a"
    if kind in ("text", "date") or isinstance(value, str):
        if isinstance(value, pd.Timestamp):
            return value.strftime("%Y-%m-%d")
        return html.escape(str(value))
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    digits = {"pct": 4, "pct1": 3, "num3": 3, "times": 1, "money": 0}.get(kind, 2)
    if round(value, digits) == 0:
        value = 0.0  # no "-0.0%" for a tiny loss
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "pct1":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.0f}"
    if kind == "times":
        return f"{value:.1f}×"
    if kind == "num3":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _cell(value, kind: str) -> str:
    text = fmt(value, kind)
    if kind in ("text", "date") or isinstance(value, (str, pd.Timestamp)) or value is None:
        return f'<td class="t">{text}</td>'
    negative = isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value < 0
    return f'<td class="neg">{text}</td>' if negative else f"<td>{text}</td>"


def table(frame: pd.DataFrame | None, kinds: dict[str, str] | None = None, empty: str = "none") -> str:
    """A table of a DataFrame's columns (not its index); `kinds` maps column -> fmt kind (default num,
    text for string columns). An empty frame gives the `empty` sentence instead."""
    if frame is None or frame.empty:
        return f'<p class="sub">{html.escape(empty)}</p>'
    kinds = kinds or {}
    resolved = {c: kinds.get(c, "text" if not pd.api.types.is_numeric_dtype(frame[c]) else "num") for c in frame.columns}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    columns = [frame[c].tolist() for c in frame.columns]
    body = "".join("<tr>" + "".join(_cell(col[i], resolved[c]) for c, col in zip(frame.columns, columns)) + "</tr>"
                   for i in range(len(frame)))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def heat_colour(value: float, low: float, high: float, centre: float | None = 0.0) -> str:
    """Background colour of a heatmap cell: red below `centre`, green above, white at it, full
    strength at `low` / `high` (values beyond are clipped). Without a centre: red at low -> green at high."""
    if value is None or not math.isfinite(value):
        return "#f3f4f6"
    if centre is None:
        centre = (low + high) / 2
    span = (high - centre) if value >= centre else (centre - low)
    strength = min(abs(value - centre) / span, 1.0) if span > 0 else 0.0
    target = (46, 160, 67) if value >= centre else (214, 69, 65)
    r, g, b = (round(255 + (t - 255) * 0.75 * strength) for t in target)
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_table(grid: pd.DataFrame, kind: str = "pct1", centre: float | None = 0.0, corner: str = "",
               extra: pd.DataFrame | None = None, extra_kind: str = "pct1", lower_is_better: bool = False) -> str:
    """A colour-scaled table of `grid` (its index labels the rows, its columns the columns).

    With a centre, the colour range is the 95th percentile of |value - centre| (one outlier does not
    wash out the rest); without, it runs from the smallest to the largest value. Green = high, or
    low with `lower_is_better`. `extra` columns (same index) are appended uncoloured, e.g. a yearly total."""
    values = grid.to_numpy(dtype=float)
    shade = -values if lower_is_better else values
    finite = shade[np.isfinite(shade)]
    if centre is None:
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    else:
        centre = -centre if lower_is_better else centre
        reach = float(np.percentile(np.abs(finite - centre), 95)) if len(finite) else 0.0
        low, high = centre - reach, centre + reach
    head = f"<th>{html.escape(corner)}</th>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in grid.columns)
    if extra is not None:
        head += "".join(f"<th>{html.escape(str(c))}</th>" for c in extra.columns)
    rows = []
    for i, label in enumerate(grid.index):
        cells = "".join(f'<td style="background:{heat_colour(c, low, high, centre)}">{fmt(v, kind) if math.isfinite(v) else ""}</td>'
                        for v, c in zip(values[i], shade[i]))
        if extra is not None:
            cells += "".join(_cell(v, extra_kind) for v in extra.iloc[i].tolist())
        rows.append(f"<tr><td>{html.escape(str(label))}</td>{cells}</tr>")
    return f'<div class="scroll"><table class="heat"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


# --------------------------------------------------------------------------- page parts
def cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{v}</div></div>' for k, v in items) + "</div>"


def chart(svg: str, name: str, label: str) -> str:
    """An inline SVG chart in a card; `name` tags it (data-chart) and `label` describes it for screen readers."""
    return f'<figure class="chart" data-chart="{html.escape(name)}" role="img" aria-label="{html.escape(label)}" style="margin:10px 0">{svg}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{html.escape(anchor)}"><h2>{html.escape(title)}</h2>' + "".join(parts) + "</section>"


def page(title: str, subtitle: str, sections: list[str], nav: list[tuple[str, str]] | None = None) -> str:
    """A whole standalone HTML page from fragments (sections are inserted as given, in order)."""
    links = ("<nav>" + "".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in nav) + "</nav>") if nav else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f'<h1>{html.escape(title)}</h1>\n<div class="sub">{html.escape(subtitle)}</div>\n{links}\n'
        + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- parameter sweeps
LOWER_IS_BETTER = {"annual_volatility", "annual_turnover", "total_costs", "tracking_error"}
SWEEP_COLUMNS = ["sharpe", "cagr", "total_return", "max_drawdown", "calmar", "sortino", "annual_volatility",
                 "closed_trades", "annual_turnover", "total_costs"]
SWEEP_KINDS = {"cagr": "pct", "total_return": "pct", "max_drawdown": "pct", "annual_volatility": "pct",
               "annual_turnover": "times", "closed_trades": "int", "total_costs": "money"}


def render_sweep_section(results: pd.DataFrame, metric: str, x: str, y: str) -> str:
    """HTML fragment for a parameter sweep: a heatmap of `metric` over parameters `x` (columns) and `y`
    (rows), and the top 10 combinations by `metric`.

    results: one row per combination, with `metric`, the two parameter columns (given by name, or as
    the sweep's `param:<name>` columns, whose values may be JSON-encoded) and, if present, `status`
    ('ok'/'failed'; failed rows are left out and counted). When other parameters vary too, each cell
    shows the best value over them, and the caption says so. Greener = better (lower is better for
    volatility, turnover, costs and tracking error)."""
    cx, cy = _column(results, x), _column(results, y)
    if metric not in results.columns:
        raise KeyError(f"render_sweep_section: no column {metric!r} in the sweep results")
    ok = results[results["status"] == "ok"] if "status" in results.columns else results
    failed = len(results) - len(ok)
    better_low = metric in LOWER_IS_BETTER
    frame = ok.assign(_x=ok[cx].map(_param_value), _y=ok[cy].map(_param_value), _m=pd.to_numeric(ok[metric], errors="coerce"))
    grid = frame.pivot_table(index="_y", columns="_x", values="_m", aggfunc="min" if better_low else "max", dropna=False)
    grid = grid.reindex(index=sorted(grid.index, key=_sort_key), columns=sorted(grid.columns, key=_sort_key))
    grid.index, grid.columns = [_label(v) for v in grid.index], [_label(v) for v in grid.columns]
    coloured = heat_table(grid, SWEEP_KINDS.get(metric, "num"), centre=None, corner=f"{_name(cy)} \\ {_name(cx)}",
                          lower_is_better=better_low)
    others = [c for c in results.columns if c.startswith("param:") and c not in (cx, cy)]
    varying = [c for c in others if ok[c].nunique(dropna=False) > 1]
    caption = (f"{metric} over {_name(cx)} (columns) and {_name(cy)} (rows); greener = better"
               + (f"; each cell is the best over {', '.join(_name(c) for c in varying)}" if varying else "")
               + (f"; {failed} failed combination(s) left out" if failed else "") + ".")
    ranked = frame.assign(_rank=frame["_m"] * (1 if better_low else -1)).sort_values(
        ["_rank", *(["combo_id"] if "combo_id" in frame.columns else [])], na_position="last", kind="stable").head(10)
    shown = ["combo_id"] if "combo_id" in ranked.columns else []
    shown += [cx, cy, *others] + [c for c in dict.fromkeys([metric, *SWEEP_COLUMNS]) if c in ranked.columns]
    top = ranked[shown].rename(columns=lambda c: _name(c))
    for c in [cx, cy, *others]:
        top[_name(c)] = ranked[c].map(lambda v: _label(_param_value(v))).to_numpy()
    kinds = {_name(c): SWEEP_KINDS.get(c, "num") for c in shown if c in SWEEP_KINDS or c == metric}
    kinds.update({_name(c): "text" for c in [cx, cy, *others, "combo_id"]})
    return (f'<section id="sweep-{html.escape(metric)}"><h2>{html.escape(metric)} over {html.escape(_name(cx))} '
            f'x {html.escape(_name(cy))}</h2><p class="sub">{html.escape(caption)}</p>{coloured}'
            f"<h3>Top {len(top)} combinations by {html.escape(metric)}</h3>"
            + table(top, kinds, "no successful combination") + "</section>")


def _column(results: pd.DataFrame, name: str) -> str:
    for candidate in (name, f"param:{name}"):
        if candidate in results.columns:
            return candidate
    raise KeyError(f"render_sweep_section: no parameter column {name!r} (or 'param:{name}') in the sweep results")


def _name(column: str) -> str:
    return column.removeprefix("param:")


def _param_value(value):
    """Sweep parameters are stored JSON-encoded ('5', '"ema"', 'null'); decode them when they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _sort_key(value):
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return json.dumps(value) if not isinstance(value, str) else value

