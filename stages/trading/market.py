"""The market as the engine sees it: per-day arrays over symbols, built once from the artifacts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.common.errors import DataError
from stages.common.panel import to_panel

SIGNAL_FIELDS = ("trend_signal", "signal_strength", "atr", "volatility", "momentum_score", "cluster")


@dataclass(frozen=True)
class Market:
    """(dates x symbols) arrays; NaN where a symbol did not trade. `breaker_on[t]` uses data <= t."""

    dates: pd.DatetimeIndex
    symbols: np.ndarray
    open: np.ndarray
    close: np.ndarray
    tradable: np.ndarray
    trend_signal: np.ndarray
    signal_strength: np.ndarray
    atr: np.ndarray
    volatility: np.ndarray
    momentum_score: np.ndarray
    cluster: np.ndarray
    breaker_on: np.ndarray
    market_drawdown: np.ndarray

    def index_of(self, day: pd.Timestamp) -> int:
        pos = self.dates.get_indexer([pd.Timestamp(day)])[0]
        if pos < 0:
            raise DataError(f"date {pd.Timestamp(day).date()} is not a trading day in the signals (range "
                            f"{self.dates[0].date()}..{self.dates[-1].date()})")
        return int(pos)


def build_market(prices: pd.DataFrame, signals: pd.DataFrame | None, config: TrendflowConfig) -> Market:
    """Align prices and signals on one grid and compute the market circuit-breaker series."""
    panel = to_panel(prices)
    shape = panel.close.shape
    grids = {name: np.full(shape, np.nan) for name in SIGNAL_FIELDS}
    if signals is not None:
        rows = panel.dates.get_indexer(signals["date"])
        cols = panel.symbols.get_indexer(signals["symbol"])
        if (rows < 0).any() or (cols < 0).any():
            bad = signals.loc[(rows < 0) | (cols < 0), ["date", "symbol"]].head(3).to_dict("records")
            raise DataError(f"signals_output.parquet has rows with no price in prices.parquet, e.g. {bad}: "
                            "the two files come from different runs -- rerun the signal stage")
        for name in SIGNAL_FIELDS:
            grids[name][rows, cols] = signals[name].to_numpy(dtype=float)
    drawdown = market_drawdown(panel.close, panel.symbols, config)
    return Market(
        dates=panel.dates, symbols=panel.symbols.to_numpy().astype(str), open=panel.open, close=panel.close,
        tradable=panel.tradable, breaker_on=drawdown < config.risk.circuit_breaker_threshold,
        market_drawdown=drawdown, **grids,
    )


def market_drawdown(close: np.ndarray, symbols: pd.Index, config: TrendflowConfig) -> np.ndarray:
    """Drawdown of the market index from its peak over the last `circuit_breaker_lookback` days.

    The index is the configured symbol's close, or else an equal-weight index of the universe
    (mean of the day's returns over symbols that traded on both days). Uses data up to t only.
    """
    symbol = config.data.market_index_symbol
    if symbol is not None:
        if symbol not in symbols:
            raise DataError(f"key 'data.market_index_symbol': {symbol!r} is not in prices.parquet")
        level = pd.Series(close[:, symbols.get_loc(symbol)]).ffill().to_numpy()
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            prev = pd.DataFrame(close).ffill().shift().to_numpy()
            rets = close / prev - 1.0
        rets = np.where(np.isfinite(rets), rets, np.nan)
        counts = (~np.isnan(rets)).sum(axis=1)
        mean = np.where(counts > 0, np.nansum(rets, axis=1) / np.maximum(counts, 1), 0.0)
        level = np.cumprod(1.0 + mean)
    peak = pd.Series(level).rolling(config.risk.circuit_breaker_lookback, min_periods=1).max().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(level / peak - 1.0, nan=0.0)
