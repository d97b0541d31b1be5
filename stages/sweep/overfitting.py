"""How much of a sweep's best result is luck: the deflated Sharpe ratio of the selected combination
(Bailey & Lopez de Prado 2014) and the probability of backtest overfitting by combinatorially symmetric
cross-validation (Bailey, Borwein, Lopez de Prado & Zhu 2015). Pure numpy, vectorised over the
combinations; every Sharpe ratio here is per session (not annualised), excess of the risk-free rate.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


# --------------------------------------------------------------------------- deflated Sharpe ratio
def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max SR] of `n_trials` independent strategies with true Sharpe 0 whose estimated Sharpes have
    variance `sharpe_variance`: sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e))), g = Euler's constant.
    0 for a single trial (nothing was selected)."""
    if n_trials < 2 or not sharpe_variance > 0:
        return 0.0
    return math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * _N.inv_cdf(1 - 1 / n_trials)
                                         + EULER_GAMMA * _N.inv_cdf(1 - 1 / (n_trials * math.e)))


def psr_from_moments(sharpe: float, benchmark: float, n: int, skew: float, kurtosis: float) -> float:
    """Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)); `kurtosis` g4 is raw (3 = normal)."""
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if n < 2 or not var > 0 or not math.isfinite(sharpe):
        return math.nan
    return _N.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var))


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(Sharpe, skewness G1, raw kurtosis G2 + 3) of one return series, bias-adjusted as pandas computes them."""
    x = np.asarray(returns, dtype=float)
    n = len(x)
    if n < 4:
        return math.nan, math.nan, math.nan
    d = x - x.mean()
    m2, m3, m4 = (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()
    if not m2 > 0:
        return math.nan, math.nan, math.nan
    g1 = m3 / m2 ** 1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    g2 = ((n + 1) * m4 / m2 ** 2 - 3 * (n - 1)) * (n - 1) / ((n - 2) * (n - 3))
    return float(x.mean() / x.std(ddof=1)), float(g1), float(g2 + 3.0)


@dataclass(frozen=True)
class DeflatedSharpe:
    sharpe: float            # the selected combination's Sharpe, per session
    expected_max: float      # E[max SR] of the trials under no skill (the benchmark SR*), per session
    dsr: float               # P(true SR > expected_max): the deflated Sharpe ratio
    trials: int
    sharpe_variance: float   # variance of the trials' Sharpe ratios, per session^2
    sessions: int


def deflated_sharpe_ratio(selected: np.ndarray, trial_sharpes: np.ndarray) -> DeflatedSharpe:
    """DSR of the selected combination's excess returns, given the (per-session) Sharpe ratios of every
    trial, the selected one included: its PSR against the expected maximum Sharpe of that many trials."""
    trial_sharpes = np.asarray(trial_sharpes, dtype=float)
    trial_sharpes = trial_sharpes[np.isfinite(trial_sharpes)]
    variance = float(trial_sharpes.var(ddof=1)) if len(trial_sharpes) > 1 else 0.0
    sr0 = expected_max_sharpe(len(trial_sharpes), variance)
    sr, g3, g4 = moments(selected)
    return DeflatedSharpe(sr, sr0, psr_from_moments(sr, sr0, len(selected), g3, g4), len(trial_sharpes), variance, len(selected))


def per_session_sharpes(returns: np.ndarray) -> np.ndarray:
    """Sharpe of each column of a sessions x combinations matrix (NaN where a column does not vary)."""
    sd = returns.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, returns.mean(axis=0) / np.where(sd > 0, sd, 1.0), np.nan)


# --------------------------------------------------------------------------- PBO by CSCV
@dataclass(frozen=True)
class Pbo:
    pbo: float                 # share of splits whose in-sample best ranks at or below the median out of sample
    splits: int                # S: the blocks the sessions are cut into
    combinations: int          # C(S, S/2) train/test splits evaluated
    logits: np.ndarray         # lambda per split: log(w / (1 - w)), w = out-of-sample relative rank of the IS best
    oos_sharpe_of_best: np.ndarray  # the IS best's out-of-sample Sharpe per split (per session)


def pbo_cscv(returns: np.ndarray, splits: int = 16, chunk: int = 2048) -> Pbo:
    """Probability of backtest overfitting of picking the best Sharpe among the columns of `returns`
    (sessions x combinations): the sessions are cut into `splits` contiguous blocks of (nearly) equal size;
    for each of the C(S, S/2) ways to choose half the blocks as training set (the rest is the test set),
    the combination with the best training Sharpe is ranked among all by test Sharpe, w = rank / (N + 1);
    PBO = share of splits with logit(w) <= 0. A column with no variation in a set has Sharpe 0 there."""
    m = np.asarray(returns, dtype=float)
    t, n = m.shape
    if splits < 2 or splits % 2 or splits > t:
        raise ValueError(f"PBO needs an even number of splits between 2 and the number of sessions ({t}); got {splits}")
    if n < 2:
        raise ValueError("PBO needs at least two combinations")
    blocks = np.array_split(np.arange(t), splits)
    size = np.array([len(b) for b in blocks], dtype=float)
    total = np.add.reduceat(m, [b[0] for b in blocks], axis=0)           # S x N sums
    total_sq = np.add.reduceat(m * m, [b[0] for b in blocks], axis=0)    # S x N sums of squares
    chosen = np.array(list(itertools.combinations(range(splits), splits // 2)), dtype=np.int64)
    logits, oos_best = [], []
    for start in range(0, len(chosen), chunk):
        mask = np.zeros((min(chunk, len(chosen) - start), splits))
        np.put_along_axis(mask, chosen[start:start + chunk], 1.0, axis=1)
        train = _sharpe_of_sets(mask, total, total_sq, size)
        test = _sharpe_of_sets(1.0 - mask, total, total_sq, size)
        best = np.argmax(train, axis=1)
        oos = test[np.arange(len(best)), best]
        below = (test < oos[:, None]).sum(axis=1)
        ties = (test == oos[:, None]).sum(axis=1) - 1
        w = (below + 1 + 0.5 * ties) / (n + 1)
        logits.append(np.log(w / (1 - w)))
        oos_best.append(oos)
    logit = np.concatenate(logits)
    return Pbo(float((logit <= 0).mean()), splits, len(chosen), logit, np.concatenate(oos_best))


def _sharpe_of_sets(mask: np.ndarray, total: np.ndarray, total_sq: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per-session Sharpe of every column over the union of the blocks each row of `mask` selects."""
    count = mask @ size
    s, sq = mask @ total, mask @ total_sq
    mean = s / count[:, None]
    var = (sq - count[:, None] * mean * mean) / (count[:, None] - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.where(sd > 1e-15, mean / np.where(sd > 1e-15, sd, 1.0), 0.0)


# --------------------------------------------------------------------------- a sweep's verdict
SIGNIFICANCE = 0.95


def select_best(rows: list[dict], metric: str) -> dict | None:
    """The successful row with the best `metric` (direction from SELECTION_METRICS); ties go to the
    smallest combo id, as in walk-forward selection."""
    from stages.sweep.runner import selection_score

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    scored = [(selection_score({metric: math.nan if r.get(metric) is None else float(r[metric])}, metric), r["combo_id"], r)
              for r in ok]
    return min(scored, key=lambda s: (-s[0], s[1]))[2]


def returns_matrix(rows: list[dict]) -> tuple[list[str], np.ndarray] | None:
    """(combo ids, sessions x combinations daily returns) of the successful full-history rows, in combo-id
    order; None when there is none or their series differ in length."""
    ok = sorted((r for r in rows if r.get("status") == "ok" and r.get("returns") is not None), key=lambda r: r["combo_id"])
    if not ok or len({len(r["returns"]) for r in ok}) != 1:
        return None
    return [r["combo_id"] for r in ok], np.array([r["returns"] for r in ok], dtype=float).T


def assess(rows: list[dict], metric: str, rf: float, ppy: int, splits: int) -> tuple["OverfittingSummary", np.ndarray]:
    """DSR of the combination `metric` selects and PBO of selecting by Sharpe, from the full-history
    daily returns each successful row carries ("returns"), excess of the per-session rate `rf`; with the
    CSCV logits (one per split; empty without a PBO)."""
    from schemas.sweep import OverfittingSummary

    notes: list[str] = []
    best = select_best(rows, metric)
    found = returns_matrix(rows)
    ids, matrix = found if found is not None else ([], np.empty((0, 0)))
    base = dict(selection_metric=metric, selected_combo_id=best["combo_id"] if best else None,
                selected_params=best["params"] if best else {}, trials=len(ids), pbo_splits=splits)
    if best is None or found is None:
        notes.append("no successful combination" if best is None else "the combinations' return series differ in length")
        return OverfittingSummary(**base, sessions=0, sharpe=None, sharpe_variance=None, expected_max_sharpe=None,
                                  deflated_sharpe=None, pbo=None, pbo_combinations=None, verdict="n/a: " + notes[0],
                                  notes=notes), np.empty(0)
    matrix = matrix - rf
    column = ids.index(best["combo_id"])
    sharpes = per_session_sharpes(matrix)
    dsr = deflated_sharpe_ratio(matrix[:, column], sharpes)
    pbo = None
    if len(ids) < 2:
        notes.append("PBO needs at least two successful combinations")
    elif splits > len(matrix):
        notes.append(f"PBO needs at least {splits} sessions")
    else:
        pbo = pbo_cscv(matrix, splits)
    root = math.sqrt(ppy)
    summary = dict(sessions=len(matrix), sharpe=_finite(dsr.sharpe * root), sharpe_variance=_finite(dsr.sharpe_variance * ppy),
                   expected_max_sharpe=_finite(dsr.expected_max * root), deflated_sharpe=_finite(dsr.dsr),
                   pbo=pbo.pbo if pbo else None, pbo_combinations=pbo.combinations if pbo else None)
    return (OverfittingSummary(**base, **summary, verdict=verdict(summary, len(ids), metric), notes=notes),
            pbo.logits if pbo else np.empty(0))


def verdict(s: dict, trials: int, metric: str) -> str:
    """One line a reviewer reads first: the selected Sharpe, deflated, and whether it survives at 95%."""
    if s["sharpe"] is None or s["deflated_sharpe"] is None:
        return "n/a: the selected combination's Sharpe ratio is undefined (its returns do not vary)"
    significant = s["deflated_sharpe"] >= SIGNIFICANCE
    line = (f"selected by {metric}: Sharpe {s['sharpe']:.2f}, deflated {s['deflated_sharpe']:.2f} after {trials} trial"
            f"{'s' if trials != 1 else ''} (luck alone would give a best Sharpe of {s['expected_max_sharpe']:.2f}): "
            f"{'significant' if significant else 'not significant'} at {SIGNIFICANCE:.0%}")
    if s["pbo"] is not None:
        line += (f"; PBO {s['pbo']:.2f}: the in-sample best ranks in the bottom half out of sample in {s['pbo']:.0%} of splits"
                 + (" -- likely overfit" if s["pbo"] >= 0.5 else ""))
    return line


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
