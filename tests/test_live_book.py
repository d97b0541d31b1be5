"""The executed book is the book: chained daily runs with the paper broker settle at the next open
through the engine, resume from the execution database, reconcile symbol by symbol, and keep a
live track record; with a permissive profile the paper fills are the backtest's fills."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.live import LiveEquitySchema, LiveFillsSchema, ReconcileSchema
from schemas.trading import OrdersSchema, PortfolioSnapshot
from stages.common.artifacts import read_artifact, read_json_artifact
from stages.common.config import load_config
from stages.common.errors import DataError
from stages.signal import run_signal_stage
from stages.trading import run_trading_stage
from stages.trading.backtest import fold
from stages.trading.book import execution_db
from stages.trading.execution.brokers import PaperBroker
from stages.trading.execution.cli import load_profile
from stages.trading.execution.executor import execute_orders
from stages.trading.execution.notify import AuditLog
from stages.trading.execution.store import ExecutionStore
from stages.trading.market import build_market
from tests.conftest import shared_data_dir

SESSIONS = 20
PERMISSIVE = {"name": "permissive", "max_position_size": 1.0, "max_drawdown": 0.99, "circuit_breaker": 0.99, "stop_loss": 0.99,
              "max_deployment": 1.0, "cash_buffer_min": 0.0, "cash_buffer_max": 1.0, "max_positions": 1000,
              "max_correlation": 1.0, "max_correlated_positions": 1000, "min_quality": 0.0, "scale_by_quality": False}


@pytest.fixture(scope="module")
def demo_signals(small_demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("live_book_inputs")
    config = load_config()
    run_signal_stage(config, small_demo_dir, out)
    return out, config


def _folder(src: Path, tmp: Path) -> Path:
    for name in ("prices.parquet", "signals_output.parquet", "manifest.json"):
        shutil.copy(src / name, tmp / name)
    return tmp


def paper_month(folder: Path, config, profile, start: int, sessions: int = SESSIONS, **daily):
    """Daily runs chained over `sessions` sessions after `start` (which starts from cash), each day's
    orders executed on the paper broker under `profile`."""
    market = build_market(pd.read_parquet(folder / "prices.parquet"), pd.read_parquet(folder / "signals_output.parquet"), config)
    days = [market.dates[t].date() for t in range(start, start + sessions + 1)]
    store = ExecutionStore(execution_db(folder), config.execution.initial_cash)
    audit = AuditLog(folder / "execution" / "audit.jsonl")
    summaries = []
    for k, day in enumerate(days):
        run_trading_stage(config, folder, folder, as_of_date=day, fresh=(k == 0), **daily)
        orders = read_artifact(folder / f"orders_{day}.csv", OrdersSchema)
        summaries.append(execute_orders(orders, store=store, broker=PaperBroker(store, config), profile=profile, config=config,
                                        as_of=day, prices=pd.read_parquet(folder / "prices.parquet"), audit=audit))
    return market, days, store, summaries


def test_permissive_paper_month_equals_the_backtest_and_the_books_agree(demo_signals, tmp_path):
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    start = 130
    market, days, store, summaries = paper_month(folder, config, profile, start)
    assert sum(s.rejected for s in summaries) == 0 and not any(s.resized for s in summaries)

    backtest = fold(market, config, start=start, end=start + SESSIONS + 1).trade_log
    live = pd.read_parquet(folder / "live_fills.parquet")
    assert len(backtest) > 10 and set(live["source"]) == {"executed"}
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest[cols].reset_index(drop=True), check_dtype=False)

    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)
    for day in days[1:]:
        rec = read_artifact(folder / f"reconcile_{day}.csv", ReconcileSchema)
        assert (rec["share_drift"] == 0).all() and rec["cash_difference"].abs().max() < 1e-6 and (rec["reason"].isin(["match", "filled in neither book: no price at the open"])).all(), day
    curve = read_artifact(folder / "live_equity.parquet", LiveEquitySchema)
    assert list(curve["date"].dt.date) == days and curve["drift"].max() < 1e-6
    backtest_curve = fold(market, config, start=start, end=start + SESSIONS + 1).equity_curve
    np.testing.assert_allclose(curve["equity"].to_numpy(), backtest_curve["equity"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(curve["daily_return"], curve["model_return"], atol=1e-15)  # no tracking difference


def test_the_report_shows_the_live_section_and_every_live_artifact_validates(demo_signals, tmp_path, capsys):
    from flows.cli import main
    from stages.reporting import run_reporting_stage

    src, config = demo_signals
    folder = _folder(src, tmp_path)
    paper_month(folder, config, load_profile("balanced"), 130, sessions=5)
    run_trading_stage(config, folder, folder)  # the backtest the report compares with
    run_reporting_stage(config, folder, folder)
    page = (folder / "report.html").read_text()
    assert '<section id="live">' in page and "Live track record" in page and "Tracking difference" in page
    assert "Realised costs" in page and " bp)" in page and "live-equity" in page
    assert "backtest (rebased to the live start)" in page  # the backtest covers the live days here
    live_files = sorted(p.name for p in folder.iterdir() if p.name.startswith(("live_", "reconcile_")))
    assert len(live_files) == 3 + 5
    code = main(["validate", *(str(folder / name) for name in live_files)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert all(name in out for name in live_files)


def test_a_resizing_profile_drifts_is_reported_and_the_next_day_starts_from_the_executed_book(demo_signals, tmp_path,
                                                                                              monkeypatch):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import threading

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TRENDFLOW_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    try:
        market, days, store, summaries = paper_month(folder, config, load_profile("conservative"), 130, sessions=8)
    finally:
        server.shutdown()
        server.server_close()
    drift_alerts = [p for p in received if p["level"] == "WARNING" and "the executed book drifted" in p["text"]]
    assert drift_alerts and "reconcile_" in drift_alerts[0]["text"]
    resized_days = [d for d, s in zip(days, summaries) if s.resized or s.rejected]
    assert resized_days, "the conservative profile should cut some of the model's orders"
    decided = resized_days[0]
    settled = days[days.index(decided) + 1]
    rec = read_artifact(folder / f"reconcile_{settled}.csv", ReconcileSchema)
    cut = rec[rec["reason"].str.contains("by the risk profile") & (rec["model_qty"] > 0)]
    assert len(cut) and (cut["filled_qty"] < cut["model_qty"]).all() and (cut["share_drift"] != 0).all()
    assert rec.loc[rec["side"] == "CASH", "cash_difference"].iat[0] > 0  # bought less: more cash than the model
    snap = read_json_artifact(folder / f"portfolio_{settled}.json", PortfolioSnapshot)
    executed = {r.symbol: r.executed_shares for r in rec.itertuples() if r.side != "CASH" and r.executed_shares}
    for symbol, shares in executed.items():
        assert snap.holdings[symbol].shares == shares  # the model now holds what was executed
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)
    assert read_artifact(folder / "live_equity.parquet", LiveEquitySchema)["drift"].max() > 0
    for decided, settled, summary in zip(days, days[1:], summaries):
        rec = read_artifact(folder / f"reconcile_{settled}.csv", ReconcileSchema)
        traded = rec[rec["side"].isin(["BUY", "SELL"])]
        if not summary.resized and not summary.rejected:  # the profile passed every order: no drift at all
            assert (rec["share_drift"] == 0).all() and rec["cash_difference"].abs().max() < 1e-6, settled
        else:  # every symbol that drifted says why
            assert (traded.loc[traded["share_drift"] != 0, "reason"] != "match").all(), settled


def test_rerunning_a_day_replays_its_settlement_byte_for_byte(demo_signals, tmp_path):
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    market, days, store, _ = paper_month(folder, config, load_profile("balanced"), 130, sessions=3)
    names = [f"reconcile_{days[-1]}.csv", f"portfolio_{days[-1]}.json", "live_fills.parquet", "live_equity.parquet"]
    before = {n: (folder / n).read_bytes() for n in names}
    book = (store.cash(), store.positions())
    run_trading_stage(config, folder, folder, as_of_date=days[-1])
    assert {n: (folder / n).read_bytes() for n in names} == before
    assert (store.cash(), store.positions()) == book
    fills = read_artifact(folder / "live_fills.parquet", LiveFillsSchema)
    assert len(fills) and fills["date"].is_monotonic_increasing and fills["date"].max().date() <= days[-1]
    assert list(read_artifact(folder / "live_equity.parquet", LiveEquitySchema)["date"].dt.date) == days


def test_a_broker_position_the_model_does_not_know_is_an_error_until_accepted(demo_signals, tmp_path):
    from flows.cli import main

    src, config = demo_signals
    folder = _folder(src, tmp_path)
    market, days, store, _ = paper_month(folder, config, load_profile("balanced"), 130, sessions=1)
    stranger = next(s for s in market.symbols if s not in store.positions())
    store.set_book({**{s: (n, 0.0) for s, n in store.positions().items()}, stranger: (300, 3000.0)}, store.cash())
    nxt = market.dates[market.index_of(days[-1]) + 1].date()
    assert main(["trade", "--out", str(folder), "--as-of-date", str(nxt)]) == 2
    assert not (folder / f"portfolio_{nxt}.json").exists()
    assert main(["reconcile", "--out", str(folder), "--accept", stranger, "--by", "alice"]) == 0
    assert main(["trade", "--out", str(folder), "--as-of-date", str(nxt)]) == 0
    snap = read_json_artifact(folder / f"portfolio_{nxt}.json", PortfolioSnapshot)
    assert stranger in snap.holdings
    events = [json.loads(line) for line in (folder / "execution" / "audit.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "position_accepted" and e["symbol"] == stranger and e["by"] == "alice" for e in events)


def _write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("market_name, start_date", [("cn_etf", "2023-06-01"), ("us_etf", "2019-06-01")])
def test_real_etfs_twenty_chained_paper_sessions_equal_the_backtest_and_the_books_agree(market_name, start_date, tmp_path):
    data = shared_data_dir(market_name)
    config = load_config(None, [f"data.start_date={start_date}"])
    run_signal_stage(config, data, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    start = 160  # past every warm-up, on a rebalance-day cycle of its own
    market, days, store, summaries = paper_month(tmp_path, config, profile, start)
    assert sum(s.rejected for s in summaries) == 0 and not any(s.resized for s in summaries)
    backtest = fold(market, config, start=start, end=start + SESSIONS + 1)
    live = pd.read_parquet(tmp_path / "live_fills.parquet")
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    assert len(backtest.trade_log) >= 5
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest.trade_log[cols].reset_index(drop=True),
                                  check_dtype=False)
    last = read_json_artifact(tmp_path / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)
    for day in days[1:]:
        rec = read_artifact(tmp_path / f"reconcile_{day}.csv", ReconcileSchema)
        assert (rec["share_drift"] == 0).all() and rec["cash_difference"].abs().max() < 1e-6, day


class FillsLikeTheModel:
    """A broker stand-in (the object seam of `Broker`) that is not the paper broker: it fills every order
    at the next session's open with the engine's slippage and commission, as a real broker would
    have, and the fills land in the database through `execute_orders` (as IBKR's do)."""

    name = "ibkr"

    def __init__(self, market, day, config):
        self.market, self.t, self.config = market, market.index_of(day) + 1, config

    def submit(self, order):
        from stages.trading.execution.brokers import BrokerFill, BrokerReport
        from stages.trading.rules import commission, slipped_price

        i = self.market.symbol_index()[order.symbol]
        if not self.market.tradable[self.t, i]:
            return BrokerReport("CANCELLED", None, "no trading in the symbol today")
        price = float(slipped_price(self.market.open[self.t, i], order.side, self.config))
        fee = float(commission(order.shares * price, self.config))
        return BrokerReport("FILLED", BrokerFill(order.client_order_id, order.shares, price, fee), "Filled")


def test_a_real_brokers_fills_are_the_next_days_executed_book(demo_signals, tmp_path):
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    market = build_market(pd.read_parquet(folder / "prices.parquet"), pd.read_parquet(folder / "signals_output.parquet"), config)
    days = [market.dates[t].date() for t in range(130, 136)]
    store = ExecutionStore(execution_db(folder), config.execution.initial_cash)
    for k, day in enumerate(days):
        run_trading_stage(config, folder, folder, as_of_date=day, fresh=(k == 0))
        if k < len(days) - 1:
            orders = read_artifact(folder / f"orders_{day}.csv", OrdersSchema)
            execute_orders(orders, store=store, broker=FillsLikeTheModel(market, day, config), profile=profile, config=config,
                           as_of=day, prices=pd.read_parquet(folder / "prices.parquet"))
    key = ["date", "side", "symbol"]  # a broker fills in the batch's quality order, the engine in rank order
    backtest = fold(market, config, start=130, end=136).trade_log.sort_values(key, kind="stable")
    live = pd.read_parquet(folder / "live_fills.parquet").sort_values(key, kind="stable")
    cols = ["date", "symbol", "side", "quantity"]
    assert len(live) > 3
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest[cols].reset_index(drop=True), check_dtype=False)
    np.testing.assert_allclose(live["price"], backtest["price"], rtol=1e-12)
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)
    for day in days[1:]:
        rec = read_artifact(folder / f"reconcile_{day}.csv", ReconcileSchema)
        assert (rec["share_drift"] == 0).all() and rec["cash_difference"].abs().max() < 1e-6, day
        traded = rec[rec["side"].isin(["BUY", "SELL"])]
        assert (traded["filled_qty"] == traded["model_qty"]).all() and (traded["sent_qty"] >= traded["filled_qty"]).all()


def test_paper_orders_that_missed_their_session_expire_instead_of_filling_late(demo_signals, tmp_path):
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    market = build_market(pd.read_parquet(folder / "prices.parquet"), pd.read_parquet(folder / "signals_output.parquet"), config)
    d0, d1, d2 = (market.dates[t].date() for t in (130, 131, 132))
    store = ExecutionStore(execution_db(folder), config.execution.initial_cash)
    run_trading_stage(config, folder, folder, as_of_date=d0, fresh=True)
    run_trading_stage(config, folder, folder, as_of_date=d1)  # the orders of d0 were never sent: nothing to settle
    late = read_artifact(folder / f"orders_{d0}.csv", OrdersSchema)
    assert len(late)
    for day in (d0, d1):  # d0's orders sent a session late, then d1's
        execute_orders(read_artifact(folder / f"orders_{day}.csv", OrdersSchema), store=store, broker=PaperBroker(store, config),
                       profile=profile, config=config, as_of=day)
    run_trading_stage(config, folder, folder, as_of_date=d2)
    statuses = {r["as_of_date"]: set() for r in store.conn.execute("SELECT as_of_date FROM orders")}
    for r in store.conn.execute("SELECT as_of_date, status FROM orders"):
        statuses[r["as_of_date"]].add(r["status"])
    assert statuses[str(d0)] == {"EXPIRED"}
    assert "OPEN" not in statuses.get(str(d1), set())


def test_drift_counts_a_cut_buy_once_and_adds_the_equity_gap():
    from stages.trading.book import book_drift

    frame = pd.DataFrame({"side": ["BUY", "SELL", "CASH"], "drift_value": [-46_000.0, 0.0, 46_250.0],
                          "cash_difference": [46_250.0, 0.0, 46_250.0]})
    # 460 lots not bought (worth 46,000 at the close) and 46,250 of cash kept: the books differ by
    # 46,000 of holdings, and the executed book is worth 250 more
    assert book_drift(frame) == pytest.approx(46_000.0 + 250.0)
    assert book_drift(frame.assign(drift_value=[0.0, 0.0, 0.0], cash_difference=[0.0, 0.0, 0.0])) == 0.0


def test_a_dry_run_shows_the_day_without_settling_anything(demo_signals, tmp_path):
    src, config = demo_signals
    folder = _folder(src, tmp_path)
    market, days, store, summaries = paper_month(folder, config, load_profile("balanced"), 130, sessions=0)
    assert summaries[0].working > 0
    nxt = market.dates[market.index_of(days[0]) + 1].date()
    db_before = execution_db(folder).read_bytes()
    files_before = sorted(p.name for p in folder.iterdir())
    run_trading_stage(config, folder, folder, as_of_date=nxt, dry_run=True)
    assert sorted(p.name for p in folder.iterdir()) == files_before
    assert store.settlement(str(nxt)) is None and len(store.working_orders("paper")) == summaries[0].working
    assert execution_db(folder).read_bytes() == db_before


def test_paper_sessions_over_splits_and_a_dividend_still_equal_the_backtest(small_demo_dir, tmp_path):
    """Raw prices with corporate actions: a 2:1 split, a 1:3 reverse split (row 300) and a cash
    dividend (row 303) while held. The settlement applies them before the open as the day step does,
    to the paper book in the database too, so the paper run stays the backtest."""
    from tests.test_trading_market import write_raw_demo

    raw, table = tmp_path / "raw", tmp_path / "corporate_actions.csv"
    write_raw_demo(small_demo_dir, raw, table, dividend=False)
    first = sorted(raw.glob("*.csv"))[0]
    ex = pd.read_csv(first, parse_dates=["date"])["date"].iloc[303].date()
    actions = pd.read_csv(table)
    actions.loc[len(actions)] = [str(ex), first.stem, 0.05, None]
    actions.to_csv(table, index=False)
    config = load_config(None, ["execution.lot_size=1", f'data.corporate_actions="{table}"'])
    folder = tmp_path / "out"
    run_signal_stage(config, raw, folder)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    start = 285
    market, days, store, _ = paper_month(folder, config, profile, start)
    positions = pd.read_parquet(folder / "live_positions.parquet")
    acted = pd.read_csv(table, parse_dates=["ex_date"])
    held_through = {a.symbol for a in acted.itertuples() if days[0] < a.ex_date.date() <= days[-1]
                    and ((positions["symbol"] == a.symbol) & (positions["date"] < a.ex_date)).any()}
    assert first.stem in held_through, "the window should hold the split and dividend symbol through its actions"
    backtest = fold(market, config, start=start, end=start + SESSIONS + 1)
    live = pd.read_parquet(folder / "live_fills.parquet")
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest.trade_log[cols].reset_index(drop=True),
                                  check_dtype=False)
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)
    np.testing.assert_allclose(pd.read_parquet(folder / "live_equity.parquet")["equity"], backtest.equity_curve["equity"],
                               rtol=1e-12)


def test_paper_month_with_the_cn_etf_rules_and_a_binding_volume_cap_equals_the_backtest(demo_signals, tmp_path):
    """The market rules on (cn_etf preset, a volume cap that binds): the paper broker's fills and the
    daily runs' carried sells share each session's cap, so the live fills are the backtest's."""
    src, _ = demo_signals
    config = load_config(None, ["market.preset=cn_etf", 'execution.volume_unit="shares"', "execution.max_volume_share=0.005"])
    folder = _folder(src, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    start = 130
    market, days, store, summaries = paper_month(folder, config, profile, start)
    backtest = fold(market, config, start=start, end=start + SESSIONS + 1)
    assert backtest.blocked.get("volume_cap", 0) > 0
    live = pd.read_parquet(folder / "live_fills.parquet")
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest.trade_log[cols].reset_index(drop=True),
                                  check_dtype=False)


def _last_close(path: Path) -> float:
    return float(pd.read_csv(path)["close"].iloc[-1])


def _a_held_symbols_data_ends(small_demo_dir: Path, tmp_path: Path):
    """The small demo with its first symbol's file ending at row 292 (held through row 300 by a portfolio
    started at 285), risk.data_ended_sessions=3, its signals in tmp/out: (that file, config, out, a
    permissive profile)."""
    data = tmp_path / "data"
    shutil.copytree(small_demo_dir, data)
    ended = sorted(data.glob("*.csv"))[0]
    frame = pd.read_csv(ended)
    frame.iloc[:292].to_csv(ended, index=False)
    config = load_config(None, ["risk.data_ended_sessions=3"])
    folder = tmp_path / "out"
    run_signal_stage(config, data, folder)
    return ended, config, folder, load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))


def test_holdings_whose_data_ended_are_sold_in_the_paper_book_as_in_the_backtest(small_demo_dir, tmp_path):
    """A held symbol's file ends while the others run on: after risk.data_ended_sessions sessions the
    day step sells it at its last close (data_ended); the paper book records the same sale."""
    ended, config, folder, profile = _a_held_symbols_data_ends(small_demo_dir, tmp_path)
    start = 285
    market, days, store, _ = paper_month(folder, config, profile, start, sessions=12, allow_stale=True)
    live = pd.read_parquet(folder / "live_fills.parquet")
    assert ((live["reason"] == "data_ended") & (live["symbol"] == ended.stem)).any()
    backtest = fold(market, config, start=start, end=start + 13)
    key = ["date", "side", "symbol"]
    cols = ["date", "symbol", "side", "quantity", "price", "commission", "reason"]
    pd.testing.assert_frame_equal(live.sort_values(key)[cols].reset_index(drop=True),
                                  backtest.trade_log.sort_values(key)[cols].reset_index(drop=True), check_dtype=False)
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()
    assert last.cash == pytest.approx(store.cash(), abs=1e-6)


def _orders_equal_the_backtest(folder: Path, days, backtest) -> None:
    """Every day's orders_D.csv of the chained daily runs is the backtest's orders standing at that close."""
    for day in days:
        written = read_artifact(folder / f"orders_{day}.csv", OrdersSchema)
        expected = backtest.orders[backtest.orders["date"].dt.date == day].drop(columns="date")
        pd.testing.assert_frame_equal(written.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)


def test_a_paper_sell_whose_symbol_has_no_price_the_next_session_is_carried_with_its_decision_close(small_demo_dir,
                                                                                                    demo_signals, tmp_path):
    """A sell decided at the close of d, and no row for its symbol at d+1 (suspended, or a file not
    updated: --allow-stale). The paper broker cannot fill it; the executed book carries it into
    orders_{d+1}.csv as the backtest does -- the order decided at d, reference price d's close --
    not an order priced at d+1's missing open (NaN, which OrdersSchema refused)."""
    src, config = demo_signals
    start = 130
    market = build_market(pd.read_parquet(src / "prices.parquet"), pd.read_parquet(src / "signals_output.parquet"), config)
    orders = fold(market, config, start=start, end=start + SESSIONS).orders
    sell = orders[orders["action"].eq("SELL") & (orders["date"] > market.dates[start])].iloc[0]
    t = market.index_of(sell["date"].date()) + 1
    data = tmp_path / "data"
    shutil.copytree(small_demo_dir, data)
    path = data / f"{sell['symbol']}.csv"
    frame = pd.read_csv(path)
    frame[frame["date"] != str(market.dates[t].date())].to_csv(path, index=False)  # no row at d+1: later rows only
    folder = tmp_path / "out"
    run_signal_stage(config, data, folder)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    sessions = t - start + 2
    market, days, store, _ = paper_month(folder, config, profile, start, sessions=sessions, allow_stale=True)
    backtest = fold(market, config, start=start, end=start + sessions + 1)
    assert not market.tradable[t, market.symbol_index()[sell["symbol"]]]
    carried = read_artifact(folder / f"orders_{days[t - start]}.csv", OrdersSchema)
    row = carried[carried["symbol"] == sell["symbol"]].iloc[0]
    assert row["action"] == "SELL" and row["current_price"] == sell["current_price"] and row["reason"] == sell["reason"]
    _orders_equal_the_backtest(folder, days, backtest)
    live = pd.read_parquet(folder / "live_fills.parquet")
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest.trade_log[cols].reset_index(drop=True),
                                  check_dtype=False)
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in last.holdings.items()} == store.positions()


def test_real_cn_etf_paper_sell_over_a_suspension_is_carried_like_the_backtest(tmp_path):
    """../shared/data/cn_etf: 512600.SH, bought 2016-06-16, gets an ATR-stop sell at the close of
    2016-06-24 and has no row on 2016-06-27. Chained daily runs with the paper broker (--allow-stale)
    write orders_2016-06-27.csv with that sell at 0.276 (the 06-24 close), as the backtest does."""
    data = shared_data_dir("cn_etf")
    config = load_config(None, ["data.end_date=2016-12-30"])
    run_signal_stage(config, data, tmp_path)
    profile = load_profile(str(_write(tmp_path / "permissive.json", PERMISSIVE)))
    market = build_market(pd.read_parquet(tmp_path / "prices.parquet"), pd.read_parquet(tmp_path / "signals_output.parquet"),
                          config)
    start = market.index_of(pd.Timestamp("2016-06-16").date())
    market, days, store, _ = paper_month(tmp_path, config, profile, start, sessions=8, allow_stale=True)
    carried = read_artifact(tmp_path / "orders_2016-06-27.csv", OrdersSchema)
    assert carried[["symbol", "action", "reason", "current_price"]].values.tolist() == [["512600.SH", "SELL", "atr_stop", 0.276]]
    backtest = fold(market, config, start=start, end=start + 9)
    _orders_equal_the_backtest(tmp_path, days, backtest)
    live = pd.read_parquet(tmp_path / "live_fills.parquet")
    cols = ["date", "symbol", "side", "quantity", "price", "commission"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest.trade_log[cols].reset_index(drop=True),
                                  check_dtype=False)


def test_a_real_brokers_book_is_never_given_a_data_ended_sale_the_broker_did_not_make(small_demo_dir, tmp_path):
    """The day step sells a holding whose data ended at its last close (data_ended, reached with
    --allow-stale). A paper account books that sale (test above); an account holding a real broker's
    book (after `reconcile --sync ibkr` or an IBKR daily run) must not: the broker never made it. The run
    stops with one line naming the holding and what to do, and writes no artifact for the day."""
    ended, config, folder, profile = _a_held_symbols_data_ends(small_demo_dir, tmp_path)
    start = 285
    market = build_market(pd.read_parquet(folder / "prices.parquet"), pd.read_parquet(folder / "signals_output.parquet"), config)
    log = fold(market, config, start=start, end=start + 13).trade_log
    sale_day = log[(log["reason"] == "data_ended") & (log["symbol"] == ended.stem)]["date"].iloc[0].date()
    market, days, store, _ = paper_month(folder, config, profile, start, sessions=market.index_of(sale_day) - 1 - start,
                                         allow_stale=True)
    assert store.book_broker() is None and ended.stem in store.positions()
    store.set_book({s: (n, 0.0) for s, n in store.positions().items()}, store.cash(), broker="ibkr")  # as a sync leaves it
    assert store.book_broker() == "ibkr"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    with pytest.raises(DataError, match=rf"would SELL \d+ {ended.stem} \(data_ended\) at the last close, a fill ibkr never "
                                        rf"makes.*reconcile --sync ibkr"):
        run_trading_stage(config, folder, folder, as_of_date=sale_day, allow_stale=True)
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before and not (folder / f"orders_{sale_day}.csv").exists()
    assert ended.stem in store.positions() and store.settlement(str(sale_day)) is None  # nothing booked or settled
    # what the message says to do: sold at the broker, the book synced again, the day runs from that book
    shares = store.positions()[ended.stem]
    sold = {s: (n, 0.0) for s, n in store.positions().items() if s != ended.stem}
    store.set_book(sold, store.cash() + shares * float(_last_close(ended)), broker="ibkr")
    run_trading_stage(config, folder, folder, as_of_date=sale_day, allow_stale=True)
    assert ended.stem not in read_json_artifact(folder / f"portfolio_{sale_day}.json", PortfolioSnapshot).holdings
    assert ended.stem not in store.positions()
