"""sweep_report.html: the verdict first (selected combination, deflated Sharpe ratio, PBO), then the
parameters that matter (heatmap + top 10), walk-forward out of sample, and failures. Every combination
is shown by its parameters, named by their config keys. Pure: frames in, HTML out; one function per section."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from schemas.sweep import OverfittingSummary
from stages.reporting.html import cards, chart, fmt, note, page, render_sweep_section, section, table

TOP_COLUMNS = {"sharpe": "num", "cagr": "pct", "max_drawdown": "pct", "calmar": "num", "annual_volatility": "pct",
               "closed_trades": "int", "annual_turnover": "times"}
LABELS = {"sharpe": "Sharpe ratio", "cagr": "CAGR", "max_drawdown": "Max drawdown", "calmar": "Calmar ratio",
          "annual_volatility": "Volatility (p.a.)", "closed_trades": "Closed trades", "annual_turnover": "Turnover (one-way, per year)"}


def sweep_report(results: pd.DataFrame, keys: list[str], metric: str, overfit: OverfittingSummary,
                 walk_forward: pd.DataFrame | None = None, wf_equity: pd.DataFrame | None = None,
                 initial: float = 1.0, logits: np.ndarray | None = None, rf: float = 0.0, ppy: int = 252) -> str:
    """The page; `initial` is the capital each walk-forward curve starts from; `logits` the CSCV logit of
    every split (drawn as a histogram beside the PBO); `rf` (per session) and `ppy` for the walk-forward summary."""
    ok = results[results["status"] == "ok"]
    failed = results[results["status"] == "failed"]
    parts = [_headline(overfit), note("Verdict: " + overfit.verdict)]
    nav = []
    axes = important_axes(ok, keys)
    grid_anchor = "sweep-sharpe" if len(axes) == 2 else "grid"  # render_sweep_section's own anchor
    for anchor, label, html in [
        ("selected", "Selected combination", section("selected", "Selected combination", _selected(results, keys, overfit))),
        ("overfitting", "Overfitting controls", section("overfitting", "Overfitting controls: deflated Sharpe ratio and PBO",
                                                        _overfitting(overfit, logits))),
        (grid_anchor, "Parameters", _grid(results, ok, keys, axes)),
        ("walk-forward", "Walk-forward", _walk_forward(walk_forward, wf_equity, keys, metric, initial, rf, ppy)),
        ("failed", "Failed", section("failed", "Failed combinations", table(failed[["combo_id", "error"]])) if len(failed) else None),
    ]:
        if html is not None:
            parts.append(html)
            nav.append((anchor, label))
    subtitle = (f"{len(results)} combinations of {', '.join(keys)}; {len(failed)} failed; "
                f"selection by {metric}; {overfit.sessions:,} sessions")
    return page("trendflow parameter sweep", subtitle, parts, nav)


def _headline(o: OverfittingSummary) -> str:
    return cards([("Trials", fmt(o.trials, "int")), ("Selected Sharpe", fmt(o.sharpe)),
                  ("Luck's best Sharpe", fmt(o.expected_max_sharpe)), ("Deflated Sharpe", fmt(o.deflated_sharpe)),
                  ("PBO", fmt(o.pbo))])


def _selected(results: pd.DataFrame, keys: list[str], o: OverfittingSummary) -> str:
    if o.selected_combo_id is None:
        return '<p class="sub">No successful combination.</p>'
    row = results[results["combo_id"] == o.selected_combo_id].iloc[0]
    params = pd.DataFrame({"parameter": keys, "value": [_label(o.selected_params.get(k)) for k in keys]})
    metrics = pd.DataFrame({"metric": [LABELS[c] for c in TOP_COLUMNS], "value": [fmt(row[c], k) for c, k in TOP_COLUMNS.items()]})
    return (f'<p class="sub">Best {o.selection_metric} over the whole history (combination {o.selected_combo_id}); '
            "this is an in-sample number: read it with the controls below.</p>"
            f'<div class="grid2"><div><h3>Parameters</h3>{table(params)}</div><div><h3>In-sample results</h3>'
            f"{table(metrics)}</div></div>")


def _overfitting(o: OverfittingSummary, logits: np.ndarray | None) -> str:
    dsr = pd.DataFrame({"figure": ["trials N (successful combinations)", "sessions T", "selected Sharpe (annualised)",
                                   "variance of the trials' Sharpe ratios (annualised)",
                                   "expected best Sharpe of N trials without skill", "deflated Sharpe ratio (DSR)"],
                        "value": [fmt(o.trials, "int"), fmt(o.sessions, "int"), fmt(o.sharpe), fmt(o.sharpe_variance, "num3"),
                                  fmt(o.expected_max_sharpe), fmt(o.deflated_sharpe, "num3")]})
    pbo = pd.DataFrame({"figure": ["blocks S", "train/test splits C(S, S/2)", "probability of backtest overfitting (PBO)"],
                        "value": [fmt(o.pbo_splits, "int"), fmt(o.pbo_combinations, "int"), fmt(o.pbo, "num3")]})
    notes = "".join(note(n) for n in o.notes)
    return ('<div class="grid2"><div><h3>Deflated Sharpe ratio</h3>' + table(dsr)
            + '<p class="sub">DSR (Bailey &amp; L&oacute;pez de Prado 2014) = the probability that the selected combination\'s '
              "true Sharpe ratio beats the best Sharpe that N skill-less trials with this spread of Sharpe ratios would show by "
              "luck, given T sessions and the returns' skew and kurtosis. Significant at 95% when DSR &ge; 0.95. Grid neighbours "
              "are correlated, so N overstates the independent trials: the DSR errs on the strict side.</p></div>"
              "<div><h3>Probability of backtest overfitting</h3>" + table(pbo)
            + '<p class="sub">CSCV (Bailey, Borwein, L&oacute;pez de Prado &amp; Zhu 2015): the sessions are cut into S blocks; '
              "for every way to pick half of them as the training set, the best-Sharpe combination on it is ranked out of sample "
              "on the other half. PBO = the share of splits where it lands at or below the median; about 0.5 means the "
              "selection is no better than a coin toss, near 0 that the in-sample best stays good. Change S with "
              "<code>--pbo-splits</code>.</p></div></div>" + notes + _logit_chart(o, logits))


def _logit_chart(o: OverfittingSummary, logits: np.ndarray | None) -> str:
    if logits is None or not len(logits) or o.pbo is None:
        return ""
    from stages.reporting import charts

    return chart(charts.pbo_chart(logits, o.pbo), "pbo", "Distribution of the CSCV logits; the PBO is the share at or below 0")


def _grid(results: pd.DataFrame, ok: pd.DataFrame, keys: list[str], axes: list[str]) -> str:
    """A whole section: the Sharpe heatmap over the two keys that move it most with the top 10, or (fewer
    than two varying keys) the top 10 alone; each combination by its parameters."""
    if len(axes) == 2:
        return render_sweep_section(results, "sharpe", x=axes[1], y=axes[0])
    top = ok.sort_values(["sharpe", "combo_id"], ascending=[False, True], na_position="last").head(10)
    shown = pd.DataFrame({k: top[f"param:{k}"].map(lambda v: _label(json.loads(v))).to_numpy() for k in keys})
    for c in TOP_COLUMNS:
        shown[c] = top[c].to_numpy()
    shown.insert(0, "combo_id", top["combo_id"].to_numpy())
    return section("grid", "Parameters", f"<h3>Top {len(top)} combinations by Sharpe</h3>"
                   + table(shown, {**TOP_COLUMNS, **{k: "text" for k in keys}}, "no successful combination"))


def _walk_forward(wf: pd.DataFrame | None, equity: pd.DataFrame | None, keys: list[str], metric: str,
                  initial: float, rf: float, ppy: int) -> str | None:
    if wf is None:
        return None
    from stages.reporting import charts

    params = wf["params"].map(json.loads)
    frame = pd.DataFrame({"window": wf["window"].to_numpy(),
                          "train": [f"{a:%Y-%m-%d} to {b:%Y-%m-%d}" for a, b in zip(wf["train_start"], wf["train_end"])],
                          "test": [f"{a:%Y-%m-%d} to {b:%Y-%m-%d}" for a, b in zip(wf["test_start"], wf["test_end"])]})
    for k in keys:
        frame[k] = [_label(p.get(k)) for p in params]
    frame[f"IS {metric}"] = wf["in_sample"].to_numpy()
    frame[f"OOS {metric}"] = wf["out_of_sample"].to_numpy()
    frame["IS return"] = wf["in_sample_total_return"].to_numpy()
    frame["OOS return"] = wf["out_of_sample_total_return"].to_numpy()
    kinds = {"window": "int", "IS return": "pct", "OOS return": "pct", **{k: "text" for k in keys}}
    parts = []
    if equity is not None and len(equity) > 1:
        growth = equity.set_index("date")[["equity", "in_sample_best", "buy_and_hold"]] / initial
        boundaries = list(wf["test_start"].iloc[1:])
        parts.append(chart(charts.walk_forward_chart(growth["equity"], growth["in_sample_best"], growth["buy_and_hold"], boundaries),
                           "walk-forward", "Stitched out-of-sample equity against the in-sample best and buy-and-hold"))
        parts.append('<p class="sub">Each test span is traded from cash with the combination chosen on its training span only, '
                     "and the spans are chained. The in-sample best is the combination with the best "
                     f"{metric} over the whole history (hindsight: what the top of the sweep promises); buy-and-hold is equal "
                     "weight in every symbol with a price at the start.</p>")
        parts.append("<h3>Over the test spans</h3>" + _walk_forward_summary(growth, rf, ppy))
    parts.append("<h3>Per window: the combination chosen on the training span and how it did</h3>" + table(frame, kinds)
                 + '<p class="sub">IS = in sample (the training span, where the combination was chosen); OOS = out of sample '
                   "(the test span, traded from cash).</p>")
    return section("walk-forward", "Walk-forward: out of sample", *parts)


def _walk_forward_summary(growth: pd.DataFrame, rf: float, ppy: int) -> str:
    """Return and risk of the three curves over the same sessions (each from 1 at the close before the first)."""
    from stages.reporting.metrics import annual_volatility, cagr, max_drawdown, sharpe_ratio, total_return

    rows = []
    for column, label in [("equity", "walk-forward (out of sample)"), ("in_sample_best", "in-sample best (hindsight)"),
                          ("buy_and_hold", "buy-and-hold, equal weight")]:
        g = growth[column]
        if g.isna().all():
            continue
        r = g / g.shift(1, fill_value=1.0) - 1.0
        rows.append({"curve": label, "total return": total_return(r), "CAGR": cagr(r, ppy),
                     "volatility": annual_volatility(r, ppy), "Sharpe": sharpe_ratio(r, rf, ppy), "max drawdown": max_drawdown(r)})
    return table(pd.DataFrame(rows), {"total return": "pct", "CAGR": "pct", "volatility": "pct", "max drawdown": "pct"})


def important_axes(ok: pd.DataFrame, keys: list[str], value: str = "sharpe") -> list[str]:
    """The two grid keys that move `value` most: the spread (max - min) of its mean over each key's
    values (a main effect); keys with a single value never qualify; ties go to the key with more values."""
    def effect(key: str) -> tuple[float, int]:
        means = ok.groupby(f"param:{key}")[value].mean()
        spread = float(means.max() - means.min()) if len(means) > 1 and means.notna().any() else -1.0
        return (spread, ok[f"param:{key}"].nunique())

    ranked = sorted((k for k in keys if ok[f"param:{k}"].nunique() > 1), key=effect, reverse=True) if len(ok) else []
    return ranked[:2]


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)

