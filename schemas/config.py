"""The configuration model: every parameter of the strategy, with its default, in one place.

Config files may omit keys (defaults fill them) but unknown keys and wrong types are errors.
Values are strict: a JSON string is never silently turned into a number.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Upper bounds where the arithmetic breaks (a window of 1e9 days allocates a billion-row array; a
# lot of 1e18 shares overflows the int64 share counts): far above any real use.
MAX_WINDOW = 5000  # trading days, ~20 years
MAX_LOT_SIZE = 1_000_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DataConfig(_Section):
    """Where prices come from and which part of them to use."""

    source: str | None = Field(None, description="folder of per-symbol files, or one long file; null = demo universe")
    symbols: list[str] | None = Field(None, description="restrict to these symbols; null = every file found")
    start_date: date | None = Field(None, strict=False, description="first date used (inclusive)")
    end_date: date | None = Field(None, strict=False, description="last date used (inclusive)")
    market_index_symbol: str | None = Field(None, description="symbol for the circuit breaker; null = equal-weight universe")
    bad_rows: Literal["error", "drop"] = Field("error", description="error: stop listing bad rows; drop: drop them with a warning")
    min_history_days: int = Field(1, ge=1, le=MAX_WINDOW, description="symbols with fewer rows are skipped with a warning")
    calendar: Literal["XSHG", "XSHE", "XNYS"] | None = Field(None, description="exchange calendar: the backtest steps through its sessions (a missing row = suspension, a row on a non-session = error); null = the dates in the files")
    corporate_actions: str | None = Field(None, description="CSV ex_date,symbol,cash_dividend,split_ratio for raw prices: dividends credit cash, splits scale holdings; null = prices already adjusted")
    adjust: Literal["forward", "back"] = Field("forward", description="prices built from the data store (trendflow fetch): forward (latest = as traded) or back adjusted")


class MacdConfig(_Section):
    fast: int = Field(12, ge=1, le=MAX_WINDOW, description="fast EMA period")
    slow: int = Field(26, ge=2, le=MAX_WINDOW, description="slow EMA period")
    signal: int = Field(9, ge=1, le=MAX_WINDOW, description="signal-line EMA period")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "MacdConfig":
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class KamaConfig(_Section):
    er_window: int = Field(10, ge=1, le=MAX_WINDOW, description="Kaufman efficiency-ratio window")
    fast: int = Field(2, ge=1, le=MAX_WINDOW, description="fastest smoothing constant period")
    slow: int = Field(30, ge=2, le=MAX_WINDOW, description="slowest smoothing constant period")
    slope_window: int = Field(5, ge=1, le=MAX_WINDOW, description="days over which the KAMA slope is measured")


class FilterConfig(_Section):
    adx_enabled: bool = Field(False, description="veto buys unless ADX >= adx_threshold")
    adx_window: int = Field(14, ge=2, le=MAX_WINDOW, description="ADX period (Wilder)")
    adx_threshold: float = Field(20.0, ge=0, le=100, description="minimum ADX for a buy")
    volume_enabled: bool = Field(False, description="veto buys unless volume >= multiplier x average")
    volume_window: int = Field(20, ge=1, le=MAX_WINDOW, description="days in the volume average")
    volume_multiplier: float = Field(1.0, ge=0, description="volume >= k x its average")
    slope_enabled: bool = Field(False, description="veto buys unless the KAMA slope is positive")


class StrategyConfig(_Section):
    """Trend signal: which strategy and its filters."""

    name: str = Field("combo", description="registered strategy: macd | kama | combo")
    combo_mode: Literal["both", "either"] = Field("both", description="combo: both = MACD and KAMA must agree; either = any signal not contradicted")
    macd: MacdConfig = MacdConfig()
    kama: KamaConfig = KamaConfig()
    filters: FilterConfig = FilterConfig()


class ScoringConfig(_Section):
    """Momentum score and the buffer-zone ranks the trading stage uses."""

    momentum_weights: dict[str, float] = Field(
        default_factory=lambda: {"20": 0.3, "60": 0.4, "120": 0.3},
        description="window in days -> weight; normalised to sum to 1 (a warning says so when they do not)",
    )
    buy_top_n: int = Field(10, ge=1, description="buy only within the top N admissible ranks")
    hold_until_rank: int = Field(15, ge=1, description="keep a holding while its rank <= this (buffer zone)")
    inertia_bonus: float = Field(0.05, ge=0, description="added to held symbols' scores before ranking")
    rebalance_frequency: int = Field(5, ge=1, le=MAX_WINDOW, description="trading days between rebalances")

    @model_validator(mode="after")
    def _check(self) -> "ScoringConfig":
        if not self.momentum_weights:
            raise ValueError("momentum_weights must name at least one window")
        for window, weight in self.momentum_weights.items():
            if not window.isdigit() or not 2 <= int(window) <= MAX_WINDOW:
                raise ValueError(f"momentum_weights key {window!r} must be a window length in days (2..{MAX_WINDOW})")
            if weight < 0:
                raise ValueError(f"momentum_weights[{window!r}] must be >= 0, got {weight}")
        if sum(self.momentum_weights.values()) <= 0:
            raise ValueError("momentum_weights must not all be 0 (they are normalised to sum to 1)")
        if self.hold_until_rank < self.buy_top_n:
            raise ValueError(f"hold_until_rank ({self.hold_until_rank}) must be >= buy_top_n ({self.buy_top_n})")
        return self

    @property
    def windows(self) -> list[int]:
        return sorted(int(w) for w in self.momentum_weights)


class ClusteringConfig(_Section):
    correlation_window: int = Field(60, ge=5, le=MAX_WINDOW, description="days of daily returns in each correlation")
    max_positions_per_cluster: int = Field(2, ge=1, description="cluster cap on holdings")
    update_frequency: int = Field(20, ge=1, le=MAX_WINDOW, description="trading days between cluster refreshes")
    distance_threshold: float = Field(0.8, gt=0, le=2, description="cut height on sqrt(2(1-rho))")
    linkage: Literal["average", "complete", "single", "ward"] = Field("average", description="scipy hierarchical linkage method")


class RiskConfig(_Section):
    atr_window: int = Field(14, ge=2, le=MAX_WINDOW, description="ATR period (Wilder)")
    atr_multiplier: float = Field(2.0, gt=0, description="trailing stop = highest close since entry - m x ATR")
    time_stop_days: int = Field(60, ge=1, le=MAX_WINDOW, description="trading days held before the time stop applies")
    time_stop_threshold: float = Field(-0.05, le=0, description="time stop when return since entry is below this")
    circuit_breaker_threshold: float = Field(-0.10, lt=0, gt=-1, description="no new buys while the market index is this far below its recent peak")
    circuit_breaker_lookback: int = Field(60, ge=1, le=MAX_WINDOW, description="days over which the recent peak is taken")
    exit_on_sell_signal: bool = Field(False, description="also exit a holding on a -1 trend signal")
    market_data: str | None = Field(None, description="price file of a market index for the circuit breaker only (never traded or ranked); null = data.market_index_symbol or the equal-weight universe")
    reentry_cooldown_days: int = Field(0, ge=0, description="trading days after a risk exit before the symbol may be bought again (0 = from the next decision)")
    data_ended_sessions: int = Field(10, ge=1, description="a holding without a price for this many sessions while others trade is sold at its last close (data_ended)")


class PositionSizingConfig(_Section):
    volatility_method: Literal["ewma", "std"] = Field("ewma", description="volatility behind inverse-vol sizing: ewma or rolling std")
    ewma_lambda: float = Field(0.94, gt=0, lt=1, description="RiskMetrics decay")
    volatility_window: int = Field(20, ge=2, le=MAX_WINDOW, description="window for the 'std' method")
    max_positions: int = Field(20, ge=1, description="most holdings at once")
    max_position_size: float = Field(0.15, gt=0, le=1, description="largest weight of one holding")
    max_cluster_size: float = Field(0.30, gt=0, le=1, description="largest total weight of one cluster")
    max_total_exposure: float = Field(0.95, gt=0, le=1, description="sum of target weights (applied once)")
    rebalance_threshold: float = Field(
        0.02, ge=0, le=1, description="resize a held position on a rebalance day only when |target - current| weight exceeds this"
    )


class ExecutionConfig(_Section):
    initial_cash: float = Field(1_000_000.0, gt=0, description="starting capital")
    commission_rate: float = Field(0.0003, ge=0, lt=0.1, description="commission = max(rate x value, minimum)")
    commission_minimum: float = Field(5.0, ge=0, description="minimum commission per order")
    slippage_bps: float = Field(5.0, ge=0, description="fill price worse than reference by this many bps")
    lot_size: int = Field(100, ge=1, le=MAX_LOT_SIZE, description="shares per lot; orders round down to whole lots")
    fill_price: Literal["next_open", "close"] = Field("next_open", description="next_open: fill at the next session's open; close: at the signal close")
    sell_commission_rate: float | None = Field(None, ge=0, lt=0.1, description="commission rate on sells (same minimum); null = commission_rate, which applies to buys")
    stamp_duty_rate: float | None = Field(None, ge=0, lt=0.1, description="stamp duty on the value of sells (A-shares 0.0005, ETFs 0); null = the preset's, else 0")
    transfer_fee_rate: float | None = Field(None, ge=0, lt=0.1, description="transfer fee on the value of buys and sells; null = the preset's, else 0")
    max_volume_share: float | None = Field(None, gt=0, le=1, description="a fill takes at most this share of the day's volume (rest of a sell waits, rest of a buy is dropped); null = the preset's, else no cap")
    volume_unit: Literal["shares", "lots"] | None = Field(None, description="unit of the volume column: shares, or lots of lot_size shares; null = the preset's, else shares")


class MarketConfig(_Section):
    """Rules of the exchange traded: price limits and settlement (costs and volume cap are in execution)."""

    preset: Literal["none", "cn_etf", "cn_stock", "us_etf"] = Field(
        "none", description="fills its values (MARKET_PRESETS) into the market keys left null; none = no market rules")
    price_limits: bool | None = Field(None, description="no buy at limit-up, no sell at limit-down; band from the previous close (10%; 20% for 300/301/688/588 codes and the symbol table); null = the preset's, else off")
    price_decimals: int | None = Field(None, ge=0, le=4, description="limit prices are rounded to this many decimals (3 for ETFs, 2 for stocks); null = the preset's, else 3")
    settlement: Literal["T+0", "T+1"] | None = Field(None, description="T+1: shares bought in a session cannot be sold in it (per-symbol override in the symbol table); null = the preset's, else T+0")
    symbol_table: str | None = Field(None, description="CSV symbol,price_limit,settlement whose rows override config/cn_symbols.csv; null = that table alone")


# What each market preset puts into the market keys a config leaves null (a value given wins). The
# commission rate, minimum and lot size keep their own defaults (CN: 0.03%, 5, 100): set them for US.
MARKET_PRESETS: dict[str, dict[str, dict]] = {
    "none": {},
    "cn_etf": {
        "market": {"price_limits": True, "price_decimals": 3, "settlement": "T+1"},
        "execution": {"stamp_duty_rate": 0.0, "transfer_fee_rate": 0.0, "max_volume_share": 0.1, "volume_unit": "lots"},
    },
    "cn_stock": {
        "market": {"price_limits": True, "price_decimals": 2, "settlement": "T+1"},
        "execution": {"stamp_duty_rate": 0.0005, "transfer_fee_rate": 0.00001, "max_volume_share": 0.1, "volume_unit": "lots"},
    },
    "us_etf": {
        "market": {"price_limits": False, "settlement": "T+0"},
        "execution": {"stamp_duty_rate": 0.0, "transfer_fee_rate": 0.0, "max_volume_share": 0.1, "volume_unit": "shares"},
    },
}


class ReportingConfig(_Section):
    """Performance metrics, the benchmark, and the charts and signal-quality section of report.html."""

    risk_free_rate: float = Field(0.0, ge=-0.1, le=0.5, description="annual; per session (1 + r)^(1/periods_per_year) - 1")
    benchmark: str | None = Field(None, description="a symbol in prices.parquet or a price file")
    periods_per_year: int = Field(252, ge=1, description="annualisation factor")
    rolling_window_days: int = Field(126, ge=2, le=MAX_WINDOW, description="window of the rolling Sharpe/volatility chart (126 = ~6 months)")
    signal_horizons: list[Annotated[int, Field(ge=1)]] = Field(
        [5, 20], min_length=1, description="forward-return horizons (sessions) for rank IC, buy hit rate and score quintiles")

    @model_validator(mode="after")
    def _distinct_horizons(self) -> "ReportingConfig":
        if len(set(self.signal_horizons)) != len(self.signal_horizons):
            raise ValueError(f"reporting.signal_horizons has duplicates: {self.signal_horizons}")
        return self


class OutputConfig(_Section):
    folder: str = Field("v4_trace_outputs", description="default output folder")
    csv_twins: bool = Field(True, description="write a .csv twin of each Parquet artifact (signals_output.csv: wide target weights)")


class FetchConfig(_Section):
    """The data stage (`trendflow fetch`): where prices come from and where they are kept."""

    provider: Literal["auto", "akshare", "yfinance"] = Field("auto", description="auto: akshare for .SH/.SZ symbols, yfinance for the rest")
    store: str = Field("data_store", description="folder of the local Parquet store (raw bars + adjustment factors)")
    history_start: date = Field(date(2015, 1, 1), strict=False, description="first date of a symbol's first fetch")
    recheck_sessions: int = Field(5, ge=0, description="sessions up to the last stored one fetched again (vendor revisions)")
    min_interval_seconds: float = Field(1.0, ge=0, description="rate limit: least time between two requests to a vendor")
    retries: int = Field(3, ge=0, description="retries of a transient failure (connection reset, rate limit), with backoff")


class LiveConfig(_Section):
    """Daily runs against an execution database (the executed book)."""

    drift_tolerance: float = Field(0.001, ge=0, description="warn when the executed book drifts from the model's by more than this fraction of equity")


class TrendflowConfig(_Section):
    """The whole configuration. `config/default.json` mirrors it key for key."""

    data: DataConfig = DataConfig()
    strategy: StrategyConfig = StrategyConfig()
    scoring: ScoringConfig = ScoringConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    risk: RiskConfig = RiskConfig()
    position_sizing: PositionSizingConfig = PositionSizingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    market: MarketConfig = MarketConfig()
    reporting: ReportingConfig = ReportingConfig()
    output: OutputConfig = OutputConfig()
    live: LiveConfig = LiveConfig()
    fetch: FetchConfig = FetchConfig()

    @model_validator(mode="before")
    @classmethod
    def _apply_market_preset(cls, raw):
        """`market.preset` fills its values (MARKET_PRESETS) into the keys the config leaves null or out."""
        if not isinstance(raw, dict) or not isinstance(raw.get("market"), dict):
            return raw
        preset = MARKET_PRESETS.get(raw["market"].get("preset", "none"))
        if not preset:
            return raw
        raw = dict(raw)
        for section, values in preset.items():
            given = raw.get(section, {})
            if isinstance(given, dict):
                raw[section] = {**given, **{k: v for k, v in values.items() if given.get(k) is None}}
        return raw

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def parameters(self, keys: tuple[str, ...]) -> dict:
        """The values at `keys` (config paths 'section' or 'section.key'), keyed by path."""
        dumped = self.model_dump(mode="json")
        picked = {}
        for path in keys:
            section, _, key = path.partition(".")
            picked[path] = dumped[section] if not key else dumped[section][key]
        return picked

    def parameters_hash(self, keys: tuple[str, ...]) -> str:
        """sha256 of the values at `keys`: equal exactly when every one of those values is."""
        payload = json.dumps(self.parameters(keys), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def signal_parameters(self) -> dict:
        """The values that change the signal stage's outputs (and nothing else)."""
        return self.parameters(SIGNAL_KEYS)

    def signal_hash(self) -> str:
        """Key under which signal-stage outputs can be reused (parameter sweeps, reruns)."""
        return self.parameters_hash(SIGNAL_KEYS)


# Config paths the signal stage reads; a whole section when no key is given.
SIGNAL_KEYS = (
    "data",
    "strategy",
    "scoring.momentum_weights",
    "clustering.correlation_window",
    "clustering.update_frequency",
    "clustering.distance_threshold",
    "clustering.linkage",
    "risk.atr_window",
    "position_sizing.volatility_method",
    "position_sizing.ewma_lambda",
    "position_sizing.volatility_window",
)

# Config paths that change trading decisions (a snapshot resumes, and trading artifacts stay fresh,
# only under the same values).
TRADING_KEYS = (
    "data.market_index_symbol",
    "data.corporate_actions",
    "data.calendar",
    "scoring.buy_top_n",
    "scoring.hold_until_rank",
    "scoring.inertia_bonus",
    "scoring.rebalance_frequency",
    "clustering.max_positions_per_cluster",
    "risk",
    "position_sizing.max_positions",
    "position_sizing.max_position_size",
    "position_sizing.max_cluster_size",
    "position_sizing.max_total_exposure",
    "position_sizing.rebalance_threshold",
    "execution",
    "market",
)

# Config paths the reporting stage reads (besides the trading artifacts it reports on).
REPORTING_KEYS = ("reporting",)
