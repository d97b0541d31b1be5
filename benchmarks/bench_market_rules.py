"""Market presets on the real Chinese ETFs (../shared/data/cn_etf, whole history): what each rule
blocked or resized, what it did to the result, and what it costs in engine time.

For the default config (no market rules) and each preset: the engine's backtest fold (best of
--repeat), fills, final equity, total return after and before costs, and the orders not filled in
full by reason (a sell waiting several sessions counts once a session).

Run by hand: .venv/bin/python benchmarks/bench_market_rules.py [--repeat 3] [--data ../shared/data/cn_etf]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import CACHE, max_rss_mib

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cn_etf")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no data at {args.data}: nothing to measure")
        return 0
    import pandas as pd

    from stages.common.config import load_config
    from stages.reporting.metrics import compute_metrics
    from stages.signal import run_signal_stage
    from stages.trading.backtest import fold
    from stages.trading.market import build_market

    logging.disable(logging.WARNING)
    base = load_config()
    out = CACHE / f"market_rules_{args.data.name}_{base.signal_hash()[:12]}"
    if not (out / "signals_output.parquet").exists():
        run_signal_stage(base, args.data, out)
    prices, signals = pd.read_parquet(out / "prices.parquet"), pd.read_parquet(out / "signals_output.parquet")
    print(f"{args.data}: {prices['symbol'].nunique()} symbols, {prices['date'].nunique()} sessions")
    for preset in ("none", "cn_etf"):
        config = load_config(None, [f"market.preset={preset}"])
        market = build_market(prices, signals, config)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = fold(market, config)
            times.append(time.perf_counter() - t0)
        m = compute_metrics(result.equity_curve, result.trade_log, config=config,
                            initial_cash=config.execution.initial_cash)
        print(f"preset {preset:<8} fold {min(times):6.3f} s  fills {len(result.trade_log):5d}  final equity "
              f"{m['final_equity']:14,.2f}  return {m['total_return']:+.2%} (before costs {m['total_return_before_costs']:+.2%})")
        print(f"                not filled in full, by reason: {result.blocked or 'none'}")
    print(f"peak RSS {max_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
