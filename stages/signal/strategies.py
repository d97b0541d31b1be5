"""Trend strategies: each maps the indicator set to a signal in {-1, 0, 1} and a strength in [0, 1].

Adding a strategy = one function decorated with `@strategy("name")`. Filters (ADX, volume,
slope) only veto new buy signals (1 -> 0); a sell signal is never filtered away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from schemas.config import StrategyConfig
from stages.common.errors import ConfigError


@dataclass(frozen=True)
class Indicators:
    """Indicator arrays on the (packed) days x symbols grid."""

    close: np.ndarray
    volume: np.ndarray
    macd: np.ndarray
    macd_signal: np.ndarray
    macd_hist: np.ndarray
    kama: np.ndarray
    kama_slope: np.ndarray
    adx: np.ndarray
    volume_ratio: np.ndarray
    atr: np.ndarray


Signal = tuple[np.ndarray, np.ndarray]  # (signal in {-1,0,1} as int8, strength in [0,1] or NaN)
StrategyFn = Callable[[Indicators, StrategyConfig], Signal]
STRATEGIES: dict[str, StrategyFn] = {}


def strategy(name: str) -> Callable[[StrategyFn], StrategyFn]:
    def register(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        return fn

    return register


def _strength(distance: np.ndarray, atr: np.ndarray) -> np.ndarray:
    """How far past its trigger the signal is, in ATRs, capped at 1 (NaN while undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.abs(distance) / atr, 0.0, 1.0)


@strategy("macd")
def macd_strategy(ind: Indicators, cfg: StrategyConfig) -> Signal:
    """Buy while the MACD line is above its signal line, sell while below (0 during warm-up)."""
    hist = ind.macd_hist
    signal = np.where(hist > 0, 1, np.where(hist < 0, -1, 0)).astype(np.int8)
    return signal, _strength(hist, ind.atr)


@strategy("kama")
def kama_strategy(ind: Indicators, cfg: StrategyConfig) -> Signal:
    """Buy when the close is above a rising KAMA, sell when below a falling one, else hold."""
    above = (ind.close > ind.kama) & (ind.kama_slope > 0)
    below = (ind.close < ind.kama) & (ind.kama_slope < 0)
    signal = np.where(above, 1, np.where(below, -1, 0)).astype(np.int8)
    return signal, _strength(ind.close - ind.kama, ind.atr)


@strategy("combo")
def combo_strategy(ind: Indicators, cfg: StrategyConfig) -> Signal:
    """MACD and KAMA together: `both` needs agreement; `either` takes any signal not contradicted."""
    m_sig, m_str = macd_strategy(ind, cfg)
    k_sig, k_str = kama_strategy(ind, cfg)
    if cfg.combo_mode == "both":
        signal = np.where(m_sig == k_sig, m_sig, 0)
    else:
        signal = np.sign(m_sig.astype(np.int16) + k_sig)  # opposite signals cancel to 0
    strength = np.where(np.isnan(m_str) | np.isnan(k_str), np.nan, (m_str + k_str) / 2)
    return signal.astype(np.int8), strength


def apply_filters(signal: np.ndarray, ind: Indicators, cfg: StrategyConfig) -> np.ndarray:
    """Veto buys that fail an enabled filter: ADX >= threshold, volume >= k x average, KAMA slope > 0."""
    allowed = np.ones(signal.shape, dtype=bool)
    f = cfg.filters
    if f.adx_enabled:
        allowed &= ind.adx >= f.adx_threshold
    if f.volume_enabled:
        allowed &= ind.volume_ratio >= f.volume_multiplier
    if f.slope_enabled:
        allowed &= ind.kama_slope > 0
    return np.where((signal == 1) & ~allowed, 0, signal).astype(np.int8)


def trend_signal(ind: Indicators, cfg: StrategyConfig) -> Signal:
    """Run the configured strategy, then its filters."""
    try:
        fn = STRATEGIES[cfg.name]
    except KeyError:
        raise ConfigError(f"key 'strategy.name': unknown strategy {cfg.name!r}; registered: {sorted(STRATEGIES)}") from None
    signal, strength = fn(ind, cfg)
    return apply_filters(signal, ind, cfg), strength
