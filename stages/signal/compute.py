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
    packed, packing = compute_packed_signals(panel, config)
    frame = _to_long(packed, packing, panel, config)
    log.debug("compute_signals: %d rows in %.3fs", len(frame), time.perf_counter() - t0)
    return frame


def compute_packed_signals(panel: Panel, config: TrendflowConfig) -> tuple[dict[str, np.ndarray], ind.Packing]:
    """Every per-symbol series (indicators, trend signal, volatility, momentum score, log return)
    on the packed grid: each symbol's own trading days from row 0 (see `indicators.pack`)."""
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
        "close": close, "trend_signal": signal, "signal_strength": strength, "macd": macd_line, "macd_signal": macd_sig,
        "macd_hist": macd_hist, "kama": kama, "kama_slope": indicators.kama_slope, "adx": indicators.adx,
        "volume_ratio": volume_ratio, "atr": indicators.atr, "volatility": volatility, "momentum_score": score,
        "log_return": log_ret,
    }
    return packed, packing


def _calendar_columns(packed: dict[str, np.ndarray], packing: ind.Packing, config: TrendflowConfig) -> dict[str, np.ndarray]:
    """The columns that compare symbols on the same date, computed on the calendar grid: the rank
    of the momentum score among that day's symbols and the correlation cluster."""
    rank = rank_by_date(ind.unpack(packed["momentum_score"], packing))
    c = config.clustering
    cluster = rolling_clusters(ind.unpack(packed["log_return"], packing), c.correlation_window, c.update_frequency,
                               c.distance_threshold, c.linkage)
    return {"rank": rank, "cluster": cluster}


_FLOAT_COLUMNS = [name for name in SIGNAL_COLUMNS[2:] if name not in ("trend_signal", "cluster", "eligible")]


def _to_long(packed: dict[str, np.ndarray], packing: ind.Packing, panel: Panel, config: TrendflowConfig) -> pd.DataFrame:
    """One row per (date, symbol) traded, sorted by date then symbol, gathered straight from the
    packed grid (a traded cell's packed row = how many days that symbol had traded up to then).

    The float columns are gathered into one 2-D block that becomes the frame's single float block,
    so pandas never has to copy and consolidate a dozen separate columns."""
    tradable = panel.tradable
    rows, cols = np.nonzero(tradable)
    n_sym = tradable.shape[1]
    calendar_flat = rows * n_sym + cols
    packed_row = np.cumsum(tradable, axis=0, dtype=np.int64)[rows, cols] - 1
    packed_flat = packed_row * n_sym + cols
    by_date = _calendar_columns(packed, packing, config)

    block = np.empty((len(_FLOAT_COLUMNS), len(rows)))
    for i, name in enumerate(_FLOAT_COLUMNS):
        block[i] = by_date[name].ravel()[calendar_flat] if name in by_date else packed[name].ravel()[packed_flat]
    frame = pd.DataFrame(block.T, columns=_FLOAT_COLUMNS, copy=False)
    frame.insert(0, "date", panel.dates[rows])
    frame.insert(1, "symbol", panel.symbols.astype("str").take(cols))
    frame.insert(3, "trend_signal", packed["trend_signal"].ravel()[packed_flat].astype(np.int64))
    frame["cluster"] = by_date["cluster"].ravel()[calendar_flat].astype(np.int64)
    frame["eligible"] = ~np.isnan(frame["momentum_score"].to_numpy())
    return frame
