"""signals_output.csv: the signals as a person reads them -- a wide date x symbol table of target weights.

The long signals_output.parquet (18 columns per (date, symbol)) is what the trading stage reads; as
CSV it was 310 MB at 500 symbols x 10 years, which nobody opens and which cost more to write than
the signals cost to compute. This twin says what the signals *mean* for a book: on every rebalance
day (day 0 of the history and every `scoring.rebalance_frequency` trading days after it), the target
weights the trading rules give a portfolio that holds nothing yet -- the breaker, the walk down the
ranking with the cluster cap, `buy_top_n` and `max_positions`, then inverse-volatility weights with
their caps (the rule functions of stages/trading/rules.py, called exactly as the engine calls them).

Target weights rather than trend signals because the file is then in the V4 weights format
(`date,SPY,TLT,...`, values in [0, 1], rows summing to <= 1) and can be traded as it is with
`trendflow trade --weights signals_output.csv`; the trend signal of every (date, symbol) stays in the
Parquet. Only symbols that get a weight on some day have a column (a missing column means 0).
Differences from the signal-mode backtest are those of a portfolio without history: no inertia bonus
or buffer zone for holdings, no risk exits between rebalances.
"""
from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig


def target_weights_table(signals: pd.DataFrame, config: TrendflowConfig) -> pd.DataFrame:
    """`date` + one column per symbol ever weighted, one row per rebalance day, weights in [0, 1].

    The grids come from the signals frame alone: it has a row, with the close, for every (date,
    symbol) with a price, so its closes are the market's closes (the breaker's input)."""
    from stages.trading.market import circuit_breaker, market_drawdown
    from stages.trading.rules import buy_candidates, inertia_ranking, select_targets, target_weights

    day = signals["date"].to_numpy()  # sorted by date (SignalsSchema), so codes are a running count
    date_codes = np.concatenate([[0], np.cumsum(day[1:] != day[:-1])]) if len(day) else np.zeros(0, dtype=np.int64)
    dates = pd.DatetimeIndex(day[np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))] if len(day) else day)
    symbol_codes, symbols = pd.factorize(signals["symbol"].astype(str), sort=True)
    symbols = np.asarray(symbols, dtype=str)
    freq = config.scoring.rebalance_frequency
    days = np.arange(0, len(dates), freq)

    close = np.full((len(dates), len(symbols)), np.nan)  # every day: the breaker looks back
    close[date_codes, symbol_codes] = signals["close"].to_numpy(dtype=float)
    on_day = date_codes % freq == 0  # the other columns only on rebalance days
    rows, cols = date_codes[on_day] // freq, symbol_codes[on_day]

    def grid(column: str) -> np.ndarray:
        out = np.full((len(days), len(symbols)), np.nan)
        out[rows, cols] = signals[column].to_numpy(dtype=float)[on_day]
        return out

    score, volatility, trend, cluster = (grid(c) for c in ("momentum_score", "volatility", "trend_signal", "cluster"))
    tradable = ~np.isnan(close[days])
    cluster = np.where(np.isnan(cluster), -1, cluster).astype(np.int64)
    breaker_on = circuit_breaker(market_drawdown(close, symbols, config), config)[days]
    nobody = np.zeros(len(symbols), dtype=bool)
    weights = np.zeros((len(days), len(symbols)))
    for row in range(len(days)):
        ranking = inertia_ranking(np.where(tradable[row], score[row], np.nan), nobody, 0.0)
        buyable = buy_candidates(trend[row], tradable[row], bool(breaker_on[row]))
        picked = np.array(select_targets(ranking, nobody, nobody, buyable, cluster[row], config).buy, dtype=np.int64)
        weights[row, picked] = target_weights(volatility[row, picked], cluster[row, picked], config)
    used = np.flatnonzero((weights > 0).any(axis=0))
    table = pd.DataFrame(weights[:, used], columns=symbols[used].tolist())
    table.insert(0, "date", dates[days])
    return table


def weights_csv(table: pd.DataFrame) -> bytes:
    """The table as V4 wrote it: `date,SPY,TLT,...` with an unquoted header (quoted only for a
    symbol that needs it), dates as YYYY-MM-DD, weights as the shortest round-trip decimals."""
    import pyarrow as pa_arrow
    import pyarrow.csv as pa_csv

    arrow = pa_arrow.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.set_column(0, "date", arrow.column(0).cast(pa_arrow.date32()))
    plain = all(re.fullmatch(r'[^",\r\n]+', name) for name in arrow.column_names)
    sink = io.BytesIO()
    pa_csv.write_csv(arrow, sink, write_options=pa_csv.WriteOptions(
        quoting_style="needed", quoting_header="none" if plain else "needed"))
    return sink.getvalue()
