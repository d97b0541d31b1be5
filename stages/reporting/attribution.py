"""P&L attribution from fills and marks: what each symbol and each cluster earned, day by day.

A symbol's P&L on session t = its market value at the close of t - at the close of t-1 (0 when not held)
+ sale proceeds on t (quantity x fill price - commission) - purchase costs on t (quantity x fill price +
commission). Fill prices include slippage, so costs are inside. Summed over every symbol and session this is
(final positions value) + (final cash - starting cash) = final equity - starting capital: the total P&L, exactly
(tested to 1e-8). A day's P&L goes to the cluster the symbol was in at that close, or at its last close held
(for the day it is sold). Vectorised: one long frame of (date, symbol, amount) rows, one groupby.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

NO_CLUSTER = -1


def daily_pnl(trades: pd.DataFrame, positions: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Columns date, symbol, cluster, pnl: one row per (session, symbol) with a mark or a fill."""
    held = positions[["date", "symbol", "market_value", "cluster"]]
    at = sessions.searchsorted(held["date"].to_numpy())
    later = at + 1 < len(sessions)
    marks_in = pd.DataFrame({"date": held["date"].to_numpy(), "symbol": held["symbol"].to_numpy(),
                             "pnl": held["market_value"].to_numpy(dtype=float)})
    marks_out = pd.DataFrame({"date": sessions[np.minimum(at + 1, len(sessions) - 1)][later], "symbol": held["symbol"].to_numpy()[later],
                              "pnl": -held["market_value"].to_numpy(dtype=float)[later]})
    value = trades["quantity"].to_numpy(dtype=float) * trades["price"].to_numpy(dtype=float)
    commission = trades["commission"].to_numpy(dtype=float)
    flows = pd.DataFrame({"date": trades["date"].to_numpy(), "symbol": trades["symbol"].to_numpy(),
                          "pnl": np.where(trades["side"].to_numpy() == "BUY", -(value + commission), value - commission)})
    rows = pd.concat([marks_in, marks_out, flows], ignore_index=True)
    rows["date"] = rows["date"].astype("datetime64[ns]")
    pnl = rows.groupby(["symbol", "date"], sort=True)["pnl"].sum().reset_index()
    clusters = held[["date", "symbol", "cluster"]].astype({"date": "datetime64[ns]"}).sort_values("date", kind="stable")
    pnl = pd.merge_asof(pnl.sort_values("date", kind="stable"), clusters, on="date", by="symbol", direction="backward")
    pnl["cluster"] = pnl["cluster"].fillna(NO_CLUSTER).astype(int)
    return pnl.sort_values(["date", "symbol"], kind="stable").reset_index(drop=True)[["date", "symbol", "cluster", "pnl"]]


def by_symbol(pnl: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    """Per symbol: total P&L (marks included), share of the total, and its closed round trips (count,
    win rate, mean return), largest P&L first."""
    total = pnl.groupby("symbol", sort=True)["pnl"].sum()
    trades = trips.assign(win=trips["pnl"] > 0).groupby("symbol", sort=True).agg(
        trades=("pnl", "size"), wins=("win", "sum"), avg_return=("return", "mean"))
    frame = pd.DataFrame({"pnl": total}).join(trades, how="left")
    frame["trades"] = frame["trades"].fillna(0).astype(int)
    frame["win_rate"] = frame["wins"] / frame["trades"].where(frame["trades"] > 0)
    frame["share"] = frame["pnl"] / abs(float(total.sum())) if float(total.sum()) != 0 else np.nan
    frame = frame.drop(columns="wins").rename_axis("symbol").reset_index()
    return frame.sort_values(["pnl", "symbol"], ascending=[False, True], kind="stable").reset_index(drop=True)


def by_cluster(pnl: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: total P&L and the number of symbols that earned in it."""
    grouped = pnl.groupby("cluster", sort=True)
    return pd.DataFrame({"cluster": list(grouped.groups), "pnl": grouped["pnl"].sum().to_numpy(),
                         "symbols": grouped["symbol"].nunique().to_numpy()})


def holdings_weights(positions: pd.DataFrame, sessions: pd.DatetimeIndex, top: int = 8) -> pd.DataFrame:
    """Weights (share of equity) at each session of the `top` symbols by mean weight over the history, then
    'other' (the rest) -- the bands of the holdings-over-time chart; cash is 1 - the row sum."""
    codes, symbols = pd.factorize(positions["symbol"], sort=True)
    rows = sessions.searchsorted(positions["date"].to_numpy())
    wide = np.zeros((len(sessions), len(symbols)))
    np.add.at(wide, (rows, codes), positions["weight"].to_numpy(dtype=float))  # a dense date x symbol block, no pivot
    order = np.argsort(-wide.mean(axis=0), kind="stable")
    keep = order[:top]
    frame = pd.DataFrame(wide[:, keep], index=sessions, columns=list(symbols[keep]))
    if len(symbols) > top:
        frame["other"] = wide.sum(axis=1) - wide[:, keep].sum(axis=1)
    return frame
