"""The self-contained HTML tear sheet: inline CSS and SVG, no external URLs, no timestamps."""
from __future__ import annotations

import html
import math

import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#222}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px;margin-bottom:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 10px}
.card .k{font-size:11px;color:#666;text-transform:uppercase;letter-spacing:.03em} .card .v{font-size:18px;font-weight:600}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px;margin:10px 0}
.chart svg{width:100%;height:auto}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:6px 0}
td,th{border:1px solid #e3e3e3;padding:3px 8px;text-align:right} th{background:#f0f2f5} td:first-child,th:first-child{text-align:left}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px} .note{background:#fff8e1;border:1px solid #f0d98c;padding:6px 10px;border-radius:6px;font-size:13px}
.neg{color:#c0392b} .pos{color:#1e7d32}
"""


def fmt(value, kind: str = "num") -> str:
    """One formatting rule for every number on the page; NaN/None -> 'n/a'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, str):
        return html.escape(value)
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(frame: pd.DataFrame, kinds: dict[str, str] | None = None, empty: str = "none") -> str:
    if frame is None or frame.empty:
        return f'<p class="sub">{html.escape(empty)}</p>'
    kinds = kinds or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v, kinds.get(c, 'num')) if not isinstance(v, str) else html.escape(v)}</td>"
                         for c, v in zip(frame.columns, row)) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{v}</div></div>' for k, v in items) + "</div>"


def chart(svg: str) -> str:
    return f'<div class="chart">{svg}</div>'


def page(title: str, subtitle: str, sections: list[str]) -> str:
    """A whole standalone page from HTML fragments."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{html.escape(title)}</h1><div class=\"sub\">{html.escape(subtitle)}</div>"
        + "\n".join(sections) + "</main></body></html>\n"
    )
