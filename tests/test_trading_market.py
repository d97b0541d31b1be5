"""Market rules of the presets (price limits, volume cap, costs by side, T+1, corporate actions) on
hand-made cases, each through the one engine step."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.common.errors import ConfigError, DataError
from stages.trading.engine import Order, fill_orders, fresh_state, step
from stages.trading.exchange import load_corporate_actions, symbol_rules
from stages.trading.market import build_market
from stages.trading.rules import limit_prices, price_limit_block, trade_fees
from tests.test_trading_rules import SYMBOLS, buys, cfg, frictionless, hand_market, hold, sells


def ruled(market, *, band=None, volume=None, t1=None, dividend=None, split=None):
    """The hand market with the exchange arrays the rules read (previous close carried from close)."""
    n, m = market.close.shape
    prev = np.vstack([np.full((1, m), np.nan), pd.DataFrame(market.close).ffill().to_numpy()[:-1]])
    grid = lambda x, d: None if x is None else np.broadcast_to(np.asarray(x, dtype=float), (n, m)).copy()  # noqa: E731
    return replace(market, prev_close=prev if band is not None else None,
                   price_band=None if band is None else np.broadcast_to(np.asarray(band, dtype=float), (m,)).copy(),
                   volume=grid(volume, None), t_plus_one=None if t1 is None else np.asarray(t1, dtype=bool),
                   dividend=grid(dividend, None), split=grid(split, None))


def quiet_state(n: int, config):
    """Fresh cash, past day 0 (a rebalance day): only the orders a test gives are traded."""
    state = fresh_state(n, config)
    state.day_index = 1
    return state


def order(symbol: int, side: str, shares: int, reason: str = "test") -> Order:
    return Order(symbol, side, shares, reason, 0.5, 1.0, 0.1, 10.0, pd.Timestamp("2024-01-01"))


def fills_of(record) -> list[tuple[str, str, int]]:
    return [(SYMBOLS[f.symbol], f.side, f.quantity) for f in record.fills]


# --------------------------------------------------------------------------- price limits
def test_limit_prices_come_from_the_previous_close_rounded_to_the_tick():
    assert limit_prices(10.0, 0.10, 2) == (9.0, 11.0)
    assert limit_prices(1.234, 0.20, 3) == (0.987, 1.481)  # 0.9872 -> 0.987, 1.4808 -> 1.481
    assert price_limit_block("BUY", 11.0, 10.0, 0.10, 2) == "limit_up"
    assert price_limit_block("BUY", 10.99, 10.0, 0.10, 2) == ""
    assert price_limit_block("SELL", 9.0, 10.0, 0.10, 2) == "limit_down"
    assert price_limit_block("SELL", 11.0, 10.0, 0.10, 2) == ""  # a sell at limit-up fills
    assert price_limit_block("BUY", 11.0, 10.0, np.nan, 2) == ""  # no band: no limit


def test_no_buy_fills_at_limit_up_and_the_buy_is_dropped_with_its_reason():
    # A opens at limit-up (prev close 10, +10%); B opens just under its limit
    market = ruled(hand_market([[10.0, 10.0], [11.0, 10.5], [11.5, 10.5]], open_=[[10.0, 10.0], [11.0, 10.99], [11.5, 10.5]]),
                   band=0.10)
    config = frictionless("market.price_limits=true", "market.price_decimals=2", "scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    state.pending = [order(0, "BUY", 100), order(1, "BUY", 100)]
    record = step(state, market.day(1), config)
    assert fills_of(record) == [("B", "BUY", 100)]
    assert [(SYMBOLS[o.symbol], o.note) for o in record.unfilled] == [("A", "limit_up")]
    assert record.blocked == {"limit_up": 1} and state.pending == []  # dropped, not carried
    assert state.shares.tolist() == [0, 100]


def test_a_sell_at_limit_down_waits_and_fills_at_the_next_session_off_the_limit():
    close = [[10.0, 10.0], [9.0, 10.0], [8.1, 10.0], [8.0, 10.0]]
    opens = [[10.0, 10.0], [9.0, 10.0], [8.1, 10.0], [7.9, 10.0]]  # day 2 opens at 9.0 x 0.9 = 8.1: still limit-down
    market = ruled(hand_market(close, open_=opens), band=0.10)
    config = frictionless("market.price_limits=true", "market.price_decimals=2", "scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    hold(state, 0, 500, 10.0)
    state.pending = [order(0, "SELL", 500, "atr_stop")]
    day1 = step(state, market.day(1), config)  # opens at 9.0 = limit-down of 10
    assert day1.fills == [] and day1.blocked == {"limit_down": 1} and day1.unfilled == []  # waiting, not dropped
    assert [(SYMBOLS[o.symbol], o.side, o.shares, o.reason) for o in state.pending] == [("A", "SELL", 500, "atr_stop")]
    day2 = step(state, market.day(2), config)
    assert day2.fills == [] and day2.blocked == {"limit_down": 1}
    day3 = step(state, market.day(3), config)  # 7.9 > 8.1 x 0.9 = 7.29
    assert fills_of(day3) == [("A", "SELL", 500)] and state.shares[0] == 0
    assert [(SYMBOLS[o.symbol], o.note) for o in day1.waiting + day2.waiting] == [("A", "limit_down")] * 2


def test_price_limits_with_close_fills_retry_a_blocked_sell_at_the_next_close():
    market = ruled(hand_market([[10.0], [9.0], [8.5]], atr=0.1), band=0.10)
    config = frictionless("market.price_limits=true", "market.price_decimals=2", "execution.fill_price=\"close\"",
                          "scoring.rebalance_frequency=1000")
    state = quiet_state(1, config)
    hold(state, 0, 500, 10.0, stop=9.5)
    day1 = step(state, market.day(1), config)  # stop hit at the close of 9.0 = limit-down
    assert sells(day1) == [("A", "atr_stop")] and day1.fills == [] and day1.blocked == {"limit_down": 1}
    day2 = step(state, market.day(2), config)
    assert fills_of(day2) == [("A", "SELL", 500)]


def test_board_bands_and_settlement_from_code_rules_and_the_symbol_table(tmp_path):
    symbols = np.array(["159915.SZ", "510300.SH", "588380.SH", "300750", "600519", "513050.SH", "159941.SZ", "518880.SH"])
    band, t1 = symbol_rules(symbols, cfg("market.preset=\"cn_etf\""))
    assert band.tolist() == [0.2, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1]
    assert t1.tolist() == [True, True, True, True, True, False, False, False]
    override = tmp_path / "mine.csv"
    override.write_text("symbol,price_limit,settlement\n510300,0.05,T+0\n")
    band, t1 = symbol_rules(symbols, cfg("market.preset=\"cn_etf\"", f"market.symbol_table=\"{override}\""))
    assert band[1] == 0.05 and not t1[1] and band[0] == 0.2
    override.write_text("symbol,price_limit,settlement\n510300,10,T+0\n")
    with pytest.raises(DataError, match="mine.csv"):
        symbol_rules(symbols, cfg("market.preset=\"cn_etf\"", f"market.symbol_table=\"{override}\""))
    with pytest.raises(ConfigError, match="market.symbol_table"):
        symbol_rules(symbols, cfg("market.price_limits=true", f"market.symbol_table=\"{tmp_path / 'none.csv'}\""))


def test_the_quality_gate_the_demo_and_the_trading_rules_share_one_band_per_symbol():
    """One rule for a board's band: the jump check (stages.data.quality), the demo generator and the
    engine's limit orders read the same answer (they had three copies that disagreed, e.g. 159948.SZ
    was 20% for the quality gate and 10% for the engine, 689xxx 20% and 10%)."""
    from stages.data.quality import limit_band, limit_bands

    symbols = ["159948.SZ", "159908.SZ", "159915.SZ", "689009.SH", "588000.SH", "300750.SZ", "510300.SH",
               "159941.SZ", "512820.SH", "159977.SZ"]
    band, _ = symbol_rules(np.array(symbols), cfg("market.preset=\"cn_etf\""))
    assert limit_bands(symbols).tolist() == band.tolist() == [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.2]
    assert [limit_band(s) for s in symbols] == band.tolist()
    assert limit_band("SPY") == 0.40  # no daily limit in the US: a split-size move


# --------------------------------------------------------------------------- volume cap
def test_volume_cap_fills_part_of_a_sell_and_keeps_the_rest_pending_and_drops_the_rest_of_a_buy():
    # 10% of 5,000 shares = 500 a session
    market = ruled(hand_market([[10.0, 10.0]] * 4), volume=[[5000, 5000]] * 4)
    config = frictionless("execution.max_volume_share=0.1", "execution.lot_size=100", "scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    hold(state, 0, 1200, 10.0)
    state.pending = [order(0, "SELL", 1200), order(1, "BUY", 800)]
    day1 = step(state, market.day(1), config)
    assert fills_of(day1) == [("A", "SELL", 500), ("B", "BUY", 500)]
    assert day1.blocked == {"volume_cap": 2}
    assert [(SYMBOLS[o.symbol], o.shares, o.note) for o in day1.unfilled] == [("B", 300, "volume_cap")]  # dropped
    assert [(SYMBOLS[o.symbol], o.side, o.shares) for o in state.pending] == [("A", "SELL", 700)]
    day2 = step(state, market.day(2), config)
    day3 = step(state, market.day(3), config)
    assert fills_of(day2) == [("A", "SELL", 500)] and fills_of(day3) == [("A", "SELL", 200)]
    assert state.shares.tolist() == [0, 500]


def test_volume_in_lots_is_converted_to_shares():
    prices = pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "symbol": ["A"], "open": [1.0], "high": [1.0],
                           "low": [1.0], "close": [1.0], "volume": [30.0]})
    lots = build_market(prices, None, cfg("execution.max_volume_share=0.5", "execution.volume_unit=\"lots\""))
    shares = build_market(prices, None, cfg("execution.max_volume_share=0.5"))
    assert lots.volume[0, 0] == 3000 and shares.volume[0, 0] == 30
    assert build_market(prices, None, cfg()).volume is None  # the cap is off by default


# --------------------------------------------------------------------------- costs by side
def test_costs_by_side_commission_minimum_stamp_duty_on_sells_and_transfer_fee():
    config = cfg("execution.commission_rate=0.0003", "execution.sell_commission_rate=0.0005",
                 "execution.commission_minimum=5", "execution.stamp_duty_rate=0.0005", "execution.transfer_fee_rate=0.00001")
    assert trade_fees(100_000.0, "BUY", config) == pytest.approx(30.0 + 1.0)
    assert trade_fees(100_000.0, "SELL", config) == pytest.approx(50.0 + 50.0 + 1.0)
    assert trade_fees(1_000.0, "BUY", config) == pytest.approx(5.0 + 0.01)  # the minimum applies to the commission
    assert trade_fees(1_000.0, "SELL", config) == pytest.approx(5.0 + 0.5 + 0.01)
    assert cfg("market.preset=\"cn_stock\"").execution.stamp_duty_rate == 0.0005
    assert cfg("market.preset=\"cn_etf\"").execution.stamp_duty_rate == 0.0
    # through the engine: cash moves by value -/+ those fees
    market = hand_market([[10.0, 10.0]] * 2)
    config = cfg("execution.sell_commission_rate=0.0005", "execution.stamp_duty_rate=0.0005",
                 "execution.transfer_fee_rate=0.00001", "execution.slippage_bps=0", "scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    state.cash = 200_000.0
    hold(state, 0, 10_000, 10.0)
    state.pending = [order(0, "SELL", 10_000), order(1, "BUY", 10_000)]
    record = step(state, market.day(1), config)
    assert [f.commission for f in record.fills] == pytest.approx([101.0, 31.0])
    assert state.cash == pytest.approx(200_000.0 + 100_000.0 - 101.0 - 100_000.0 - 31.0)


# --------------------------------------------------------------------------- settlement
def test_t_plus_one_shares_bought_in_a_session_cannot_be_sold_in_it_but_sale_cash_is_usable_at_once():
    market = ruled(hand_market([[10.0, 10.0, 10.0]] * 3), t1=[True, False, True])
    config = frictionless("execution.lot_size=100")
    state = fresh_state(3, config)
    state.cash = 0.0
    hold(state, 2, 1000, 10.0)
    day = market.day(1)
    # sell C (held from before) and buy A and B with that cash in one batch: the rotation works
    fills, unfilled = fill_orders(state, [order(2, "SELL", 1000), order(0, "BUY", 500), order(1, "BUY", 500)],
                                  day.close, day, config)
    assert [(SYMBOLS[f.symbol], f.side, f.quantity) for f in fills] == [("C", "SELL", 1000), ("A", "BUY", 500),
                                                                        ("B", "BUY", 500)]
    # a second batch in the same session: A (T+1) cannot be sold, B (T+0) can
    fills, unfilled = fill_orders(state, [order(0, "SELL", 500), order(1, "SELL", 500)], day.close, day, config)
    assert [(SYMBOLS[f.symbol], f.quantity) for f in fills] == [("B", 500)]
    assert [(SYMBOLS[o.symbol], o.shares, o.note) for o in unfilled] == [("A", 500, "t_plus_one")]
    # the next session A's shares are sellable
    fills, _ = fill_orders(state, [order(0, "SELL", 500)], market.day(2).open, market.day(2), config)
    assert [(SYMBOLS[f.symbol], f.quantity) for f in fills] == [("A", 500)]


def test_presets_switch_every_rule_on_and_the_default_switches_none():
    on = cfg("market.preset=\"cn_etf\"")
    assert on.market.price_limits and on.market.settlement == "T+1" and on.execution.max_volume_share == 0.1
    assert on.execution.volume_unit == "lots" and on.market.price_decimals == 3
    own = cfg("market.preset=\"cn_etf\"", "execution.max_volume_share=0.25", "market.price_limits=false")
    assert own.execution.max_volume_share == 0.25 and own.market.price_limits is False  # given values win
    default = cfg()
    assert default.market.preset == "none" and not default.market.price_limits and default.execution.max_volume_share is None
    assert cfg("market.preset=\"us_etf\"").market.settlement == "T+0"


# --------------------------------------------------------------------------- corporate actions
def test_a_cash_dividend_is_credited_on_the_ex_date_for_the_shares_held():
    market = ruled(hand_market([[10.0, 10.0], [9.5, 10.0]]), dividend=[[0, 0], [0.5, 0.2]])
    config = frictionless("scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    state.cash = 1000.0
    hold(state, 0, 400, 10.0)
    record = step(state, market.day(1), config)
    assert state.cash == pytest.approx(1000.0 + 400 * 0.5)  # B is not held: nothing for it
    assert record.equity == pytest.approx(1000.0 + 200.0 + 400 * 9.5)  # = the equity before the ex-date


def test_a_split_multiplies_shares_and_divides_entry_highest_and_stop_so_no_stop_fires():
    market = ruled(hand_market([[10.0], [5.1], [5.1]], atr=0.1), split=[[1.0], [2.0], [1.0]])
    config = frictionless("scoring.rebalance_frequency=1000")
    state = quiet_state(1, config)
    hold(state, 0, 1000, 10.0, highest=10.4, stop=9.5, last=10.0)
    state.pending = [order(0, "SELL", 300, "rebalance")]
    record = step(state, market.day(1), config)
    assert fills_of(record) == [("A", "SELL", 600)]  # the pending order was split too
    assert sells(record) == [] and state.shares[0] == 1400
    assert (state.entry_price[0], state.highest_close[0], state.stop_level[0]) == pytest.approx((5.0, 5.2, 5.0))
    # without the split the close of 5.1 would be far below the 9.5 stop


def test_a_reverse_split_pays_the_odd_lot_in_cash():
    market = ruled(hand_market([[10.0], [40.0]]), split=[[1.0], [0.25]])
    config = cfg("execution.lot_size=100", "scoring.rebalance_frequency=1000")
    state = quiet_state(1, config)
    state.cash = 0.0
    hold(state, 0, 1000, 10.0)
    record = step(state, market.day(1), config)
    assert state.shares[0] == 200 and state.cash == pytest.approx(50 * 40.0)  # 250 shares: 200 held, 50 in cash
    assert record.equity == pytest.approx(10_000.0)


def test_raw_prices_with_corporate_actions_end_with_the_adjusted_run_s_equity():
    """One ETF, fully invested every day (frictionless, whole shares): trading the back-adjusted
    series and trading the raw series with its dividend and split ends at the same equity (the
    adjusted series is the raw one scaled by a constant before each ex-date)."""
    rng = np.random.default_rng(7)
    n = 80
    moves = 1 + rng.normal(0.0005, 0.01, n)
    moves[30] = 1.0  # the ex-date moves by the dividend alone, so the ratio adjustment is exact
    raw = 20.0 * np.cumprod(moves)
    dividend, split = np.zeros(n), np.ones(n)
    dividend[30], split[55] = 0.8, 2.0
    raw[30:] -= 0.8
    raw[55:] /= 2.0
    # back-adjustment factor: before each ex-date multiply by (1 - D / previous close), or divide by the ratio
    factor = np.ones(n)
    factor[:30] *= 1 - 0.8 / raw[29]
    factor[:55] /= 2.0
    adjusted = raw * factor
    config = frictionless("position_sizing.max_total_exposure=1", "position_sizing.max_position_size=1",
                          "position_sizing.rebalance_threshold=0", "scoring.rebalance_frequency=1",
                          "execution.fill_price=\"close\"", "risk.atr_multiplier=1000", "risk.time_stop_days=5000",
                          "execution.initial_cash=1000000")
    equity = {}
    for name, prices, actions in [("adjusted", adjusted, {}), ("raw", raw, {"dividend": dividend[:, None], "split": split[:, None]})]:
        market = ruled(hand_market(prices[:, None], atr=0.1), **actions)
        state = fresh_state(1, config)
        for t in range(n):
            record = step(state, market.day(t), config)
        equity[name] = record.equity
    assert equity["raw"] == pytest.approx(equity["adjusted"], rel=1e-4)  # whole-share rounding only
    assert equity["raw"] != pytest.approx(1_000_000.0, rel=1e-3)


def test_corporate_actions_file_is_read_onto_the_grid_and_bad_rows_are_named(tmp_path):
    dates = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-05"])
    path = tmp_path / "corporate_actions.csv"
    path.write_text("ex_date,symbol,cash_dividend,split_ratio\n2024-01-03,A,0.5,\n2024-01-04,B,,2\n2024-01-03,ZZZ,1,\n"
                    "2023-06-01,A,9,\n")
    dividend, split = load_corporate_actions(path, dates, np.array(["A", "B"]))
    assert dividend.tolist() == [[0, 0], [0.5, 0], [0, 0]]
    assert split.tolist() == [[1, 1], [1, 1], [1, 2]]  # 01-04 is not a session: applies at the next one
    path.write_text("ex_date,symbol,cash_dividend,split_ratio\n2024-01-03,A,-1,\n")
    with pytest.raises(DataError, match="corporate_actions.csv.*line"):
        load_corporate_actions(path, dates, np.array(["A"]))
    with pytest.raises(ConfigError, match="data.corporate_actions"):
        load_corporate_actions(tmp_path / "missing.csv", dates, np.array(["A"]))


# --------------------------------------------------------------------------- raw + actions through the stages
def write_raw_demo(adjusted: Path, raw: Path, table: Path, dividend: bool) -> None:
    """The first two demo symbols' files made raw: a 2:1 split of the first and a 1:3 reverse split of
    the second on row 300, and with `dividend` a cash dividend of the second on row 500 (its prices
    drop by it); the actions go to `table`."""
    raw.mkdir()
    actions = []
    for k, path in enumerate(sorted(adjusted.glob("*.csv"))):
        frame = pd.read_csv(path, parse_dates=["date"])
        if k < 2:
            ex = frame["date"].iloc[300]
            ratio = (2.0, 1 / 3)[k]
            after = frame["date"] >= ex
            frame.loc[after, ["open", "high", "low", "close"]] /= ratio
            frame.loc[after, "volume"] *= ratio
            actions.append((ex.date(), path.stem, "", ratio))
        if k == 1 and dividend:
            ex = frame["date"].iloc[500]
            cash = round(0.03 * float(frame["close"].iloc[499]), 4)
            frame.loc[frame["date"] >= ex, ["open", "high", "low", "close"]] -= cash
            actions.append((ex.date(), path.stem, cash, ""))
        frame.to_csv(raw / path.name, index=False)
    pd.DataFrame(actions, columns=["ex_date", "symbol", "cash_dividend", "split_ratio"]).to_csv(table, index=False)


@pytest.mark.parametrize("dividend", [False, True])
def test_the_stages_on_raw_prices_with_corporate_actions_match_the_adjusted_run(small_demo_dir, tmp_path, dividend):
    """The demo universe is adjusted by construction. Make two symbols' files raw (a 2:1 split on
    one; on the other a 1:3 reverse split, plus with `dividend` a cash dividend that the raw prices
    drop by), list the actions, and run signal + trading on both: the indicators read adjusted prices
    either way, so the same symbols are traded and the equity ends the same within whole-share
    rounding (and, with a dividend, the ratio adjustment's approximation of a cash payout)."""
    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage

    files = sorted(small_demo_dir.glob("*.csv"))
    raw, table = tmp_path / "raw", tmp_path / "corporate_actions.csv"
    write_raw_demo(small_demo_dir, raw, table, dividend)
    results = {}
    for name, folder, extra in [("adjusted", small_demo_dir, []), ("raw", raw, [f'data.corporate_actions="{table}"'])]:
        config = load_config(None, ["execution.lot_size=1", *extra])
        out = tmp_path / f"out_{name}"
        run_signal_stage(config, folder, out)
        run_trading_stage(config, out, out)
        results[name] = (pd.read_parquet(out / "equity_curve.parquet"), pd.read_csv(out / "trade_log.csv", dtype={"symbol": str}))
    (curve_a, trades_a), (curve_r, trades_r) = results["adjusted"], results["raw"]
    if not dividend:  # the adjusted series is the demo's own: the very same decisions, equity to rounding
        assert trades_a[["symbol", "side", "reason"]].equals(trades_r[["symbol", "side", "reason"]])
        np.testing.assert_allclose(curve_r["equity"], curve_a["equity"], rtol=1e-4)
    else:  # the ratio adjustment of a cash dividend is the adjusted series only approximately
        assert abs(len(trades_r) - len(trades_a)) <= 0.02 * len(trades_a)
        print("final equity, adjusted vs raw + actions:", curve_a["equity"].iat[-1], curve_r["equity"].iat[-1])
        assert curve_r["equity"].iat[-1] == pytest.approx(curve_a["equity"].iat[-1], rel=1e-3)
    held = trades_r["symbol"].isin([p.stem for p in files[:2]])
    assert held.any()  # the split symbols were traded


def test_an_evening_signal_run_on_raw_prices_with_actions_carries_its_state_like_a_full_run(small_demo_dir, tmp_path):
    """The adjustment is anchored at each symbol's first row, so a daily run continues the saved
    indicator state and writes the bytes a whole-history run writes."""
    import hashlib
    import shutil

    from stages.common.config import load_config
    from stages.signal import run_signal_stage

    raw, table = tmp_path / "raw", tmp_path / "corporate_actions.csv"
    write_raw_demo(small_demo_dir, raw, table, dividend=True)
    config = load_config(None, [f'data.corporate_actions="{table}"'])
    days = sorted(pd.read_csv(next(raw.glob("*.csv")), parse_dates=["date"])["date"])
    run_signal_stage(config, raw, tmp_path / "step", as_of_date=days[-2].date())
    shutil.copytree(tmp_path / "step", tmp_path / "step_copy")
    stepped = run_signal_stage(config, raw, tmp_path / "step_copy", as_of_date=days[-1].date())
    full = run_signal_stage(config, raw, tmp_path / "full", as_of_date=days[-1].date())
    assert stepped.summary["computed"] == "from saved state" and full.summary["computed"] == "whole history"
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for name in ("signals_output.parquet", "signal_state.npz", "prices.parquet"):
        assert digest(tmp_path / "step_copy" / name) == digest(tmp_path / "full" / name), name
    signals = pd.read_parquet(tmp_path / "full" / "signals_output.parquet")
    prices = pd.read_parquet(tmp_path / "full" / "prices.parquet")
    merged = signals.merge(prices, on=["date", "symbol"], suffixes=("", "_raw"))
    assert (merged["close"] == merged["close_raw"]).all()  # raw closes, as the trading stage fills at


def test_adjustment_factors_are_anchored_at_the_first_row_and_remove_the_ex_date_gaps():
    from stages.common.corporate_actions import adjusted_prices, adjustment_factors

    prices = pd.DataFrame({"date": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"] * 2),
                           "symbol": ["A"] * 4 + ["B"] * 4, "open": 1.0, "high": 1.0, "low": 1.0,
                           "close": [10.0, 10.0, 9.5, 4.75, 5.0, 5.0, 5.0, 5.0], "volume": 100.0})
    for name in ("open", "high", "low"):
        prices[name] = prices["close"]
    actions = pd.DataFrame({"ex_date": pd.to_datetime(["2024-01-04", "2024-01-05", "2023-06-01"]),
                            "symbol": ["A", "A", "B"], "cash_dividend": [0.5, 0.0, 1.0], "split_ratio": [1.0, 2.0, 3.0]})
    factor = adjustment_factors(prices, actions)
    np.testing.assert_allclose(factor, [1, 1, 10 / 9.5, 20 / 9.5, 1, 1, 1, 1])  # B's action is before its history
    np.testing.assert_allclose(adjusted_prices(prices, factor)["close"], [10, 10, 10, 10, 5, 5, 5, 5])


def test_momentum_weights_not_summing_to_one_are_normalised_with_a_warning(caplog):
    import logging

    from stages.signal.momentum import momentum_score

    rng = np.random.default_rng(5)
    close = 10 * np.exp(np.cumsum(0.01 * rng.standard_normal((40, 2)), axis=0))
    log_ret = np.vstack([np.full((1, 2), np.nan), np.diff(np.log(close), axis=0)])
    with caplog.at_level(logging.WARNING, logger="stages.signal.momentum"):
        unnormalised = momentum_score(close, log_ret, {5: 1.0, 10: 3.0})
    assert "sum to 4, not 1: normalised to {5: 0.25, 10: 0.75}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stages.signal.momentum"):
        normalised = momentum_score(close, log_ret, {5: 0.25, 10: 0.75})
    assert caplog.text == ""
    np.testing.assert_allclose(unnormalised, normalised, rtol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- calendars
def _long(dates, symbols=("A", "B")):
    rows = [(pd.Timestamp(d), s, 10.0, 10.0, 10.0, 10.0, 1000.0) for d in dates for s in symbols]
    return pd.DataFrame(rows, columns=["date", "symbol", "open", "high", "low", "close", "volume"])


def test_with_a_calendar_the_backtest_steps_through_the_exchange_sessions():
    # 2024-10-01..07 is China's National Day holiday: XSHG has no session; 2024-09-30 and 10-08 are sessions
    prices = _long(["2024-09-27", "2024-10-08", "2024-10-09"])
    plain = build_market(prices, None, cfg())
    shanghai = build_market(prices, None, cfg("data.calendar=XSHG"))
    assert [str(d.date()) for d in plain.dates] == ["2024-09-27", "2024-10-08", "2024-10-09"]
    assert [str(d.date()) for d in shanghai.dates] == ["2024-09-27", "2024-09-30", "2024-10-08", "2024-10-09"]
    assert not shanghai.tradable[1].any()  # a session without rows: every symbol suspended that day
    config = frictionless("data.calendar=XSHG", "scoring.rebalance_frequency=1000")
    state = quiet_state(2, config)
    hold(state, 0, 100, 10.0)
    state.pending = [order(0, "SELL", 100)]
    record = step(state, shanghai.day(1), config)
    assert record.fills == [] and record.blocked == {"suspended": 1} and state.shares[0] == 100  # the sell waits


def test_a_row_on_a_day_that_is_not_a_session_is_an_error_naming_the_file(tmp_path):
    from stages.common.calendar import check_price_sessions

    prices = _long(["2024-09-30", "2024-10-01"])  # 10-01: National Day
    with pytest.raises(DataError, match=r"prices.parquet has rows on 1 day\(s\) that are not XSHG sessions.*2024-10-01"):
        build_market(prices, None, cfg("data.calendar=XSHG"))
    (tmp_path / "A.csv").write_text("date,open,high,low,close,volume\n")
    with pytest.raises(DataError, match=r"A.csv: rows on day\(s\) that are not XSHE sessions: \['2024-10-01'\]"):
        check_price_sessions(prices, "XSHE", tmp_path)
    check_price_sessions(_long(["2024-09-30", "2024-10-08"]), "XSHG", tmp_path)  # sessions only: fine


def test_a_daily_run_with_the_preset_keeps_a_limit_down_sell_pending_in_its_snapshot(tmp_path):
    """Through files: portfolio_{D-1}.json holds A and a pending SELL; D opens at limit-down, so the
    daily run lists the sell as waiting and saves it again in portfolio_{D}.json; D+1 fills it."""
    import json

    from schemas.trading import PortfolioSnapshot
    from stages.common.artifacts import stage_run
    from stages.common.config import load_config
    from stages.trading import run_trading_stage
    from stages.trading.snapshot import to_snapshot
    from tests.test_trading_rules import hand_frames

    prices, signals = hand_frames([[10.0], [10.0], [9.0], [9.5]], score=1.0, signal=0)
    prices.to_parquet(tmp_path / "prices.parquet", index=False)
    signals.to_parquet(tmp_path / "signals_output.parquet", index=False)
    config = load_config(None, ["market.preset=cn_etf", "scoring.rebalance_frequency=1000"])
    market = build_market(prices, signals, config)
    state = quiet_state(1, config)
    state.day_index = 2
    hold(state, 0, 1000, 10.0)
    state.pending = [replace(order(0, "SELL", 1000, "atr_stop"), decided=market.dates[1])]
    with stage_run("trading", tmp_path) as run:
        run.write_json(to_snapshot(state, market, 1, config, "signals"), f"portfolio_{market.dates[1].date()}.json",
                       PortfolioSnapshot)
    day2 = run_trading_stage(config, tmp_path, tmp_path, as_of_date=market.dates[2].date())
    assert day2.summary["fills_today"] == 0 and day2.summary["waiting_sells"] == ["SELL 1000 A (limit_down)"]
    saved = json.loads((tmp_path / f"portfolio_{market.dates[2].date()}.json").read_text())
    assert [(o["symbol"], o["side"], o["shares"], o["reason"]) for o in saved["pending_orders"]] == [("A", "SELL", 1000, "atr_stop")]
    day3 = run_trading_stage(config, tmp_path, tmp_path, as_of_date=market.dates[3].date())
    assert day3.summary["fills_today"] == 1 and day3.summary["positions"] == 0


def test_the_volume_cap_is_per_session_across_batches():
    market = ruled(hand_market([[10.0]] * 2), volume=[[5000]] * 2)
    config = frictionless("execution.max_volume_share=0.1", "execution.lot_size=100")
    state = quiet_state(1, config)
    hold(state, 0, 1200, 10.0)
    day = market.day(1)
    first, _ = fill_orders(state, [order(0, "SELL", 300)], day.open, day, config)
    second, rest = fill_orders(state, [order(0, "SELL", 900)], day.open, day, config)
    assert [f.quantity for f in first + second] == [300, 200]  # 500 a session in all
    assert [(o.shares, o.note) for o in rest] == [(700, "volume_cap")]
