"""The built-in demo universe: a deterministic, realistic ETF universe that needs no download.

A factor model: one market factor, ~6 sector factors and idiosyncratic noise, with regime-
switching drifts (bull / flat / bear spells lasting months) so trends exist to be followed,
Student-t shocks for fat tails, volume that rises with absolute moves, a few late listings and
suspension days (rows missing, as in real data). Same arguments -> byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.artifacts import atomic_write_bytes
from stages.common.errors import DataError

SECTORS = ("broad", "tech", "consumer", "financials", "healthcare", "resources", "bonds", "gold")
_CODE_PREFIXES = (("510", "SH"), ("512", "SH"), ("515", "SH"), ("159", "SZ"), ("588", "SH"), ("516", "SH"))
DEMO_START = "2015-01-05"
TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class DemoSpec:
    n_symbols: int = 40
    years: float = 10.0
    seed: int = 42
    n_sectors: int = 6


def demo_symbols(n_symbols: int, rng: np.random.Generator) -> list[str]:
    """Unique CN-style ETF codes such as 510300.SH / 159915.SZ."""
    codes: set[str] = set()
    out: list[str] = []
    while len(out) < n_symbols:
        prefix, exchange = _CODE_PREFIXES[int(rng.integers(len(_CODE_PREFIXES)))]
        code = f"{prefix}{int(rng.integers(0, 1000)):03d}.{exchange}"
        if code not in codes:
            codes.add(code)
            out.append(code)
    return out


def generate_demo_prices(spec: DemoSpec = DemoSpec()) -> pd.DataFrame:
    """Long OHLCV frame (date, symbol, open, high, low, close, volume), sorted by symbol then date."""
    if spec.n_symbols < 1 or spec.years <= 0:
        raise ValueError("demo universe needs at least one symbol and a positive number of years")
    rng = np.random.default_rng(spec.seed)
    n_days = max(int(round(spec.years * TRADING_DAYS_PER_YEAR)), 2)
    n_sym = spec.n_symbols
    n_sec = max(1, min(spec.n_sectors, len(SECTORS), n_sym))
    dates = pd.bdate_range(DEMO_START, periods=n_days)
    symbols = demo_symbols(n_sym, rng)
    sector_of = np.arange(n_sym) % n_sec
    rng.shuffle(sector_of)

    # Regime-switching sector drifts: each sector spends months in bull / flat / bear spells.
    drift_levels = np.array([0.25, 0.0, -0.22]) / TRADING_DAYS_PER_YEAR
    spell = rng.geometric(1 / 90, size=(n_sec, n_days // 20 + 10))
    regime = np.empty((n_days, n_sec))
    for s in range(n_sec):  # loop over a handful of sectors, not over the panel
        states = rng.choice(3, size=spell.shape[1], p=[0.40, 0.33, 0.27])
        regime[:, s] = np.repeat(drift_levels[states], spell[s])[:n_days]

    def t_shocks(shape: tuple[int, ...], dof: float = 4.0) -> np.ndarray:
        return rng.standard_t(dof, size=shape) / np.sqrt(dof / (dof - 2))

    market = 0.011 * t_shocks((n_days, 1)) + 0.0002
    sector = 0.008 * t_shocks((n_days, n_sec)) + regime
    beta = rng.uniform(0.6, 1.3, n_sym)
    idio_vol = rng.uniform(0.004, 0.012, n_sym)
    idio = idio_vol * t_shocks((n_days, n_sym))
    log_ret = market * beta + sector[:, sector_of] + idio
    if "bonds" in SECTORS[:n_sec]:  # a low-volatility, low-beta sleeve like bond ETFs
        bond = sector_of == SECTORS.index("bonds")
        log_ret[:, bond] = 0.15 * log_ret[:, bond] + 0.00012

    start_price = rng.uniform(0.8, 5.0, n_sym)
    close = start_price * np.exp(np.cumsum(log_ret, axis=0))
    prev_close = np.vstack([start_price, close[:-1]])
    gap = 0.002 * t_shocks((n_days, n_sym))
    open_ = prev_close * np.exp(gap)
    span = np.abs(0.006 * t_shocks((n_days, n_sym))) + 0.001
    high = np.maximum(open_, close) * (1 + span * rng.uniform(0.2, 1.0, (n_days, n_sym)))
    low = np.minimum(open_, close) * (1 - span * rng.uniform(0.2, 1.0, (n_days, n_sym)))
    base_volume = rng.lognormal(15, 1.0, n_sym)
    volume = base_volume * np.exp(0.3 * rng.standard_normal((n_days, n_sym))) * (1 + 40 * np.abs(log_ret))

    # Quote like an exchange (0.001 tick), then restore high/low consistency after rounding.
    open_, close = np.round(open_, 3), np.round(close, 3)
    high = np.maximum(np.round(high, 3), np.maximum(open_, close))
    low = np.minimum(np.round(low, 3), np.minimum(open_, close))
    low = np.maximum(low, 0.001)
    volume = np.round(volume / 100) * 100

    present = np.ones((n_days, n_sym), dtype=bool)
    late = rng.random(n_sym) < 0.15  # young ETFs listed part-way through
    listing_day = np.where(late, rng.integers(n_days // 5, max(n_days // 5 + 1, n_days * 3 // 5), n_sym), 0)
    present &= np.arange(n_days)[:, None] >= listing_day[None, :]
    suspended = rng.random((n_days, n_sym)) < 0.002  # scattered suspension days
    suspended[0] = False
    present &= ~suspended

    frame = pd.DataFrame(
        {
            "date": np.repeat(dates.to_numpy()[None, :], n_sym, axis=0).ravel(),
            "symbol": np.repeat(np.array(symbols, dtype=object), n_days),
            "open": open_.T.ravel(),
            "high": high.T.ravel(),
            "low": low.T.ravel(),
            "close": close.T.ravel(),
            "volume": volume.T.ravel(),
        }
    )
    frame = frame.loc[present.T.ravel()].sort_values(["symbol", "date"], kind="stable", ignore_index=True)
    frame["symbol"] = frame["symbol"].astype(str)
    return frame


def write_demo_universe(out_dir: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write one CSV per symbol (date,open,high,low,close,volume), like real data folders."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prices = generate_demo_prices(spec)
    header = "date,open,high,low,close,volume\n"
    # Format the whole panel once (rows are grouped by symbol), then cut it into per-symbol files.
    body = prices.drop(columns="symbol").to_csv(
        index=False, header=False, date_format="%Y-%m-%d", float_format="%.3f", lineterminator="\n"
    ).splitlines(keepends=True)
    counts = prices.groupby("symbol", sort=False).size()
    start = 0
    for symbol, n_rows in counts.items():
        text = header + "".join(body[start:start + n_rows])
        atomic_write_bytes(out_dir / f"{symbol}.csv", text.encode())
        start += n_rows
    return out_dir


def ensure_demo_universe(folder: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """The demo data folder, generated on first use (commands run without --data use it)."""
    folder = Path(folder)
    marker = folder / ".demo_spec"
    wanted = f"{spec.n_symbols},{spec.years},{spec.seed},{spec.n_sectors}\n"
    if not (marker.exists() and marker.read_text() == wanted):
        write_demo_universe(folder, spec)
        atomic_write_bytes(marker, wanted.encode())
    return folder


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`trendflow demo-data --out DIR [--symbols N --years Y --seed S]`."""
    import argparse

    from stages.common.cli import parse_and_run

    parser = argparse.ArgumentParser(prog=prog or "trendflow demo-data", description=main.__doc__)
    parser.add_argument("--out", required=True, help="folder for the per-symbol CSV files")
    parser.add_argument("--symbols", type=int, default=DemoSpec.n_symbols, help="number of ETFs (default 40)")
    parser.add_argument("--years", type=float, default=DemoSpec.years, help="years of weekdays (default 10)")
    parser.add_argument("--seed", type=int, default=DemoSpec.seed, help="random seed (default 42)")
    parser.add_argument("--sectors", type=int, default=DemoSpec.n_sectors, help="correlated sectors (default 6)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def body(args) -> int:
        if args.symbols < 1 or args.years <= 0:
            raise DataError("--symbols must be >= 1 and --years > 0")
        spec = DemoSpec(n_symbols=args.symbols, years=args.years, seed=args.seed, n_sectors=args.sectors)
        folder = ensure_demo_universe(args.out, spec)
        print(f"demo universe: {spec.n_symbols} symbols x {spec.years:g} years (seed {spec.seed}) in {folder}")
        return 0

    return parse_and_run(parser, body, argv)
