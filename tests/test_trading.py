"""Trading engine: each rule on small hand-made cases, accounting against an independent
calculation, backtest/daily parity, snapshots and external weights."""
from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from schemas.trading import OrdersSchema
from stages.common.artifacts import read_artifact
from stages.common.config import load_config
from stages.common.errors import DataError, SnapshotError
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage
from stages.trading.backtest import run_backtest
from stages.trading.engine import PortfolioState, affordable_shares, step
from stages.trading.market import Market
from stages.trading.rules import (
    Position,
    commission,
    lot_shares,
    ranked_with_inertia,
    select_targets,
    target_weights,
    time_stop_hit,
    trailing_stop_level,
)


def make_market(close, *, open_=None, score=None, signal=None, cluster=None, atr=None, vol=None, breaker=None) -> Market:
    close = np.asarray(close, dtype=float)
    n, m = close.shape
    full = lambda x, default: np.asarray(x, dtype=float) if x is not None else np.full((n, m), default)  # noqa: E731
    return Market(
        dates=pd.bdate_range("2024-01-01", periods=n), symbols=np.array([chr(65 + i) for i in range(m)]),
        open=full(open_, np.nan) if open_ is not None else close.copy(), close=close, tradable=~np.isnan(close),
        trend_signal=full(signal, 1), signal_strength=np.full((n, m), 0.5), atr=full(atr, 0.01),
        volatility=full(vol, 0.2), momentum_score=full(score, 1.0), cluster=full(cluster, -1),
        breaker_on=np.zeros(n, dtype=bool) if breaker is None else np.asarray(breaker), market_drawdown=np.zeros(n),
    )


def cfg(*overrides):
    return load_config(None, ["execution.commission_minimum=0", "execution.slippage_bps=0", "execution.commission_rate=0",
                              "execution.lot_size=1", *overrides])


def _select(scores, held, n, m, clusters=None, cap=2, max_positions=20, signal=None, breaker=False):
    config = load_config(None, [f"scoring.buy_top_n={n}", f"scoring.hold_until_rank={m}", "scoring.inertia_bonus=0",
                                f"clustering.max_positions_per_cluster={cap}", f"position_sizing.max_positions={max_positions}"])
    score = np.array(scores, dtype=float)
    held_mask = np.zeros(len(score), dtype=bool)
    held_mask[list(held)] = True
    order, ranks = ranked_with_inertia(score, held_mask, 0.0)
    k = len(score)
    return select_targets(order, ranks, set(held), np.ones(k) if signal is None else np.array(signal),
                          np.full(k, -1.0) if clusters is None else np.array(clusters, float), np.ones(k, bool), breaker, config)


# --------------------------------------------------------------------------- selection (REFERENCE.md cases)
def test_buffer_zone_holds_rank_3_when_hold_until_3_and_sells_rank_4():
    # ranks A > B > C > D; holdings {C, D}; N=2, M=3 -> buy A, B; hold C; sell D
    sel = _select([4, 3, 2, 1], held={2, 3}, n=2, m=3)
    assert sel.buy == [0, 1] and sel.keep == [2] and sel.sell == {3: "rank_out_of_buffer"}


def test_cluster_cap_prefers_the_higher_score_and_fills_with_another_cluster():
    # A (2.0, c0), B (1.0, c0, held), C (0.5, c1); one per cluster, N=2, M=3, max 2 -> {A, C}; B sold
    sel = _select([2.0, 1.0, 0.5], held={1}, n=2, m=3, clusters=[0, 0, 1], cap=1, max_positions=2)
    assert sorted(sel.keep + sel.buy) == [0, 2] and sel.sell == {1: "cluster_cap"}


def test_no_buy_without_trend_signal_or_when_breaker_is_on():
    assert _select([3, 2, 1], held=set(), n=2, m=3, signal=[0, 1, 1]).buy == [1]
    sel = _select([3, 2, 1], held={2}, n=2, m=3, breaker=True)
    assert sel.buy == [] and sel.keep == [2]


def test_additive_inertia_lifts_a_held_symbol_with_negative_score():
    score = np.array([-0.50, -0.52, -0.40])
    held = np.array([False, True, False])
    _, ranks = ranked_with_inertia(score, held, 0.05)
    assert ranks.tolist() == [3.0, 2.0, 1.0]  # -0.52 + 0.05 = -0.47 beats -0.50


def test_stop_overrides_rank():
    # holdings {A, B, C}, B's stop is hit, N=3, M=4 -> sell B (atr_stop), keep A and C
    close = np.array([[10, 10, 10], [10.1, 8.0, 10.2]])
    market = make_market(close, score=[[3, 2, 1]] * 2, atr=[[0.1] * 3] * 2)
    config = cfg("scoring.buy_top_n=3", "scoring.hold_until_rank=4", "scoring.rebalance_frequency=1")
    state = PortfolioState(cash=1000.0, holdings={i: Position(10, date(2024, 1, 1), 10.0, 10.0, 9.5, 10.0, 1, -1) for i in range(3)})
    record = step(state, market, 1, config)
    sells = [(o.symbol, o.reason) for o in record.orders if o.side == "SELL"]
    assert sells == [(1, "atr_stop")]


def test_trailing_stop_never_decreases():
    pos = Position(100, date(2024, 1, 1), 10.0, 12.0, 0.0, 12.0, 5, -1)
    pos.stop_level = trailing_stop_level(pos, 0.5, 2.0)
    assert pos.stop_level == 11.0
    pos.stop_level = trailing_stop_level(pos, 2.0, 2.0)  # volatility jumps: stop would fall to 8
    assert pos.stop_level == 11.0


def test_time_stop():
    config = load_config(None, ["risk.time_stop_days=60", "risk.time_stop_threshold=-0.05"])
    pos = Position(100, date(2024, 1, 1), 10.0, 10.0, 0.0, 9.4, 60, -1)
    assert time_stop_hit(pos, 9.4, config)
    assert not time_stop_hit(pos, 9.6, config)
    pos.days_held = 59
    assert not time_stop_hit(pos, 9.4, config)


# --------------------------------------------------------------------------- sizing and costs
def test_inverse_volatility_weights_with_caps_applied_once():
    config = load_config(None, ["position_sizing.max_position_size=0.5", "position_sizing.max_cluster_size=1.0",
                                "position_sizing.max_total_exposure=0.9"])
    w = target_weights([0, 1], np.array([0.1, 0.2]), np.array([-1.0, -1.0]), config)
    assert w[0] == pytest.approx(0.5) and w[1] == pytest.approx(0.3)  # 0.6 capped to 0.5; exposure not applied twice
    config = load_config(None, ["position_sizing.max_position_size=1", "position_sizing.max_cluster_size=0.3"])
    w = target_weights([0, 1, 2], np.array([0.2, 0.2, 0.2]), np.array([0.0, 0.0, 1.0]), config)
    assert w[0] + w[1] == pytest.approx(0.3) and w[2] == pytest.approx(0.3)  # 0.95/3 capped by its cluster


def test_lot_rounding_and_minimum_commission():
    assert lot_shares(10_550, 10.0, 100) == 1000
    assert lot_shares(999, 10.0, 100) == 0
    config = load_config()
    assert commission(1_000, config) == 5.0  # 0.03% of 1,000 = 0.3 -> minimum 5
    assert commission(100_000, config) == pytest.approx(30.0)


def test_cash_never_goes_negative_buys_shrink_to_what_cash_allows():
    config = load_config()
    shares = affordable_shares(10_000, 10.0, 50_000.0, config)
    assert shares == 4900 and shares * 10.0 + commission(shares * 10.0, config) <= 50_000
    close = np.array([[10.0, 10.0], [10.0, 10.0], [12.0, 12.0]])
    market = make_market(close, score=[[2, 1]] * 3)
    state = PortfolioState(cash=30_000.0)
    from stages.trading.engine import Order

    state.pending = [Order(0, "BUY", 2000, "new_entry", 0.5, 1, 0.5, 10.0), Order(1, "BUY", 2000, "new_entry", 0.5, 1, 0.5, 10.0)]
    step(state, market, 1, load_config(None, ["scoring.rebalance_frequency=1000"]))
    assert state.cash >= 0 and sum(p.shares for p in state.holdings.values()) <= 3000


def test_suspended_symbol_gets_no_fill_and_keeps_its_last_close():
    close = np.array([[10.0, 5.0], [np.nan, 5.0], [11.0, 5.0]])
    market = make_market(close)
    state = PortfolioState(cash=0.0, holdings={0: Position(100, date(2024, 1, 1), 10.0, 10.0, 0.0, 10.0, 1, -1)})
    from stages.trading.engine import Order

    state.pending = [Order(0, "SELL", 100, "atr_stop", 0.5, 1.0, 0.0, 10.0)]
    record = step(state, market, 1, cfg("scoring.rebalance_frequency=1000"))
    assert record.fills == [] and record.equity == pytest.approx(1000.0) and state.holdings[0].shares == 100


# --------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="module")
def demo_run(small_demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trading_run")
    config = load_config()
    run_signal_stage(config, small_demo_dir, out)
    run_trading_stage(config, out, out)
    return out, config


def test_accounting_matches_an_independent_calculation(demo_run):
    """Rebuild cash and holdings from trade_log alone and value them at each close."""
    out, config = demo_run
    trades = pd.read_csv(out / "trade_log.csv", parse_dates=["date"], dtype={"symbol": str})
    curve = pd.read_parquet(out / "equity_curve.parquet")
    prices = pd.read_parquet(out / "prices.parquet")
    close = prices.pivot(index="date", columns="symbol", values="close").ffill()
    assert len(trades) > 20
    signed = np.where(trades["side"] == "BUY", 1, -1)
    cash_flow = -(signed * trades["quantity"] * trades["price"]) - trades["commission"]
    cash = config.execution.initial_cash + cash_flow.groupby(trades["date"]).sum().reindex(close.index, fill_value=0).cumsum()
    shares = (pd.Series(signed * trades["quantity"]).groupby([trades["date"], trades["symbol"]]).sum()
              .unstack(fill_value=0).reindex(index=close.index, columns=close.columns, fill_value=0).cumsum())
    assert (shares >= 0).all().all() and (cash >= -1e-6).all()
    equity = cash + (shares * close.fillna(0)).sum(axis=1)
    np.testing.assert_allclose(curve["equity"].to_numpy(), equity.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(curve["cash"].to_numpy(), cash.to_numpy(), rtol=1e-8, atol=1e-6)
    # costs: commission max(rate x value, min) and slippage bps on every fill
    value = trades["quantity"] * trades["price"]
    np.testing.assert_allclose(trades["commission"], np.maximum(value * config.execution.commission_rate,
                                                                config.execution.commission_minimum), rtol=1e-12)
    assert (trades["quantity"] % config.execution.lot_size == 0).all()
    alloc = pd.read_csv(out / "allocation_history.csv")
    np.testing.assert_allclose(alloc.drop(columns="date").sum(axis=1), 100.0, atol=1e-6)


def test_daily_run_from_each_snapshot_reproduces_the_backtest_orders(demo_run, tmp_path):
    out, config = demo_run
    prices = pd.read_parquet(out / "prices.parquet")
    dates = sorted(prices["date"].unique())
    start = len(dates) - 25
    # backtest up to day start-1 gives the first snapshot; then chain daily runs through files
    day0 = pd.Timestamp(dates[start - 1]).date()
    from stages.trading.market import build_market

    signals = pd.read_parquet(out / "signals_output.parquet")
    market = build_market(prices, signals, config)
    full = run_backtest(market, config)
    partial = run_backtest(market, config, end=start)
    from stages.trading.backtest import to_snapshot
    from stages.common.artifacts import stage_run
    from schemas.trading import PortfolioSnapshot

    daily = tmp_path / "daily"
    with stage_run("trading", daily) as run:
        run.write_json(to_snapshot(partial.state, market, start - 1, config), f"portfolio_{day0}.json", PortfolioSnapshot)
    for name in ("prices.parquet", "signals_output.parquet"):
        (daily / name).write_bytes((out / name).read_bytes())
    for t in range(start, len(dates)):
        day = pd.Timestamp(dates[t]).date()
        run_trading_stage(config, daily, daily, as_of_date=day)
        got = read_artifact(daily / f"orders_{day}.csv", OrdersSchema, verify_hash=False)
        want = full.orders[full.orders["date"] == pd.Timestamp(day)].drop(columns="date").reset_index(drop=True)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.astype(got.dtypes.to_dict()), check_exact=False, rtol=1e-12)
    last = json.loads((daily / f"portfolio_{pd.Timestamp(dates[-1]).date()}.json").read_text())
    assert last["cash"] == pytest.approx(full.state.cash, rel=1e-12)


def test_snapshot_errors(demo_run, tmp_path):
    out, config = demo_run
    prices = pd.read_parquet(out / "prices.parquet")
    day = pd.Timestamp(sorted(prices["date"].unique())[-1]).date()
    with pytest.raises(SnapshotError, match="--fresh"):
        run_trading_stage(config, out, tmp_path, as_of_date=day)
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"as_of_date": "2020-01-01", "cash": ')
    with pytest.raises(SnapshotError, match="damaged"):
        run_trading_stage(config, out, tmp_path, as_of_date=day, portfolio=damaged)
    snapshot = json.loads(next(out.glob("portfolio_*.json")).read_text())
    wrong_day = tmp_path / "wrong.json"
    wrong_day.write_text(json.dumps(snapshot))
    with pytest.raises(SnapshotError, match="trading day before"):
        run_trading_stage(config, out, tmp_path, as_of_date=day, portfolio=wrong_day)
    snapshot["metadata"]["trading_config_hash"] = "0" * 64
    prev = pd.Timestamp(sorted(prices["date"].unique())[-2]).date()
    snapshot["as_of_date"] = str(prev)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(snapshot))
    with pytest.raises(SnapshotError, match="different trading settings"):
        run_trading_stage(config, out, tmp_path, as_of_date=day, portfolio=other)
    fresh = run_trading_stage(config, out, tmp_path, as_of_date=day, fresh=True)
    assert (tmp_path / f"portfolio_{day}.json").exists() and fresh.summary["as_of_date"] == str(day)


def test_dry_run_writes_nothing(demo_run, tmp_path, capsys):
    out, config = demo_run
    from flows.cli import main

    before = sorted(p.name for p in out.iterdir())
    assert main(["trade", "--out", str(out), "--dry-run"]) == 0
    assert sorted(p.name for p in out.iterdir()) == before
    assert "dry run" in capsys.readouterr().out


# --------------------------------------------------------------------------- external weights
def _weights_market():
    close = np.array([[10.0, 20.0], [10.0, 20.0], [11.0, 19.0], [12.0, 18.0]])
    return make_market(close)


@pytest.mark.parametrize(
    "text, message",
    [
        ("date,A,Z\n2024-01-01,0.5,0.2\n", "not in prices"),
        ("date,A,B\n2024-01-06,0.5,0.2\n", "not trading days"),
        ("date,A,B\n2024-01-01,nan,0.2\n", "not a finite number"),
        ("date,A,B\n2024-01-01,1.5,0.2\n", "outside [0, 1]"),
        ("date,A,B\n2024-01-01,-0.1,0.2\n", "outside [0, 1]"),
        ("date,A,B\n2024-01-01,0.7,0.6\n", "sum to"),
        ("A,B\n0.5,0.5\n", "date column"),
        ("date,A,B\n2024-01-01,0.5,0.2\n2024-01-01,0.5,0.2\n", "duplicate dates"),
    ],
)
def test_bad_weights_files(tmp_path, text, message):
    from stages.trading.weights import load_weights

    path = tmp_path / "w.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_weights(path, _weights_market())
    assert message in str(err.value) and "w.csv" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_weights(tmp_path / "missing.csv", _weights_market())


def test_weights_mode_rebalances_to_targets(tmp_path):
    from stages.trading.weights import load_weights

    path = tmp_path / "w.csv"
    path.write_text("date,A,B\n2024-01-01,0.5,0.25\n2024-01-03,0.0,0.5\n")
    market = _weights_market()
    config = cfg("execution.initial_cash=10000")
    result = run_backtest(market, config, weights=load_weights(path, market))
    log = result.trade_log
    assert log.iloc[0]["quantity"] == 500 and log.iloc[1]["quantity"] == 125  # filled at day-2 open (10, 20)
    assert set(log["reason"]) == {"target_weight"}
    last = result.positions[result.positions["date"] == market.dates[-1]]
    assert last["symbol"].tolist() == ["B"]


def _in_memory_parity(market, config) -> int:
    """For every day: snapshot (through JSON) -> one daily step == the backtest's orders that day."""
    from schemas.trading import PortfolioSnapshot
    from stages.trading.backtest import from_snapshot, order_row, to_snapshot
    from stages.trading.engine import fresh_state

    state = fresh_state(config)
    compared = 0
    for t in range(len(market.dates)):
        if t > 0:
            text = to_snapshot(state, market, t - 1, config).model_dump_json()
            resumed = from_snapshot(PortfolioSnapshot.model_validate_json(text), market, config, "memory")
            daily = step(resumed, market, t, config)
        record = step(state, market, t, config)
        if t > 0:
            assert [order_row(o, market, t) for o in daily.orders] == [order_row(o, market, t) for o in record.orders], t
            assert resumed.cash == state.cash
            compared += len(record.orders)
    return compared


def test_daily_step_equals_backtest_every_day_over_years_of_demo_data(demo_data_dir, tmp_path):
    from stages.trading.market import build_market

    config = load_config()
    run_signal_stage(config, demo_data_dir, tmp_path)
    market = build_market(pd.read_parquet(tmp_path / "prices.parquet"), pd.read_parquet(tmp_path / "signals_output.parquet"), config)
    assert _in_memory_parity(market, config) > 500


def test_daily_step_equals_backtest_every_day_on_real_etfs(tmp_path):
    from tests.conftest import shared_data_dir
    from stages.trading.market import build_market

    folder = shared_data_dir("cn_etf")
    config = load_config()
    run_signal_stage(config, folder, tmp_path)
    market = build_market(pd.read_parquet(tmp_path / "prices.parquet"), pd.read_parquet(tmp_path / "signals_output.parquet"), config)
    assert _in_memory_parity(market, config) > 100
