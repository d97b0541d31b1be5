"""An IBKR evening in one run: `trendflow daily --execute ibkr` (the README's line, as written) loads the
broker's book from a stand-in TWS on 127.0.0.1 (tests/fake_tws.py), steps from it and sends the day's
orders; a second run of the day sends nothing again; with no TWS listening the run stops with one line,
exit 3, one CRITICAL alert, and the folder as it was. One Prefect harness for the module.

The evening: the small demo universe, backtested through session d (whose close decided orders), and
D the next session, whose close decides orders too. Last evening's orders went to IBKR and were still
OPEN in the database; overnight the broker filled them, one buy only in part.
"""
from __future__ import annotations

import json
import shlex
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ib_async")

from fake_tws import FakeTWS  # noqa: E402

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]
FEE = 5.0


def readme_line() -> str:
    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith("trendflow daily") and "--execute ibkr" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def evening(small_demo_dir, tmp_path_factory):
    """A folder holding `prices/` (CSV files through D) and `live/` (a backtest through d), and (d, D)."""
    from stages.common.config import load_config
    from stages.signal import run_signal_stage
    from stages.trading import run_trading_stage
    from stages.trading.backtest import run_backtest

    probe = tmp_path_factory.mktemp("probe")
    config = load_config()
    run_signal_stage(config, small_demo_dir, probe)
    bt = run_backtest(pd.read_parquet(probe / "signals_output.parquet"), pd.read_parquet(probe / "prices.parquet"), config)
    dates = list(bt.market.dates)
    with_orders = set(bt.orders["date"])
    buys = set(bt.orders.loc[bt.orders["action"] == "BUY", "date"])
    d, D = next((a, b) for a, b in reversed(list(zip(dates, dates[1:]))) if a in buys and b in with_orders)
    root = tmp_path_factory.mktemp("evening")
    (root / "prices").mkdir()
    for path in small_demo_dir.glob("*.csv"):
        frame = pd.read_csv(path)
        frame[pd.to_datetime(frame["date"]) <= D].to_csv(root / "prices" / path.name, index=False)
    config_d = load_config(None, [f"data.end_date={d.date()}"])
    run_signal_stage(config_d, root / "prices", root / "live")
    run_trading_stage(config_d, root / "live", root / "live")
    return root, d.date(), D.date(), bt.market, probe


def _route(symbol: str) -> tuple[str, str, str]:
    from stages.trading.execution.brokers import IBKRSettings, ib_route

    return ib_route(symbol, IBKRSettings("127.0.0.1", 0, 17, None, "SMART", "USD"))


def broker_overnight(live: Path, d, D, market) -> tuple[FakeTWS, dict[str, int], float]:
    """The execution database with d's orders OPEN at IBKR, and a fake TWS whose account filled them at
    D's open (the first buy only in part). Returns the fake and the broker's positions and cash."""
    from schemas.trading import OrdersSchema, PortfolioSnapshot
    from stages.common.artifacts import read_artifact, read_json_artifact
    from stages.common.config import load_config
    from stages.trading.book import execution_db
    from stages.trading.execution.executor import client_order_id
    from stages.trading.execution.store import ExecutionStore

    snap = read_json_artifact(live / f"portfolio_{d}.json", PortfolioSnapshot)
    orders = read_artifact(live / f"orders_{d}.csv", OrdersSchema)
    index, t = market.symbol_index(), market.index_of(D)
    store = ExecutionStore(execution_db(live), load_config().execution.initial_cash)
    positions, cash, executions, partial = {s: h.shares for s, h in snap.holdings.items()}, snap.cash, [], False
    for row in orders.itertuples():
        coid = client_order_id(d, row.symbol, row.action, "daily")
        store.insert_pending(coid, "daily", str(d), row.symbol, row.action, int(row.shares), row.reason, "ibkr")
        store.set_status(coid, "APPROVED", approved_shares=int(row.shares))
        store.set_status(coid, "SUBMITTED")
        store.set_status(coid, "OPEN")
        shares = int(row.shares)
        if row.action == "BUY" and not partial:  # the broker filled only part of the first buy
            shares, partial = shares // 200 * 100, True
        price = float(market.open[t, index[row.symbol]])
        sign = 1 if row.action == "BUY" else -1
        positions[row.symbol] = positions.get(row.symbol, 0) + sign * shares
        cash -= sign * shares * price + FEE
        executions.append((coid, *_route(row.symbol), row.action, shares, price, FEE))
    store.close()
    positions = {s: n for s, n in positions.items() if n}
    close = {_route(s)[0]: float(market.close[t, index[s]]) for s in market.symbols}

    def fills_at_the_close(placed):
        price = close[placed.symbol]
        return [(0.01, "fill", (placed.quantity, price, FEE)), (0.01, "status", ("Filled", placed.quantity, 0, price))]

    tws = FakeTWS(positions=[(*_route(s), n, close[_route(s)[0]]) for s, n in sorted(positions.items())], cash=cash,
                  executions=executions, script=fills_at_the_close)
    return tws, positions, cash


def _copy(evening, tmp_path: Path) -> Path:
    root = tmp_path / "evening"
    shutil.copytree(evening[0], root)
    return root


def test_an_ibkr_evening_syncs_the_brokers_book_steps_from_it_and_sends_the_orders_once(
        harness, evening, tmp_path, monkeypatch, capsys):
    from flows.cli import main
    from schemas.live import ReconcileSchema
    from schemas.trading import OrdersSchema, PortfolioSnapshot
    from stages.common.artifacts import read_artifact, read_json_artifact
    from stages.trading.book import execution_db
    from stages.trading.execution.executor import client_order_id
    from stages.trading.execution.store import ExecutionStore

    _, d, D, market, _ = evening
    root = _copy(evening, tmp_path)
    live = root / "live"
    tws, positions, cash = broker_overnight(live, d, D, market)
    monkeypatch.chdir(root)
    argv = shlex.split(readme_line())
    with tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        assert argv[0] == "trendflow" and main(argv[1:]) == 0
        out = capsys.readouterr().out
        placed = list(tws.placed)
        assert main(argv[1:]) == 0  # the same evening again
        again = capsys.readouterr().out
    assert f"as of {D}" in out and "book loaded from ibkr before the run" in out

    # the step started from the broker's book: the snapshot after D's open holds it, and the
    # reconciliation shows it beside the model's (the partial buy drifts)
    snap = read_json_artifact(live / f"portfolio_{D}.json", PortfolioSnapshot)
    assert {s: h.shares for s, h in snap.holdings.items()} == positions
    assert snap.cash == pytest.approx(cash, abs=1e-6)
    rec = read_artifact(live / f"reconcile_{D}.csv", ReconcileSchema)
    held = rec[rec["side"] != "CASH"]
    assert len(held) and (held["executed_shares"] == held["symbol"].map(positions).fillna(0)).all()
    cut = held[(held["side"] == "BUY") & (held["filled_qty"] < held["model_qty"])]
    assert len(cut) == 1 and cut["share_drift"].iat[0] < 0
    filled, sent = cut["filled_qty"].iat[0], cut["sent_qty"].iat[0]
    assert cut["reason"].iat[0] == f"ibkr filled {filled} of {sent} (PARTIALLY_FILLED)"

    store = ExecutionStore(execution_db(live), 1.0)
    last_evening = {r["symbol"]: r["status"] for r in store.conn.execute("SELECT * FROM orders WHERE as_of_date=?", (str(d),))}
    assert sorted(set(last_evening.values())) == ["FILLED", "PARTIALLY_FILLED"]  # synced: none left OPEN

    # D's orders went to IBKR, routed, with their client order ids, and were recorded filled
    orders = read_artifact(live / f"orders_{D}.csv", OrdersSchema)
    sent = {r["client_order_id"]: r for r in store.conn.execute("SELECT * FROM orders WHERE as_of_date=? AND status='FILLED'",
                                                                 (str(D),))}
    assert len(orders) and len(placed) == len(sent) > 0
    assert {p.order_ref for p in placed} == set(sent)
    for p in placed:
        symbol = sent[p.order_ref]["symbol"]
        assert p.order_ref == client_order_id(D, symbol, p.action, "daily") and (p.symbol, p.exchange) == _route(symbol)[:2]
        assert p.quantity == sent[p.order_ref]["approved_shares"] == store.filled_shares(p.order_ref)
    assert f"executed on ibkr (balanced): filled {len(placed)}" in out
    # the second run: the book synced again (with D's fills), nothing sent again
    assert "book loaded from ibkr before the run" in again and f"already done {len(sent)}" in again
    assert tws.placed == placed
    assert store.positions() == {f"{code}.{'SH' if exchange == 'SEHKNTL' else 'SZ'}": int(n)
                                 for code, exchange, _, n, _ in tws.positions} != positions  # D's fills are in it
    assert store.conn.execute("SELECT COUNT(*) FROM orders WHERE as_of_date=?", (str(D),)).fetchone()[0] == len(orders)
    events = [json.loads(line)["event"] for line in (execution_db(live).parent / "audit.jsonl").read_text().splitlines()
              if "event" in json.loads(line)]
    assert events.count("book_synced") == 2
    store.close()


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the run logs and the folder locks."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "logs" and not p.name.endswith(".lock")}


def test_with_no_tws_the_evening_stops_with_one_line_exit_3_one_critical_and_nothing_changed(
        harness, evening, tmp_path, monkeypatch, capsys):
    from flows.cli import main

    _, d, D, market, _ = evening
    root = _copy(evening, tmp_path)
    broker_overnight(root / "live", d, D, market)
    before = _tree(root / "live")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    monkeypatch.setenv("TRENDFLOW_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("TRENDFLOW_IB_PORT", str(port))
    monkeypatch.chdir(root)
    try:
        capsys.readouterr()
        assert main(shlex.split(readme_line())[1:] + ["--retry-delay", "0"]) == 3
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot connect to TWS/IB Gateway at 127.0.0.1:{port}"), err
    assert "Traceback" not in err and err.count("sync stage starting") == 3  # retried twice as transient, then stopped
    assert [p["level"] for p in _Hook.received] == ["CRITICAL"] and "cannot connect to TWS" in _Hook.received[0]["text"]
    assert _tree(root / "live") == before


def test_bad_ibkr_settings_stop_the_run_before_prefect_starts(evening, tmp_path, monkeypatch, capsys):
    import sys

    from flows.cli import main

    root = _copy(evening, tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setenv("TRENDFLOW_IB_PORT", "seven")
    monkeypatch.delitem(sys.modules, "flows.pipeline", raising=False)
    assert main(shlex.split(readme_line())[1:]) == 2
    assert "TRENDFLOW_IB_PORT / TRENDFLOW_IB_CLIENT_ID must be integers" in capsys.readouterr().err
    assert main(["serve", "--out", "live/", "--data", "prices/", "--execute", "ibkr"]) == 2  # before it serves
    assert "TRENDFLOW_IB_PORT / TRENDFLOW_IB_CLIENT_ID must be integers" in capsys.readouterr().err
    assert "flows.pipeline" not in sys.modules and not (root / "live" / "logs").exists()


def test_a_served_or_deployed_run_checks_the_ibkr_settings_before_any_stage(harness, evening, tmp_path, monkeypatch):
    from flows.pipeline import trend_pipeline
    from stages.common.errors import ConfigError

    _, d, D, market, _ = evening
    root = _copy(evening, tmp_path)
    broker_overnight(root / "live", d, D, market)
    before = _tree(root / "live")
    monkeypatch.setenv("TRENDFLOW_IB_ROUTES", "HK=SEHK")
    with pytest.raises(ConfigError, match="TRENDFLOW_IB_ROUTES: 'HK=SEHK' is not SUFFIX=EXCHANGE/CURRENCY"):
        trend_pipeline(data=str(root / "prices"), out=str(root / "live"), mode="daily", as_of_date=D, execute="ibkr",
                       retry_delay_seconds=0)
    with pytest.raises(ConfigError, match="--execute 'ib': no such broker"):
        trend_pipeline(out=str(root / "live"), mode="daily", as_of_date=D, execute="ib", retry_delay_seconds=0)
    assert _tree(root / "live") == before


def test_chained_ibkr_evenings_fill_like_the_backtest_and_the_books_agree(evening, tmp_path, monkeypatch):
    """The stage functions a daily --execute ibkr run calls, evening after evening (sync, trading stage,
    execute). The orders sent after the close stay OPEN at the broker (followed TRENDFLOW_IB_WAIT
    seconds); overnight it fills them at the next open as the engine would (slippage, commission); the
    next evening's sync records those fills and loads the book. The fills are the backtest's, and
    each evening starts from the broker's book with zero drift."""
    from schemas.live import ReconcileSchema
    from schemas.trading import PortfolioSnapshot
    from stages.common.artifacts import read_artifact, read_json_artifact
    from stages.common.config import load_config
    from stages.trading import run_trading_stage
    from stages.trading.backtest import fold
    from stages.trading.book import execution_db, sync_folder_book
    from stages.trading.execution.executor import execute_orders_file
    from stages.trading.execution.store import ExecutionStore
    from stages.trading.rules import commission, slipped_price
    from tests.test_live_book import PERMISSIVE

    probe, config = evening[4], load_config()
    folder = tmp_path / "live"
    folder.mkdir()
    for name in ("prices.parquet", "signals_output.parquet", "manifest.json"):
        shutil.copy(probe / name, folder / name)
    (tmp_path / "permissive.json").write_text(json.dumps(PERMISSIVE))
    from stages.trading.execution.cli import load_profile

    profile = load_profile(str(tmp_path / "permissive.json"))
    market, start = evening[3], 130
    days = [market.dates[t].date() for t in range(start, start + 6)]
    index = market.symbol_index()
    by_code = {_route(s)[0]: s for s in market.symbols}
    at = {}

    def acknowledged(placed):
        return [(0.01, "status", ("Submitted", 0, placed.quantity, 0.0))]

    def overnight(tws, placed, t):
        """The broker fills last evening's orders at session t's open, as the engine would."""
        for p in placed:
            i = index[by_code[p.symbol]]
            if market.tradable[t, i]:
                price = float(slipped_price(market.open[t, i], p.action, config))
                tws.book_fill(p, p.quantity, price, float(commission(p.quantity * price, config)))

    ExecutionStore(execution_db(folder), config.execution.initial_cash).close()
    monkeypatch.setenv("TRENDFLOW_IB_WAIT", "0.2")
    with FakeTWS(cash=config.execution.initial_cash, script=acknowledged) as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        sent = 0
        for k, day in enumerate(days):
            if k:
                overnight(tws, tws.placed[sent:], market.index_of(day))
                sent = len(tws.placed)
            sync_folder_book(folder, config, say=lambda line: None)
            run_trading_stage(config, folder, folder, as_of_date=day, fresh=(k == 0))
            if k < len(days) - 1:
                summary = execute_orders_file(folder / f"orders_{day}.csv", config=config, broker="ibkr", profile=profile,
                                              db=execution_db(folder))
                assert summary.filled == 0 and summary.working == summary.approved  # working at the broker overnight
    assert len(tws.placed) > 3
    store = ExecutionStore(execution_db(folder), 1.0)
    assert store.working_orders("ibkr") == []  # each evening's sync closed the orders of the evening before
    store.close()
    key = ["date", "side", "symbol"]  # a broker fills in the batch's quality order, the engine in rank order
    backtest = fold(market, config, start=start, end=start + 6).trade_log.sort_values(key, kind="stable")
    live = pd.read_parquet(folder / "live_fills.parquet").sort_values(key, kind="stable")
    cols = ["date", "symbol", "side", "quantity"]
    pd.testing.assert_frame_equal(live[cols].reset_index(drop=True), backtest[cols].reset_index(drop=True), check_dtype=False)
    np.testing.assert_allclose(live["price"], backtest["price"], rtol=1e-12)
    for day in days[1:]:
        rec = read_artifact(folder / f"reconcile_{day}.csv", ReconcileSchema)
        assert (rec["share_drift"] == 0).all() and rec["cash_difference"].abs().max() < 1e-6, day
    last = read_json_artifact(folder / f"portfolio_{days[-1]}.json", PortfolioSnapshot)
    broker = {f"{code}.{'SH' if exchange == 'SEHKNTL' else 'SZ'}": int(n) for code, exchange, _, n, _ in tws.positions}
    assert {s: h.shares for s, h in last.holdings.items()} == broker
    assert last.cash == pytest.approx(tws.cash, abs=1e-6)
