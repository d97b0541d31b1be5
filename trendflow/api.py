"""`run_daily_signal` and `load_portfolio`, with the older signal_pipeline's signatures and result.

Both run trendflow's own stages (the signal stage, then one trading step: exactly what
`trendflow daily` runs, without Prefect). Where the older design differs:
- the prices come from `data` (a folder of per-symbol files or one long file, as `--data`), else
  config `data.source`, else the demo universe generated into the output folder;
- `market_data_path` keeps its older meaning, a price file of a market index for the circuit breaker
  only (= `--market-data FILE` = `risk.market_data`);
- a damaged or mismatched snapshot is an error, never a silent empty portfolio. Without a snapshot the
  run resumes from `portfolio_<previous session>.json` in `output_dir` when there is one, and starts
  from cash otherwise (the older design's "initialize empty portfolio"), saying so in the log.
"""
from __future__ import annotations

import json
import logging
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.trading import SNAPSHOT_VERSION, PortfolioSnapshot
from stages.common.errors import SnapshotError

log = logging.getLogger("trendflow.api")


def _config(config: str | Path | TrendflowConfig | None) -> TrendflowConfig:
    from stages.common.config import load_config

    return config if isinstance(config, TrendflowConfig) else load_config(config)


def load_portfolio(path: str | Path, config: str | Path | TrendflowConfig | None = None,
                   prices: pd.DataFrame | None = None) -> PortfolioSnapshot:
    """A portfolio snapshot in either shape: trendflow's `portfolio_D.json` (checked as `trendflow daily`
    checks it), or the older `{as_of_date, holdings: {sym: {shares, cost_basis, entry_date}}, cash,
    total_value, cluster_assignments, metadata}`, converted (cluster assignments kept).

    The older shape does not hold what trendflow's engine carries, so the conversion fills it in:
    entry price = cost_basis; last close = the close on as_of_date in `prices` (long date/symbol/close),
    else `value / shares`, else cost_basis; highest close since entry from `prices` when given, else the
    last close; the ATR stop not set yet (set at the next close); days held = sessions in `prices` from
    entry to as_of_date (else 0); no pending orders; trading day index 0 (a rebalance day); tagged
    with `config`'s trading settings (default config) so a run under that config resumes from it.
    `trendflow daily --portfolio` and `trendflow trade --portfolio` take either shape the same way."""
    from stages.trading.legacy import _raw, from_older, is_older_snapshot
    from stages.trading.snapshot import read_snapshot

    path = Path(path)
    raw = _raw(path)
    if is_older_snapshot(raw):
        return from_older(raw, path, _config(config), prices)
    if isinstance(raw, dict) and raw.get("version") == SNAPSHOT_VERSION:
        return read_snapshot(path, date.fromisoformat(str(raw.get("as_of_date"))))
    raise SnapshotError(f"portfolio snapshot {path} is neither a trendflow snapshot (version {SNAPSHOT_VERSION}) "
                        "nor an older one ({as_of_date, holdings, cash, ...})")


def run_daily_signal(config_path: str | Path | None, as_of_date: str | date | None = None,
                     portfolio_snapshot: str | Path | None = None, market_data_path: str | Path | None = None,
                     output_dir: str | Path | None = None, dry_run: bool = True, *,
                     data: str | Path | None = None) -> dict[str, Any]:
    """The daily run for `as_of_date` (default today): signals up to that close, one trading step from the
    snapshot, the orders for the next session. Returns the older result dict:
    `signals` {symbol: 1/0/-1}, `scores` (list of {symbol, score, rank, cluster}), `orders` (rows of
    orders_D.csv), `metadata` (date, counts), `circuit_breaker`, `portfolio` (the new snapshot as a dict),
    `output_files` ({} for a dry run) -- and `result`, the same without itself, for code that read
    `result['result'][...]`. `dry_run=True` (the older default) computes in a temporary folder and
    writes nothing to `output_dir`."""
    from stages.common.stage import resolve_out_dir
    from stages.signal.stage import run_signal_stage
    from stages.trading.stage import run_trading_stage

    config = _config(config_path)
    if market_data_path is not None:  # the breaker's index, as `--market-data FILE`
        config = config.model_copy(update={"risk": config.risk.model_copy(update={"market_data": str(market_data_path)})})
    day = as_of_date if isinstance(as_of_date, date) else (date.fromisoformat(str(as_of_date)[:10]) if as_of_date else date.today())
    out_dir = resolve_out_dir(output_dir, config)
    with tempfile.TemporaryDirectory(prefix="trendflow_dry_run_") as scratch:
        work = Path(scratch) if dry_run else out_dir
        signal = run_signal_stage(config, data, work, as_of_date=day)
        prices = pd.read_parquet(work / "prices.parquet", columns=["date"])
        portfolio, fresh = _starting_snapshot(portfolio_snapshot, out_dir, prices, day)
        trading = run_trading_stage(config, work, work, as_of_date=day, portfolio=portfolio, fresh=fresh)
        result = _older_result(work, day, signal.summary, trading.summary, {} if dry_run else dict(trading.outputs) | dict(signal.outputs))
    result["result"] = dict(result)
    return result


def _starting_snapshot(given: str | Path | None, out_dir: Path, prices: pd.DataFrame, day: date) -> tuple[Path | None, bool]:
    """(snapshot file, fresh): the given snapshot (either shape: the trading stage converts an older
    one), else portfolio_<previous session>.json in `out_dir`, else a start from cash."""
    if given is not None:
        return Path(given), False
    before = [d for d in sorted(prices["date"].unique()) if d < pd.Timestamp(day)]
    candidate = out_dir / f"portfolio_{pd.Timestamp(before[-1]).date()}.json" if before else None
    if candidate is not None and candidate.exists():
        return candidate, False
    log.info("no portfolio snapshot given and none in %s for the previous session: starting from cash", out_dir)
    return None, True


def _older_result(folder: Path, day: date, signal: dict, trading: dict, files: dict) -> dict[str, Any]:
    tag = day.isoformat()
    signals = pd.read_csv(folder / f"signals_{tag}.csv", dtype={"symbol": str})
    scores = pd.read_csv(folder / f"scores_{tag}.csv", dtype={"symbol": str})
    orders = pd.read_csv(folder / f"orders_{tag}.csv", dtype={"symbol": str})
    snapshot = json.loads((folder / f"portfolio_{tag}.json").read_text(encoding="utf-8"))
    actions = orders["action"].str.upper()
    return {
        "signals": {str(s): int(v) for s, v in zip(signals["symbol"], signals["signal"])},
        "scores": [{"symbol": str(r.symbol), "score": float(r.momentum_score), "rank": None if pd.isna(r.rank) else int(r.rank),
                    "cluster": int(r.cluster)} for r in scores.itertuples(index=False)],
        "orders": orders.to_dict(orient="records"),
        "metadata": {
            "as_of_date": tag,
            "num_signals": len(signals),
            "num_buy_signals": int((signals["signal"] == 1).sum()),
            "num_sell_signals": int((signals["signal"] == -1).sum()),
            "num_buy_orders": int((actions == "BUY").sum()),
            "num_sell_orders": int((actions == "SELL").sum()),
            "num_holdings": len(snapshot["holdings"]),
            "cash": snapshot["cash"],
            "total_value": snapshot["total_value"],
            "fills_today": trading.get("fills_today"),
        },
        "circuit_breaker": bool(trading.get("breaker_on")),
        "portfolio": snapshot,
        "output_files": {name: str(path) for name, path in sorted(files.items())},
    }
