"""compute_signals: prices (long) -> one signals row per (date, symbol) traded. Pure, no I/O."""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.common.panel import Panel, to_panel
from stages.signal import indicators as ind
from stages.signal.clustering import rolling_clusters
from stages.signal.momentum import momentum_score, rank_by_date
from stages.signal.strategies import Indicators, trend_signal

log = logging.getLogger(__name__)

SIGNAL_COLUMNS = [
    "date", "symbol", "close", "trend_signal", "signal_strength", "macd", "macd_signal", "macd_hist",
    "kama", "kama_slope", "adx", "volume_ratio", "atr", "volatility", "momentum_score", "rank", "cluster", "eligible",
]


def compute_signals(prices: pd.DataFrame, config: TrendflowConfig) -> pd.DataFrame:
    """Trend signal, indicators, momentum score/rank and cluster for every (date, symbol) with a price.

    Every value on day t is computed from prices on days <= t only.
    """
    t0 = time.perf_counter()
    panel = to_panel(prices)
    wide = compute_signal_arrays(panel, config)
    frame = _to_long(wide, panel)
    log.debug("compute_signals: %d rows in %.3fs", len(frame), time.perf_counter() - t0)
    return frame


def compute_signal_arrays(panel: Panel, config: TrendflowConfig) -> dict[str, np.ndarray]:
    """All signal columns as (dates x symbols) arrays on the calendar grid (NaN where no trade)."""
    s = config.strategy
    packing = ind.packing_for(panel.tradable)
    high, low, close, volume = (ind.pack(getattr(panel, f), packing) for f in ("high", "low", "close", "volume"))

    macd_line, macd_sig, macd_hist = ind.macd(close, s.macd.fast, s.macd.slow, s.macd.signal)
    kama = ind.kama(close, s.kama.er_window, s.kama.fast, s.kama.slow)
    with np.errstate(invalid="ignore", divide="ignore"):
        volume_ratio = volume / ind.rolling_mean(volume, s.filters.volume_window)
    indicators = Indicators(
        close=close, volume=volume, macd=macd_line, macd_signal=macd_sig, macd_hist=macd_hist, kama=kama,
        kama_slope=ind.slope(kama, s.kama.slope_window), adx=ind.adx(high, low, close, s.filters.adx_window),
        volume_ratio=volume_ratio, atr=ind.atr(high, low, close, config.risk.atr_window),
    )
    signal, strength = trend_signal(indicators, s)

    log_ret = ind.log_returns(close)
    sizing = config.position_sizing
    if sizing.volatility_method == "ewma":
        volatility = ind.ewma_volatility(log_ret, sizing.ewma_lambda, config.reporting.periods_per_year, sizing.volatility_window)
    else:
        volatility = ind.rolling_std_volatility(log_ret, sizing.volatility_window, config.reporting.periods_per_year)
    weights = {int(w): v for w, v in config.scoring.momentum_weights.items()}
    score = momentum_score(close, log_ret, weights)

    packed = {
        "trend_signal": signal.astype(float), "signal_strength": strength, "macd": macd_line, "macd_signal": macd_sig,
        "macd_hist": macd_hist, "kama": kama, "kama_slope": indicators.kama_slope, "adx": indicators.adx,
        "volume_ratio": volume_ratio, "atr": indicators.atr, "volatility": volatility, "momentum_score": score,
        "log_return": log_ret,
    }
    wide = {name: ind.unpack(values, packing) for name, values in packed.items()}
    wide["close"] = panel.close
    wide["rank"] = rank_by_date(wide["momentum_score"])
    c = config.clustering
    wide["cluster"] = rolling_clusters(wide.pop("log_return"), c.correlation_window, c.update_frequency,
                                       c.distance_threshold, c.linkage).astype(float)
    return wide


def _to_long(wide: dict[str, np.ndarray], panel: Panel) -> pd.DataFrame:
    rows, cols = np.nonzero(panel.tradable)
    data = {"date": panel.dates[rows], "symbol": panel.symbols.to_numpy()[cols]}
    for name in SIGNAL_COLUMNS[2:]:
        if name == "eligible":
            continue
        data[name] = wide[name][rows, cols]
    frame = pd.DataFrame(data)
    frame["trend_signal"] = frame["trend_signal"].fillna(0).astype(np.int64)
    frame["cluster"] = frame["cluster"].astype(np.int64)
    frame["eligible"] = frame["momentum_score"].notna()
    frame["symbol"] = frame["symbol"].astype(str)
    return frame[SIGNAL_COLUMNS]
