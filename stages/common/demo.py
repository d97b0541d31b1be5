"""The built-in demo universe: a deterministic, realistic ETF universe that needs no download.

A factor model: one market factor, ~6 sector factors and idiosyncratic noise, with regime-
switching drifts (bull / flat / bear spells lasting months) so trends exist to be followed,
Student-t shocks for fat tails, volume that rises with absolute moves, a few late listings and
suspension days (rows missing, as in real data). Same arguments -> byte-identical files.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from stages.common.artifacts import atomic_write_bytes
from stages.common.errors import DataError
from stages.data.quality import limit_bands

SECTORS = ("broad", "tech", "consumer", "financials", "healthcare", "resources", "bonds", "gold")
_CODE_PREFIXES = (("510", "SH"), ("512", "SH"), ("515", "SH"), ("159", "SZ"), ("588", "SH"), ("516", "SH"))
DEMO_START = "2015-01-05"
DEMO_MARKER = ".demo_spec"
GENERATOR = "limits"  # in the marker: a folder made by an earlier generator (moves through the limits) is remade
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


def _sector_count(spec: DemoSpec) -> int:
    return max(1, min(spec.n_sectors, len(SECTORS), spec.n_symbols))


def _layout(spec: DemoSpec, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """The symbols and each one's sector index: the generator's first random draws."""
    symbols = demo_symbols(spec.n_symbols, rng)
    sector_of = np.arange(spec.n_symbols) % _sector_count(spec)
    rng.shuffle(sector_of)
    return symbols, sector_of


def demo_sectors(spec: DemoSpec = DemoSpec()) -> dict[str, str]:
    """Symbol -> sector name of the demo universe `spec` generates (the factor each symbol loads on)."""
    symbols, sector_of = _layout(spec, np.random.default_rng(spec.seed))
    return {symbol: SECTORS[k] for symbol, k in zip(symbols, sector_of)}


def generate_demo_prices(spec: DemoSpec = DemoSpec()) -> pd.DataFrame:
    """Long OHLCV frame (date, symbol, open, high, low, close, volume), sorted by symbol then date."""
    if spec.n_symbols < 1 or spec.years <= 0:
        raise ValueError("demo universe needs at least one symbol and a positive number of years")
    rng = np.random.default_rng(spec.seed)
    n_days = max(int(round(spec.years * TRADING_DAYS_PER_YEAR)), 2)
    n_sym = spec.n_symbols
    n_sec = _sector_count(spec)
    dates = pd.bdate_range(DEMO_START, periods=n_days)
    symbols, sector_of = _layout(spec, rng)

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

    volume = np.round(volume / 100) * 100

    present = np.ones((n_days, n_sym), dtype=bool)
    late = rng.random(n_sym) < 0.15  # young ETFs listed part-way through
    listing_day = np.where(late, rng.integers(n_days // 5, max(n_days // 5 + 1, n_days * 3 // 5), n_sym), 0)
    present &= np.arange(n_days)[:, None] >= listing_day[None, :]
    suspended = rng.random((n_days, n_sym)) < 0.002  # scattered suspension days
    suspended[0] = False
    present &= ~suspended
    bands = limit_bands(list(symbols))
    open_, high, low, close = quote_within_limits(open_, high, low, close, present, bands)

    # Long rows, symbol-major in sorted symbol order, dates ascending: (symbol, date) order by construction.
    order = np.argsort(np.array(symbols, dtype=object), kind="stable")
    keep = present[:, order].T.ravel()
    codes = np.repeat(np.arange(n_sym), n_days)[keep]
    return pd.DataFrame(
        {
            "date": np.tile(dates.to_numpy().astype("datetime64[ns]"), n_sym)[keep],  # as PricesSchema has it
            "symbol": pa.array([symbols[i] for i in order], pa.string()).take(pa.array(codes)).to_pandas(),
            **{
                name: grid[:, order].T.ravel()[keep]
                for name, grid in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume))
            },
        }
    )


def _quote(open_, high, low, close):
    """Quote like an exchange (0.001 tick), then restore high/low consistency after rounding."""
    open_, close = np.round(open_, 3), np.round(close, 3)
    high = np.maximum(np.round(high, 3), np.maximum(open_, close))
    low = np.maximum(np.minimum(np.round(low, 3), np.minimum(open_, close)), 0.001)
    return open_, high, low, close


def quote_within_limits(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, present: np.ndarray,
                        bands: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Day x symbol price grids quoted to the 0.001 tick, every traded session inside its symbol's daily
    limit band from the previous traded close (the limit prices as `rules.limit_prices` computes them):
    the demo's codes are CN ETFs, whose exchange stops a move at the limit, so the demo is a clean
    universe of that market (no jump for the quality gate to warn about), with limit days in a shock.

    A symbol whose open and close stay inside its band is only rounded (its high and low capped at the
    limits). One that would break through is stopped at the limit price, and its later prices follow
    the same raw returns from the limited level: a day-by-day recursion (the limit depends on the
    previous close), from the first break on, over those symbols only and vectorised across them."""
    from stages.trading.rules import limit_prices

    o, h, lo, c = _quote(open_, high, low, close)
    down, up = limit_prices(_previous_close(c, present), bands[None, :], 3)
    with np.errstate(invalid="ignore"):
        breaks = present & ((c > up) | (c < down) | (o > up) | (o < down))
    broken = np.flatnonzero(breaks.any(axis=0))
    if len(broken):
        raw = tuple(grid[:, broken].astype(float) for grid in (open_, high, low, close))
        band, alive = bands[broken], present[:, broken]
        first = int(np.flatnonzero(breaks[:, broken].any(axis=1))[0])  # before it, the quoted prices stand
        last = _previous_close(c, present)[first, broken]
        scale = np.ones(len(broken))
        for t in range(first, len(c)):
            day_o, day_h, day_lo, day_c = _quote(*(grid[t] * scale for grid in raw))
            floor, cap = limit_prices(last, band, 3)
            limited = alive[t] & np.isfinite(last)
            day_o, stopped = (np.where(limited, np.clip(x, floor, cap), x) for x in (day_o, day_c))
            o[t, broken], c[t, broken] = day_o, stopped
            h[t, broken] = np.maximum(day_h, np.maximum(day_o, stopped))
            lo[t, broken] = np.minimum(day_lo, np.minimum(day_o, stopped))
            scale = np.where(stopped != day_c, stopped / raw[3][t], scale)  # a stopped close: later prices follow it
            last = np.where(alive[t], stopped, last)
        down, up = limit_prices(_previous_close(c, present), bands[None, :], 3)
    limited = present & np.isfinite(down)
    h = np.where(limited, np.clip(h, np.maximum(o, c), np.maximum(up, np.maximum(o, c))), h)
    lo = np.where(limited, np.clip(lo, np.minimum(down, np.minimum(o, c)), np.minimum(o, c)), lo)
    return o, h, lo, c


def _previous_close(close: np.ndarray, present: np.ndarray) -> np.ndarray:
    """For each day and symbol, the close of the symbol's previous traded session (NaN before its first)."""
    rows = np.where(present, np.arange(len(close))[:, None], -1)
    previous = np.maximum.accumulate(np.vstack([np.full((1, close.shape[1]), -1), rows[:-1]]), axis=0)
    return np.where(previous >= 0, np.take_along_axis(close, np.maximum(previous, 0), axis=0), np.nan)


def _fixed3(values: np.ndarray):
    """Numbers as text with exactly three decimals ("%.3f"), vectorised (values are >= 0)."""
    milli = np.rint(values * 1000).astype(np.int64)
    whole = pc.cast(pa.array(milli // 1000), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(milli % 1000), pa.string()), width=3, padding="0")
    return pc.binary_join_element_wise(whole, frac, ".")


def demo_csv_bytes(prices: pd.DataFrame) -> dict[str, bytes]:
    """Per-symbol CSV files (date,open,high,low,close,volume; dates ISO, numbers "%.3f") for a long
    frame sorted by symbol then date. The whole panel is formatted at once, then cut by symbol."""
    dates = pa.array(prices["date"].to_numpy().astype("datetime64[D]"))
    table = pa.table({"date": pc.cast(dates, pa.string()),
                      **{name: _fixed3(prices[name].to_numpy()) for name in ("open", "high", "low", "close", "volume")}})
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, write_options=pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    body = sink.getvalue()
    line_ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\n")) + 1
    symbols = prices["symbol"].to_numpy()
    firsts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    bounds = np.r_[0, line_ends[np.r_[firsts[1:], len(symbols)] - 1]]
    header = b"date,open,high,low,close,volume\n"
    return {str(symbols[first]): header + body[bounds[i]:bounds[i + 1]] for i, first in enumerate(firsts)}


def write_demo_universe(out_dir: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write one CSV per symbol (date,open,high,low,close,volume), like real data folders.

    Each file appears atomically (temp file + rename); they are not fsync'd one by one -- the data
    can be regenerated, and `ensure_demo_universe` writes its marker (fsync'd) only after all of them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for symbol, content in demo_csv_bytes(generate_demo_prices(spec)).items():
        atomic_write_bytes(out_dir / f"{symbol}.csv", content, fsync=False)
    return out_dir


def ensure_demo_universe(folder: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """The demo data folder, generated on first use (commands run without --data use it).

    A marker file records the spec (and the generator) and the files written; it is written last, so an
    interrupted generation is redone. When the spec or the generator changes, the previous universe's files that the new one does
    not overwrite are removed (other files in the folder are left alone).
    """
    folder = Path(folder)
    marker = folder / DEMO_MARKER
    wanted = f"{spec.n_symbols},{spec.years},{spec.seed},{spec.n_sectors},{GENERATOR}\n"
    recorded = marker.read_text().splitlines(keepends=True) if marker.exists() else []
    if recorded[:1] == [wanted]:
        return folder
    write_demo_universe(folder, spec)
    written = {f"{symbol}.csv" for symbol in demo_symbols(spec.n_symbols, np.random.default_rng(spec.seed))}
    for name in (line.strip() for line in recorded[1:]):
        if name and name not in written and "/" not in name and "\\" not in name:
            (folder / name).unlink(missing_ok=True)
    atomic_write_bytes(marker, (wanted + "".join(f"{name}\n" for name in sorted(written))).encode())
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
