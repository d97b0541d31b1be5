"""The data stage: fetch each symbol's new sessions from its source into the local store, then write
the adjusted panel the signal stage reads (`<store>/adjusted_prices.parquet`).

Per symbol: the span asked for starts `fetch.recheck_sessions` sessions before the last stored one
(vendors revise recent bars) -- or at `fetch.history_start` for a new symbol -- and ends at `end`; a
symbol with no exchange session after its last stored row is skipped as up to date. Requests to a
vendor are spaced by `fetch.min_interval_seconds`; a transient failure (connection reset, rate limit)
is retried `fetch.retries` times with doubling waits; a symbol that still fails is reported and the
others go on. The summary says what was fetched, skipped and failed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from schemas.config import TrendflowConfig
from schemas.prices import PricesSchema
from stages.common.artifacts import stage_run, validate_frame
from stages.common.errors import ConfigError, DataError, TransientIOError, TrendflowError
from stages.common.market_data import check_symbol_name
from stages.common.stage import StageResult
from stages.data.adapters import Source, make_source, source_for
from stages.data.quality import calendar_sessions, exchange_of
from stages.data.store import PriceStore

log = logging.getLogger(__name__)
PANEL_NAME = "adjusted_prices.parquet"
RETRY_BASE_SECONDS = 2.0


@dataclass
class FetchSummary:
    fetched: dict[str, int] = field(default_factory=dict)  # symbol -> sessions after the last stored one
    skipped: dict[str, str] = field(default_factory=dict)  # symbol -> why
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> the error
    transient: set[str] = field(default_factory=set)  # failed symbols whose last error was transient

    def lines(self) -> list[str]:
        out = [f"fetched {len(self.fetched)}, skipped {len(self.skipped)}, failed {len(self.failed)}"]
        out += [f"  fetched {s}: {n} new session(s)" for s, n in sorted(self.fetched.items())]
        out += [f"  skipped {s}: {why}" for s, why in sorted(self.skipped.items())]
        out += [f"  FAILED  {s}: {why}" for s, why in sorted(self.failed.items())]
        return out


class Throttle:
    """At most one request per `min_interval` seconds to one vendor."""

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.min_interval, self.clock, self.sleep = min_interval, clock, sleep
        self._last: float | None = None

    def wait(self) -> None:
        if self._last is not None:
            remaining = self.min_interval - (self.clock() - self._last)
            if remaining > 0:
                self.sleep(remaining)
        self._last = self.clock()


def with_retries(call: Callable, source: Source, retries: int, sleep: Callable[[float], None], what: str):
    """`call()`, retried up to `retries` times after a transient failure, waiting 2, 4, 8... seconds."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 -- the source classifies it
            if attempt == retries or not source.is_transient(exc):
                raise
            delay = RETRY_BASE_SECONDS * 2 ** attempt
            log.warning("%s: %s: %s -- retry %d/%d in %.0fs", what, type(exc).__name__, exc, attempt + 1, retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def fetch_span(store: PriceStore, symbol: str, end: date, config: TrendflowConfig) -> tuple[date, date] | None:
    """The sessions to ask for, or None when the store already holds every session up to `end`."""
    last = store.last_date(symbol)
    if last is None:
        return config.fetch.history_start, end
    sessions = calendar_sessions(exchange_of(symbol))
    end_ts = pd.Timestamp(end)
    if len(sessions) and sessions[0] <= last <= sessions[-1]:
        if not ((sessions > last) & (sessions <= end_ts)).any():
            return None
        back = config.fetch.recheck_sessions
        at = int(sessions.searchsorted(last, "right"))  # first session after the last stored one
        start = sessions[max(at - back, 0)]
    else:  # outside the calendar's range: calendar days
        if last >= end_ts:
            return None
        start = last + pd.Timedelta(days=1) - pd.Timedelta(days=config.fetch.recheck_sessions)
    return start.date(), end


def run_fetch(config: TrendflowConfig, symbols: list[str], *, store_dir: str | Path | None = None,
              end: date | None = None, sources: Mapping[str, Source] | None = None,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> tuple[FetchSummary, StageResult]:
    """Fetch `symbols` into the store and write `<store>/adjusted_prices.parquet` (data.adjust) for every
    requested symbol the store holds -- beside the raw data, outside any output folder, since the signal
    stage refuses prices inside its --out. `sources` replaces the live adapters by name (tests)."""
    t0 = time.perf_counter()
    if not symbols:
        raise DataError("no symbols to fetch: give --symbols or data.symbols")
    for symbol in symbols:
        check_symbol_name(symbol, "--symbols entry")
    end = end or date.today()
    store = PriceStore(store_dir if store_dir is not None else config.fetch.store)
    summary = FetchSummary()
    live: dict[str, Source] = dict(sources or {})
    throttles: dict[str, Throttle] = {}
    for symbol in symbols:
        name = source_for(symbol, config.fetch.provider)
        source = live.get(name) or live.setdefault(name, make_source(name))
        throttle = throttles.setdefault(name, Throttle(config.fetch.min_interval_seconds, clock, sleep))
        span = fetch_span(store, symbol, end, config)
        if span is None:
            summary.skipped[symbol] = f"up to date (last stored {store.last_date(symbol).date()})"
            continue
        start, stop = span

        def call(symbol=symbol, start=start, stop=stop, source=source, throttle=throttle):
            throttle.wait()
            return source.fetch(symbol, start, stop)

        try:
            got = with_retries(call, source, config.fetch.retries, sleep, f"{name} {symbol}")
            bars = got.bars[(got.bars["date"] >= pd.Timestamp(start)) & (got.bars["date"] <= pd.Timestamp(stop))]
            if bars.empty:
                if store.last_date(symbol) is None:
                    raise DataError(f"{name} returned no rows for {symbol} between {start} and {stop}")
                summary.skipped[symbol] = f"{name} has no rows after {store.last_date(symbol).date()} yet"
                continue
            checked = validate_frame(bars.assign(symbol=symbol)[PricesSchema.to_schema().columns.keys()],
                                     PricesSchema, f"{name} response for {symbol}")
            summary.fetched[symbol] = store.update(symbol, checked.drop(columns="symbol"), got.events, name,
                                                   pd.Timestamp(start))
        except ConfigError:
            raise  # a setting or a missing library: every symbol would fail the same way
        except Exception as exc:  # noqa: BLE001 -- one symbol's failure must not sink the others
            if not isinstance(exc, TrendflowError) and not source.is_transient(exc) and not _vendor_error(exc):
                raise
            text = str(exc)
            summary.failed[symbol] = f"{type(exc).__name__}: {text if len(text) <= 300 else text[:300] + '...'}"
            if source.is_transient(exc):
                summary.transient.add(symbol)
            log.error("fetch %s from %s failed: %s", symbol, name, summary.failed[symbol])
    for line in summary.lines():
        log.info(line)
    if len(summary.failed) == len(symbols):
        error = TransientIOError if summary.transient == set(summary.failed) else DataError
        raise error(f"fetch: every symbol failed ({'; '.join(f'{s}: {e}' for s, e in sorted(summary.failed.items()))})")

    held = [s for s in symbols if store.last_date(s) is not None]
    panel = store.adjusted_panel(held, config.data.adjust).sort_values(["symbol", "date"], ignore_index=True)
    with stage_run("data", store.folder, config_hash=config.config_hash(), csv_twins=False) as run:
        run.write(panel, PANEL_NAME, PricesSchema, csv_twin=False)
    result = StageResult(stage="data", outputs=dict(run.written), rows={"adjusted_prices": len(panel)},
                         seconds=time.perf_counter() - t0,
                         summary={"fetched": summary.fetched, "skipped": summary.skipped, "failed": summary.failed,
                                  "store": str(store.folder), "adjust": config.data.adjust,
                                  "panel": str(run.written[PANEL_NAME])})
    return summary, result


def _vendor_error(exc: BaseException) -> bool:
    """A vendor's odd answer (a changed layout, a missing field): that symbol fails, the run goes on."""
    return isinstance(exc, (KeyError, ValueError, TypeError, IndexError, AttributeError))
