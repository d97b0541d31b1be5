"""Overfitting controls of a sweep: the deflated Sharpe ratio (Bailey & Lopez de Prado 2014) against the
paper's worked example and PSR, PBO by CSCV (Bailey, Borwein, Lopez de Prado & Zhu 2015) against a plain
loop over the splits, and both on synthetic sweeps with known answers."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from stages.reporting.metrics import probabilistic_sharpe_ratio
from stages.sweep.overfitting import (deflated_sharpe_ratio, expected_max_sharpe, moments, pbo_cscv, per_session_sharpes,
                                      psr_from_moments)


def test_dsr_reproduces_the_papers_worked_example():
    """Bailey & Lopez de Prado (2014), section 'A numerical example': 100 trials whose annualised Sharpes
    have variance 1/2, the best at an annualised 2.5 over 5 years of daily returns (1250), skew -3,
    kurtosis 10: E[max SR] ~ 1.79 annualised and DSR ~ 0.90 -- significant at 90%, not at 95%."""
    days = 250
    sr0 = expected_max_sharpe(100, 0.5 / days)
    assert sr0 * math.sqrt(days) == pytest.approx(1.7894, abs=1e-3)
    dsr = psr_from_moments(2.5 / math.sqrt(days), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_expected_max_sharpe_matches_the_maximum_of_simulated_null_trials():
    rng = np.random.default_rng(1)
    n, variance = 50, 0.04
    maxima = rng.normal(0.0, math.sqrt(variance), (20000, n)).max(axis=1)
    assert expected_max_sharpe(n, variance) == pytest.approx(maxima.mean(), rel=0.02)
    assert expected_max_sharpe(1, variance) == 0.0


def test_dsr_of_a_series_is_its_psr_against_the_expected_maximum():
    rng = np.random.default_rng(2)
    r = pd.Series(rng.standard_t(5, 1000) * 0.01 + 0.0008, index=pd.bdate_range("2020-01-01", periods=1000))
    sr, g3, g4 = moments(r.to_numpy())
    assert (sr, g3, g4) == pytest.approx((r.mean() / r.std(), r.skew(), r.kurt() + 3), rel=1e-9)
    trials = np.r_[sr, rng.normal(0, 0.03, 29)]
    result = deflated_sharpe_ratio(r.to_numpy(), trials)
    assert result.trials == 30 and result.sharpe_variance == pytest.approx(trials.var(ddof=1), rel=1e-12)
    assert result.dsr == pytest.approx(probabilistic_sharpe_ratio(r, 0.0, result.expected_max), rel=1e-9)
    assert result.dsr < probabilistic_sharpe_ratio(r, 0.0)  # deflating never helps


def _pbo_by_loop(m: np.ndarray, splits: int) -> float:
    """PBO as the paper writes it: one split at a time, ranks by sorting."""
    blocks = np.array_split(np.arange(len(m)), splits)
    overfit = total = 0
    for train in itertools.combinations(range(splits), splits // 2):
        rows_in = np.concatenate([blocks[i] for i in train])
        rows_out = np.concatenate([blocks[i] for i in range(splits) if i not in train])
        sharpe = lambda x: x.mean(axis=0) / x.std(axis=0, ddof=1)  # noqa: E731
        best = int(np.argmax(sharpe(m[rows_in])))
        oos = sharpe(m[rows_out])
        rank = 1 + int(np.sum(oos < oos[best]))
        w = rank / (m.shape[1] + 1)
        overfit += math.log(w / (1 - w)) <= 0
        total += 1
    return overfit / total


def test_pbo_equals_a_plain_loop_over_the_splits():
    rng = np.random.default_rng(3)
    m = rng.normal(0.0002, 0.01, (403, 7))  # 403 sessions: blocks of unequal size
    m[:, 2] += 0.0004
    for splits in (4, 8):
        assert pbo_cscv(m, splits).pbo == pytest.approx(_pbo_by_loop(m, splits), abs=1e-12)
    result = pbo_cscv(m, 8)
    assert result.combinations == math.comb(8, 4) == len(result.logits)


def test_pure_noise_strategies_give_pbo_near_half_and_a_low_dsr():
    """One noise sweep's PBO scatters widely around 1/2 (the in-sample best's out-of-sample rank is a coin
    toss): averaged over 40 independent noise sweeps it is 1/2 within sampling error (~0.035)."""
    rng = np.random.default_rng(4)
    sweeps = [rng.normal(0.0, 0.01, (600, 10)) for _ in range(40)]
    assert 0.4 <= np.mean([pbo_cscv(m, 16).pbo for m in sweeps]) <= 0.6
    m = rng.normal(0.0, 0.01, (2000, 40))
    sharpes = per_session_sharpes(m)
    best = int(np.nanargmax(sharpes))
    dsr = deflated_sharpe_ratio(m[:, best], sharpes)
    assert dsr.dsr < 0.5 < probabilistic_sharpe_ratio(pd.Series(m[:, best]), 0.0)  # looks good alone, not after 40 tries


def test_one_planted_strong_strategy_gives_pbo_near_zero_and_a_high_dsr():
    rng = np.random.default_rng(5)
    m = rng.normal(0.0, 0.01, (2000, 40))
    m[:, 17] += 0.0015  # a Sharpe of ~2.4 a year among noise
    result = pbo_cscv(m, 16)
    assert result.pbo < 0.02
    sharpes = per_session_sharpes(m)
    assert int(np.nanargmax(sharpes)) == 17
    assert deflated_sharpe_ratio(m[:, 17], sharpes).dsr > 0.95


def test_pbo_refuses_odd_or_too_many_splits():
    m = np.zeros((10, 3))
    for bad in (3, 0, 12):
        with pytest.raises(ValueError, match="even number of splits"):
            pbo_cscv(m, bad)
    with pytest.raises(ValueError, match="two combinations"):
        pbo_cscv(np.zeros((10, 1)), 4)
