"""The exchange's per-symbol facts and the corporate actions, read from files into arrays over the
universe's symbols (market.py puts them beside the prices; rules.py decides with them).

- config/cn_symbols.csv (symbol, price_limit, settlement, note), overridden row by row by
  `market.symbol_table`: a symbol's daily price band and its settlement (T+0 / T+1). Symbols not
  in the table follow the code rules of `board_price_limit` and `settlement_class` (rules.py).
- `data.corporate_actions`: a CSV ex_date, symbol, cash_dividend, split_ratio (per share held at
  the close before the ex-date) for raw prices.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.config import TrendflowConfig
from stages.common.config import PROJECT_ROOT
from stages.common.corporate_actions import read_corporate_actions, read_keyed_csv
from stages.common.errors import DataError
from stages.trading.rules import board_price_limit, settlement_class

SYMBOL_TABLE = PROJECT_ROOT / "config" / "cn_symbols.csv"
TABLE_COLUMNS = ("symbol", "price_limit", "settlement")


def exchange_code(symbol: str) -> str:
    """The exchange code of a symbol file name: '159915.SZ' -> '159915' (the table's key)."""
    return str(symbol).split(".")[0]


def read_symbol_table(path: Path) -> pd.DataFrame:
    """A symbol table, checked: price_limit in (0, 1), settlement T+0 or T+1, one row per symbol."""
    table = read_keyed_csv(path, "market.symbol_table", TABLE_COLUMNS)
    limit = pd.to_numeric(table["price_limit"], errors="coerce")
    bad = table[~((limit > 0) & (limit < 1)) | ~table["settlement"].isin(["T+0", "T+1"]) | table["symbol"].duplicated()]
    if len(bad):
        raise DataError(f"{path}: bad rows (price_limit must be a fraction in (0, 1), settlement T+0 or T+1, symbols "
                        f"once each), first: {bad.head(3).to_dict('records')}")
    return table.assign(price_limit=limit).set_index("symbol")[["price_limit", "settlement"]]


@lru_cache(maxsize=4)
def _read_table_once(path: Path, mtime_ns: int) -> pd.DataFrame:
    """The shipped table, read once per version of the file (a per-symbol band lookup reads it often)."""
    return read_symbol_table(path)


def symbol_table(override: str | Path | None = None) -> pd.DataFrame:
    """config/cn_symbols.csv, with the rows of `override` (`market.symbol_table`) in place of its own."""
    table = _read_table_once(SYMBOL_TABLE, SYMBOL_TABLE.stat().st_mtime_ns)
    if override is not None:
        extra = read_symbol_table(Path(override))
        table = pd.concat([table.drop(index=extra.index, errors="ignore"), extra])
    return table


def board_bands(codes: list[str], table: pd.DataFrame | None = None) -> np.ndarray:
    """Per exchange code, its daily price band: the symbol table's price_limit where it lists the code
    (ETFs whose band the code cannot tell, e.g. ChiNext ETFs on 159xxx), else `board_price_limit`.
    The one answer for the trading rules, the data quality gate and the demo universe."""
    listed = (symbol_table() if table is None else table).reindex(codes)
    band = np.array([board_price_limit(c) for c in codes], dtype=float)
    return np.where(listed["price_limit"].notna(), listed["price_limit"].to_numpy(dtype=float), band)


def symbol_rules(symbols: np.ndarray, config: TrendflowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per symbol: the daily price band (NaN = no limit, when `market.price_limits` is off) and
    whether it settles T+1. The table (config/cn_symbols.csv, then `market.symbol_table`) wins over
    the code rules."""
    m = config.market
    if not m.price_limits and m.settlement != "T+1":
        return np.full(len(symbols), np.nan), np.zeros(len(symbols), dtype=bool)
    table = symbol_table(m.symbol_table)
    codes = [exchange_code(s) for s in symbols]
    listed = table.reindex(codes)
    band = board_bands(codes, table)
    t1 = np.array([settlement_class(c, m.settlement) == "T+1" for c in codes], dtype=bool)
    t1 = np.where(listed["settlement"].notna(), listed["settlement"].eq("T+1"), t1)
    return (band if m.price_limits else np.full(len(symbols), np.nan)), t1.astype(bool)


def load_corporate_actions(path: str | Path, dates: pd.DatetimeIndex, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dates x symbols) cash dividend per share and split ratio (1 = none) from a corporate_actions
    CSV. An action on a day without a session in the prices applies at the next session; symbols
    outside the universe and actions outside the dates are ignored."""
    actions = read_corporate_actions(path)
    dividends = np.zeros((len(dates), len(symbols)))
    splits = np.ones((len(dates), len(symbols)))
    col = pd.Index(symbols).get_indexer(actions["symbol"])
    row = dates.searchsorted(actions["ex_date"].to_numpy())
    keep = (col >= 0) & (row < len(dates)) & (actions["ex_date"] >= dates[0]).to_numpy()
    np.add.at(dividends, (row[keep], col[keep]), actions["cash_dividend"].to_numpy()[keep])
    np.multiply.at(splits, (row[keep], col[keep]), actions["split_ratio"].to_numpy()[keep])
    return dividends, splits
