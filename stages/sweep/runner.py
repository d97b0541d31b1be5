"""Evaluate combinations in memory: signals once per signal setting, trading + metrics per combination;
walk-forward windows; the resume store. Pure Python -- the Prefect/Dask layer is in flows/sweep.py."""
from __future__ import annotations

import inspect
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from schemas.sweep import SWEEP_METRICS
from stages.common.artifacts import atomic_write_bytes
from stages.common.errors import ConfigError
from stages.reporting.metrics import compute_metrics, strategy_returns
from stages.trading.backtest import BacktestResult, fold
from stages.trading.market import Day, Market, build_market, market_settings

# Metrics that can pick the best combination, with their direction (+1: higher is better).
SELECTION_METRICS = {"sharpe": 1, "sortino": 1, "calmar": 1, "cagr": 1, "total_return": 1, "max_drawdown": 1,
                     "annual_volatility": -1, "annual_turnover": -1, "total_costs": -1}

_MARKETS: OrderedDict[tuple, tuple[pd.DataFrame, pd.DataFrame, Market]] = OrderedDict()


@dataclass(frozen=True)
class SharedDaysMarket(Market):
    """A Market whose one-day views are built once and handed to every combination that trades it
    (building a day's view -- a Timestamp and a dozen row views -- was a tenth of each backtest)."""

    days: tuple[Day, ...] = ()

    @classmethod
    def of(cls, market: Market) -> "SharedDaysMarket":
        return cls(**{f.name: getattr(market, f.name) for f in fields(Market)},
                   days=tuple(market.day(t) for t in range(len(market.dates))))

    def day(self, t: int) -> Day:
        return self.days[t]


def market_for(prices: pd.DataFrame, signals: pd.DataFrame, config: TrendflowConfig) -> Market:
    """build_market, memoised: every combination of a signal group trades the same aligned arrays, and
    build_market reads only `market_settings` from the config. The cache holds the frames
    themselves, so the id()s in its key stay unique while an entry lives."""
    key = (id(prices), id(signals), *market_settings(config))
    hit = _MARKETS.get(key)
    if hit is not None and hit[0] is prices and hit[1] is signals:
        _MARKETS.move_to_end(key)
        return hit[2]
    market = SharedDaysMarket.of(build_market(prices, signals, config))
    _MARKETS[key] = (prices, signals, market)
    while len(_MARKETS) > 8:
        _MARKETS.popitem(last=False)
    return market


def backtest(prices: pd.DataFrame, signals: pd.DataFrame, config: TrendflowConfig, start: int = 0,
             end: int | None = None) -> BacktestResult:
    """Trading alone over days [start, end) starting from cash (signals, and so indicators, may use
    prices before `start`: each day's signal uses closes up to that day only)."""
    return fold(market_for(prices, signals, config), config, start=start, end=end)


def metrics_of(result: BacktestResult, config: TrendflowConfig) -> dict[str, float]:
    """The sweep's metrics, computed exactly as the reporting stage computes them for `trendflow run`."""
    if "config" in inspect.signature(compute_metrics).parameters:
        m = compute_metrics(result.equity_curve, result.trade_log, config=config)
    else:  # the older signature
        m = compute_metrics(result.equity_curve, result.trade_log, initial_cash=config.execution.initial_cash,
                            risk_free_rate=config.reporting.risk_free_rate, periods_per_year=config.reporting.periods_per_year)
    return {k: (float(m[k]) if m[k] is not None else math.nan) for k in SWEEP_METRICS}


def selection_score(metrics: dict[str, float], metric: str) -> float:
    """The value maximised when picking a combination (NaN ranks last)."""
    value = metrics[metric] * SELECTION_METRICS[metric]
    return -math.inf if value is None or not np.isfinite(value) else float(value)


def evaluate(prices: pd.DataFrame, signals: pd.DataFrame, config: TrendflowConfig, start: int = 0,
             end: int | None = None) -> dict:
    """The sweep's metrics of one run; a full-history run (start 0, no end) also gives its daily returns
    under "returns" (the deflated Sharpe ratio and PBO need every combination's return series)."""
    result = backtest(prices, signals, config, start, end)
    out: dict = metrics_of(result, config)
    if start == 0 and end is None:
        out["returns"] = strategy_returns(result.equity_curve).tolist()
    return out


# --------------------------------------------------------------------------- walk-forward
@dataclass(frozen=True)
class Window:
    index: int
    train: tuple[int, int]  # [start, end) day indices
    test: tuple[int, int]


_SPAN = re.compile(r"^(\d+)([ymd])$")


def _months(text: str, key: str) -> int | None:
    match = _SPAN.match(text.strip())
    if not match:
        raise ConfigError(f"--walk-forward {key}={text!r}: use a number and a unit y, m or d (e.g. 3y, 6m, 90d)")
    n, unit = int(match.group(1)), match.group(2)
    if n <= 0:
        raise ConfigError(f"--walk-forward {key} must be positive")
    return n * 12 if unit == "y" else n if unit == "m" else None


def parse_walk_forward(spec: str) -> dict[str, str]:
    parts = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
    if set(parts) != {"train", "test", "step"}:
        raise ConfigError(f"--walk-forward {spec!r}: expected train=..,test=..,step=.. (e.g. train=3y,test=1y,step=1y)")
    for key, value in parts.items():
        _months(value, key)
    return parts


def _offset(text: str) -> pd.DateOffset:
    match = _SPAN.match(text.strip())
    n, unit = int(match.group(1)), match.group(2)
    return pd.DateOffset(years=n) if unit == "y" else pd.DateOffset(months=n) if unit == "m" else pd.DateOffset(days=n)


def walk_forward_windows(dates: pd.DatetimeIndex, spec: str) -> list[Window]:
    """Calendar windows: train [s, s+train), test [s+train, s+train+test), s += step. A test span never
    touches its training span; the last test span may be cut by the end of the data."""
    parts = parse_walk_forward(spec)
    train, test, step = (_offset(parts[k]) for k in ("train", "test", "step"))
    windows: list[Window] = []
    start = dates[0]
    while True:
        train_end = start + train
        test_end = train_end + test
        tr = (int(dates.searchsorted(start)), int(dates.searchsorted(train_end)))
        te = (tr[1], int(dates.searchsorted(test_end)))
        if te[0] >= len(dates) or te[1] - te[0] < 5:
            break
        windows.append(Window(len(windows), tr, te))
        start = start + step
    if not windows:
        raise ConfigError(f"--walk-forward {spec}: the data ({dates[0].date()}..{dates[-1].date()}) is too short for one window")
    return windows


def stitch(curves: list[tuple[int, pd.DataFrame]], initial: float) -> pd.DataFrame:
    """Chain test-span equity curves: each starts where the previous one ended."""
    level = initial
    parts = []
    for window, curve in curves:
        growth = curve["equity"].to_numpy() / curve["equity"].iloc[0] * (1 + curve["daily_return"].iloc[0])
        parts.append(pd.DataFrame({"date": curve["date"].to_numpy(), "equity": level * growth, "window": window}))
        level = float(parts[-1]["equity"].iloc[-1])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["date", "equity", "window"])


# --------------------------------------------------------------------------- resume
class ResumeStore:
    """One small JSON file per finished combination under <out>/sweep_state/<data fingerprint>/, written
    atomically as each finishes: a rerun after an interruption skips them."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder / fingerprint[:16]
        self.folder.mkdir(parents=True, exist_ok=True)

    def done(self) -> dict[str, dict]:
        out = {}
        for path in sorted(self.folder.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                continue  # a damaged record is simply recomputed
        return out

    def save(self, row: dict) -> None:
        text = json.dumps(row, sort_keys=True, default=_jsonable)
        atomic_write_bytes(self.folder / f"{row['combo_id']}.json", text.encode())


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value))
