"""`run_daily_signal` and `load_portfolio`, with the older signal_pipeline's signatures and result.

Both run trendflow's own stages (the signal stage, then one trading step: exactly what
`trendflow daily` runs, without Prefect). Where the older design differs:
- `market_data_path` is the price data (a folder of per-symbol files or one long file, as `--data`);
  the circuit breaker's index is `data.market_index_symbol`, a symbol in those prices (or, when
  unset, the equal-weight universe), not a separate index file;
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
from schemas.trading import SNAPSHOT_VERSION, Holding, PortfolioSnapshot, SnapshotMetadata
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
    with `config`'s trading settings (default config) so a run under that config resumes from it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"portfolio snapshot {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"portfolio snapshot {path} is damaged (not valid JSON: {exc})") from None
    if isinstance(raw, dict) and raw.get("version") == SNAPSHOT_VERSION:
        from stages.trading.snapshot import read_snapshot

        return read_snapshot(path, date.fromisoformat(str(raw.get("as_of_date"))))
    if not isinstance(raw, dict) or not {"as_of_date", "holdings", "cash"} <= set(raw):
        raise SnapshotError(f"portfolio snapshot {path} is neither a trendflow snapshot (version {SNAPSHOT_VERSION}) "
                            "nor an older one ({as_of_date, holdings, cash, ...})")
    return _from_older(raw, path, _config(config), prices)


def _from_older(raw: dict[str, Any], path: Path, config: TrendflowConfig, prices: pd.DataFrame | None) -> PortfolioSnapshot:
    from pydantic import ValidationError

    from stages.trading.snapshot import trading_config_hash

    try:
        as_of = date.fromisoformat(str(raw["as_of_date"])[:10])
        closes = _closes_up_to(prices, as_of)
        holdings = {}
        for symbol, h in (raw.get("holdings") or {}).items():
            shares = int(h["shares"])
            if shares == 0:
                continue
            cost = float(h["cost_basis"])
            entry = date.fromisoformat(str(h.get("entry_date") or as_of)[:10])
            history = closes.get(symbol)
            held = history[history.index >= pd.Timestamp(entry)] if history is not None else None
            if held is not None and len(held):
                last, highest, days = float(held.iat[-1]), float(held.max()), len(held) - 1
            else:
                last = float(h["value"]) / shares if h.get("value") else cost
                highest, days = last, 0
            holdings[str(symbol)] = Holding(shares=shares, entry_date=entry, entry_price=cost, highest_close=max(highest, last),
                                            stop_level=0.0, last_close=last, days_held=days,
                                            cluster=int((raw.get("cluster_assignments") or {}).get(symbol, -1)))
        cash = float(raw["cash"])
        total = cash + sum(h.shares * h.last_close for h in holdings.values())
        snapshot = PortfolioSnapshot(
            version=SNAPSHOT_VERSION, as_of_date=as_of, trading_day_index=0, holdings=holdings, pending_orders=[],
            cash=cash, total_value=total, peak_equity=total, breaker_on=False, market_drawdown=0.0,
            cluster_assignments={str(s): int(c) for s, c in (raw.get("cluster_assignments") or {}).items()},
            metadata=SnapshotMetadata(trading_config_hash=trading_config_hash(config), mode="signals",
                                      fill_price=config.execution.fill_price, lot_size=config.execution.lot_size),
        )
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        detail = "; ".join(e["msg"] for e in exc.errors()[:3]) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        raise SnapshotError(f"portfolio snapshot {path} (older shape) cannot be converted: {detail}") from None
    log.info("%s: older portfolio snapshot converted (%d holdings, cash %.2f)", path, len(holdings), cash)
    return snapshot


def _closes_up_to(prices: pd.DataFrame | None, day: date) -> dict[str, pd.Series]:
    if prices is None:
        return {}
    upto = prices[prices["date"] <= pd.Timestamp(day)].sort_values("date", kind="stable")
    return {str(s): g.set_index("date")["close"] for s, g in upto.groupby("symbol", sort=False)}


def run_daily_signal(config_path: str | Path | None, as_of_date: str | date | None = None,
                     portfolio_snapshot: str | Path | None = None, market_data_path: str | Path | None = None,
                     output_dir: str | Path | None = None, dry_run: bool = True) -> dict[str, Any]:
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
    day = as_of_date if isinstance(as_of_date, date) else (date.fromisoformat(str(as_of_date)[:10]) if as_of_date else date.today())
    out_dir = resolve_out_dir(output_dir, config)
    with tempfile.TemporaryDirectory(prefix="trendflow_dry_run_") as scratch:
        work = Path(scratch) if dry_run else out_dir
        signal = run_signal_stage(config, market_data_path, work, as_of_date=day)
        prices = pd.read_parquet(work / "prices.parquet", columns=["date", "symbol", "close"])
        portfolio, fresh = _starting_snapshot(portfolio_snapshot, out_dir, prices, day, config, Path(scratch))
        trading = run_trading_stage(config, work, work, as_of_date=day, portfolio=portfolio, fresh=fresh)
        result = _older_result(work, day, signal.summary, trading.summary, {} if dry_run else dict(trading.outputs) | dict(signal.outputs))
    result["result"] = dict(result)
    return result


def _starting_snapshot(given: str | Path | None, out_dir: Path, prices: pd.DataFrame, day: date,
                       config: TrendflowConfig, scratch: Path) -> tuple[Path | None, bool]:
    """(snapshot file in trendflow's shape, fresh): the given snapshot (an older one converted into
    `scratch`), else portfolio_<previous session>.json in `out_dir`, else a start from cash."""
    sessions = sorted(prices["date"].unique())
    before = [d for d in sessions if d < pd.Timestamp(day)]
    if given is None:
        candidate = out_dir / f"portfolio_{pd.Timestamp(before[-1]).date()}.json" if before else None
        if candidate is not None and candidate.exists():
            return candidate, False
        log.info("no portfolio snapshot given and none in %s for the previous session: starting from cash", out_dir)
        return None, True
    snapshot = load_portfolio(given, config, prices)
    if json.loads(Path(given).read_bytes()).get("version") == SNAPSHOT_VERSION:
        return Path(given), False
    converted = scratch / f"portfolio_{snapshot.as_of_date}.json"
    converted.write_text(snapshot.model_dump_json(indent=2), encoding="utf-8")
    return converted, False


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
