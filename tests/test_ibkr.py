"""The IBKR adapter against a protocol-level stand-in for TWS (tests/fake_tws.py, 127.0.0.1): routing
by symbol suffix, orders followed to a final state or left OPEN at a timeout, partial fills with the
remainder working, the broker's book loaded into the execution database, connection failures."""
from __future__ import annotations

import json
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

pytest.importorskip("ib_async")

from fake_tws import FakeTWS  # noqa: E402
from flows.cli import main  # noqa: E402
from schemas.trading import OrdersSchema  # noqa: E402
from stages.common.artifacts import stage_run  # noqa: E402
from stages.common.config import load_config  # noqa: E402
from stages.common.errors import ConfigError  # noqa: E402
from stages.trading.execution.brokers import IBKRBroker, IBKRSettings, ib_route, to_ib_contract  # noqa: E402
from stages.trading.execution.cli import load_profile  # noqa: E402
from stages.trading.execution.executor import client_order_id, execute_orders  # noqa: E402
from stages.trading.execution.notify import Notifier  # noqa: E402
from stages.trading.execution.store import ExecutionStore  # noqa: E402

DAY = date(2026, 12, 4)


def settings(port: int, routes=()) -> IBKRSettings:
    return IBKRSettings("127.0.0.1", port, 17, None, "SMART", "USD", routes)


def one_order(symbol="510300.SH", shares=300, price=4.0):
    return pd.DataFrame([dict(symbol=symbol, action="BUY", shares=shares, reason="new_entry", signal_strength=1.0,
                              momentum_score=1.0, target_weight=0.1, current_price=price, estimated_value=shares * price)])


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(tmp_path):
    config = load_config(None, ["execution.initial_cash=100000"])
    return config, ExecutionStore(tmp_path / "exec.db", config.execution.initial_cash)


def run(env, broker, frame, notifier=None):
    config, store = env
    return execute_orders(frame, store=store, broker=broker, profile=load_profile("balanced"), config=config, as_of=DAY,
                          notifier=notifier)


# --------------------------------------------------------------------------- routing
def test_cn_symbols_route_to_stock_connect_in_cnh_and_unknown_suffixes_are_refused():
    s = settings(7497)
    assert ib_route("510300.SH", s) == ("510300", "SEHKNTL", "CNH")
    assert ib_route("159915.SZ", s) == ("159915", "SEHKSZSE", "CNH")
    assert ib_route("SPY", s) == ("SPY", "SMART", "USD") == ib_route("SPY.US", s)
    contract = to_ib_contract("510300.SH", s)
    assert (contract.symbol, contract.exchange, contract.currency) == ("510300", "SEHKNTL", "CNH")
    with pytest.raises(ConfigError, match=r"no IB route for the suffix \.HK"):
        ib_route("0700.HK", s)
    assert ib_route("0700.HK", settings(7497, (("HK", "SEHK", "HKD"),))) == ("0700", "SEHK", "HKD")


def test_routes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRENDFLOW_IB_ROUTES", "HK=SEHK/HKD, sh=SSE/CNY")
    s = IBKRSettings.from_env()
    assert ib_route("0700.HK", s) == ("0700", "SEHK", "HKD") and ib_route("600000.SH", s) == ("600000", "SSE", "CNY")
    monkeypatch.setenv("TRENDFLOW_IB_ROUTES", "HK=SEHK")
    with pytest.raises(ConfigError, match="SUFFIX=EXCHANGE/CURRENCY"):
        IBKRSettings.from_env()


# --------------------------------------------------------------------------- orders over the socket protocol
def fills_in_two(placed):
    return [(0.02, "status", ("Submitted", 0, placed.quantity, 0.0)), (0.02, "fill", (100, 4.01, 1.5)),
            (0.02, "status", ("Submitted", 100, placed.quantity - 100, 4.01)), (0.02, "fill", (placed.quantity - 100, 4.02, 2.0)),
            (0.02, "status", ("Filled", placed.quantity, 0, 4.0167))]


def test_an_order_is_followed_to_its_final_state_and_routed_by_suffix(env):
    config, store = env
    with FakeTWS(script=fills_in_two) as tws:
        broker = IBKRBroker(settings(tws.port), timeout=5, connect_timeout=5)
        summary = run(env, broker, one_order())
        broker.close()
    placed = tws.placed[0]
    assert (placed.symbol, placed.exchange, placed.currency, placed.action, placed.quantity) == ("510300", "SEHKNTL", "CNH", "BUY", 300)
    coid = client_order_id(DAY, "510300.SH", "BUY", "daily")
    assert placed.order_ref == coid and summary.filled == 1
    assert store.order(coid)["status"] == "FILLED" and store.positions() == {"510300.SH": 300}
    cash_spent = 100 * 4.01 + 200 * 4.02 + 3.5
    assert store.cash() == pytest.approx(100_000 - cash_spent)


def test_a_partial_fill_stays_open_with_the_remainder_working_and_a_rerun_records_the_rest(env, webhook):
    config, store = env
    url, received = webhook

    def slow_remainder(placed):
        return [(0.02, "status", ("Submitted", 0, placed.quantity, 0.0)), (0.02, "fill", (100, 4.01, 1.5)),
                (0.02, "status", ("Submitted", 100, placed.quantity - 100, 4.01)), (1.2, "fill", (placed.quantity - 100, 4.03, 2.0)),
                (0.02, "status", ("Filled", placed.quantity, 0, 4.0233))]

    with FakeTWS(script=slow_remainder) as tws:
        broker = IBKRBroker(settings(tws.port), timeout=0.5, connect_timeout=5)
        first = run(env, broker, one_order(), Notifier(url, retries=1, timeout=1))
        coid = client_order_id(DAY, "510300.SH", "BUY", "daily")
        assert first.working == 1 and store.order(coid)["status"] == "OPEN"
        assert store.filled_shares(coid) == 100 and store.positions() == {"510300.SH": 100}
        assert any(p["level"] == "WARNING" and "still working at ibkr (100 filled)" in p["text"] for p in received)
        time.sleep(1.0)
        second = run(env, broker, one_order(), Notifier(url, retries=1, timeout=1))  # the rerun polls the same order
        broker.close()
    assert len(tws.placed) == 1 and second.filled == 1 and store.order(coid)["status"] == "FILLED"
    assert store.positions() == {"510300.SH": 300} and store.filled_shares(coid) == 300
    prices = [r["price"] for r in store.conn.execute("SELECT price FROM fills WHERE client_order_id=? ORDER BY id", (coid,))]
    assert prices == [pytest.approx(4.01), pytest.approx(4.03)]


def test_an_order_resting_until_the_next_open_is_said_at_info_not_warned_every_evening(env, webhook):
    """After the close nothing fills: the order is OPEN with nothing filled, one INFO line (a WARNING per
    order per evening would teach users to ignore warnings); a partial fill stays a WARNING (test above)."""
    config, store = env
    url, received = webhook

    def resting(placed):
        return [(0.02, "status", ("Submitted", 0, placed.quantity, 0.0))]

    with FakeTWS(script=resting) as tws:
        broker = IBKRBroker(settings(tws.port), timeout=0.3, connect_timeout=5)
        summary = run(env, broker, one_order(), Notifier(url, retries=1, timeout=1))
        broker.close()
    coid = client_order_id(DAY, "510300.SH", "BUY", "daily")
    assert summary.working == 1 and store.order(coid)["status"] == "OPEN" and store.filled_shares(coid) == 0
    about = [p for p in received if "510300.SH" in p["text"]]
    assert [p["level"] for p in about] == ["INFO"] and "working at ibkr, nothing filled yet" in about[0]["text"]


def test_a_cancelled_remainder_is_a_final_partial_fill_and_a_dead_order_fails_with_a_critical_alert(env, webhook):
    config, store = env
    url, received = webhook

    def cancelled_after_100(placed):
        if placed.symbol == "510300":
            return [(0.02, "fill", (100, 4.01, 1.5)), (0.02, "status", ("Cancelled", 100, placed.quantity - 100, 4.01))]
        return [(0.02, "status", ("Inactive", 0, placed.quantity, 0.0))]

    with FakeTWS(script=cancelled_after_100) as tws:
        broker = IBKRBroker(settings(tws.port), timeout=5, connect_timeout=5)
        summary = run(env, broker, pd.concat([one_order(), one_order("159915.SZ", 200, 3.0)]), Notifier(url, retries=1, timeout=1))
        broker.close()
    assert store.order(client_order_id(DAY, "510300.SH", "BUY", "daily"))["status"] == "PARTIALLY_FILLED"
    assert store.order(client_order_id(DAY, "159915.SZ", "BUY", "daily"))["status"] == "FAILED"
    assert summary.filled == 1 and summary.failed == 1 and store.positions() == {"510300.SH": 100}
    assert any(p["level"] == "CRITICAL" and "159915.SZ" in p["text"] for p in received)


# --------------------------------------------------------------------------- command lines
def _orders_folder(tmp_path, frame):
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 0
    with stage_run("trading", tmp_path, csv_twins=False) as run_:
        run_.write(frame, f"orders_{DAY}.csv", OrdersSchema)
    return tmp_path / f"orders_{DAY}.csv"


def test_execute_with_no_tws_is_one_error_line_exit_3_and_a_critical_alert(tmp_path, monkeypatch, capsys, webhook):
    url, received = webhook
    with socket_closed() as port:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(port))
        monkeypatch.setenv("TRENDFLOW_WEBHOOK_URL", url)
        orders = _orders_folder(tmp_path, one_order())
        capsys.readouterr()
        assert main(["execute", "--broker", "ibkr", "--orders", str(orders)]) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: cannot connect to TWS/IB Gateway at 127.0.0.1:") and "Traceback" not in err[0]
        assert [p["level"] for p in received] == ["CRITICAL"] and "broker connection failed" in received[0]["text"]
        received.clear()
        assert main(["reconcile", "--sync", "ibkr", "--out", str(tmp_path)]) == 3
        assert [p["level"] for p in received] == ["CRITICAL"]


def test_execute_refuses_an_unroutable_symbol_before_connecting(tmp_path, monkeypatch, capsys):
    with FakeTWS() as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        orders = _orders_folder(tmp_path, pd.concat([one_order(), one_order("0700.HK", 100, 300.0)]))
        assert main(["execute", "--broker", "ibkr", "--orders", str(orders)]) == 2
    assert "0700.HK: no IB route for the suffix .HK" in capsys.readouterr().err
    assert tws.placed == [] and tws.received == []


def test_reconcile_sync_loads_the_brokers_positions_and_cash(tmp_path, monkeypatch, capsys):
    config = load_config()
    ExecutionStore(tmp_path / "execution" / "trendflow.db", config.execution.initial_cash).close()
    with FakeTWS(positions=[("510300", "SEHKNTL", "CNH", 500, 4.0), ("SPY", "SMART", "USD", 10, 400.0)], cash=54321.5) as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        assert main(["reconcile", "--sync", "ibkr", "--out", str(tmp_path)]) == 0
    store = ExecutionStore(tmp_path / "execution" / "trendflow.db", 1.0)
    assert store.positions() == {"510300.SH": 500, "SPY": 10} and store.cash() == 54321.5
    assert "book loaded from ibkr: cash 54,321.50, 2 positions, 0 open orders" in capsys.readouterr().out
    events = [json.loads(line) for line in (tmp_path / "execution" / "audit.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "book_synced" and events[-1]["positions"] == {"510300.SH": 500, "SPY": 10}


class socket_closed:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        return self.port

    def __exit__(self, *exc) -> None:
        pass


def test_the_readme_reconcile_commands_run_as_written(tmp_path, monkeypatch, capsys):
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("trendflow reconcile ")]
    assert len(commands) == 3
    monkeypatch.chdir(tmp_path)
    store = ExecutionStore(tmp_path / "live" / "execution" / "trendflow.db", 100_000.0)
    store.set_book({"510300.SH": (500, 2000.0)}, 98_000.0)
    store.close()
    with FakeTWS(positions=[("510300", "SEHKNTL", "CNH", 500, 4.0)], cash=98_000.0) as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        for command in commands:
            argv = shlex.split(command)
            assert argv[0] == "trendflow" and main(argv[1:]) == 0, command
    out = capsys.readouterr().out
    assert '"510300.SH": 500' in out and "accepted 500 510300.SH into the model's book (by alice)" in out
    assert ExecutionStore(tmp_path / "live" / "execution" / "trendflow.db", 1.0).accepted() == {"510300.SH": 500}


def test_a_sync_records_overnight_fills_of_open_orders_and_closes_those_gone_from_the_broker(tmp_path, monkeypatch, capsys):
    config = load_config()
    store = ExecutionStore(tmp_path / "execution" / "trendflow.db", config.execution.initial_cash)
    ids = {}
    for symbol, shares in (("510300.SH", 300), ("159915.SZ", 200)):  # sent last evening, still OPEN when execute ended
        coid = client_order_id(DAY, symbol, "BUY", "daily")
        ids[symbol] = coid
        store.insert_pending(coid, "daily", str(DAY), symbol, "BUY", shares, "new_entry", "ibkr")
        store.set_status(coid, "APPROVED", approved_shares=shares)
        store.set_status(coid, "SUBMITTED")
        store.set_status(coid, "OPEN")
    store.close()
    executions = [(ids["510300.SH"], "510300", "SEHKNTL", "CNH", "BUY", 100, 4.00, 1.0),
                  (ids["510300.SH"], "510300", "SEHKNTL", "CNH", "BUY", 200, 4.03, 1.5)]
    with FakeTWS(positions=[("510300", "SEHKNTL", "CNH", 300, 4.02)], cash=98_790.0, executions=executions) as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        assert main(["reconcile", "--sync", "ibkr", "--out", str(tmp_path)]) == 0
    store = ExecutionStore(tmp_path / "execution" / "trendflow.db", 1.0)
    filled, gone = (store.order(ids[s]) for s in ("510300.SH", "159915.SZ"))
    assert filled["status"] == "FILLED" and store.filled_shares(ids["510300.SH"]) == 300
    fill = store.conn.execute("SELECT price, commission FROM fills WHERE client_order_id=?", (ids["510300.SH"],)).fetchone()
    assert fill["price"] == pytest.approx((100 * 4.00 + 200 * 4.03) / 300) and fill["commission"] == pytest.approx(2.5)
    assert gone["status"] == "FAILED" and store.filled_shares(ids["159915.SZ"]) == 0
    assert store.positions() == {"510300.SH": 300} and store.cash() == 98_790.0  # the broker's book is the book
    out = capsys.readouterr().out
    assert "BUY 510300.SH" in out and "FILLED, 300 of 300 filled" in out and "FAILED, 0 of 200 filled" in out


def test_a_sync_takes_the_brokers_book_even_when_the_database_missed_a_trade(tmp_path, monkeypatch):
    """A fill of our open SELL of a holding the database never recorded (e.g. bought by hand at the
    broker) is recorded, and the broker's positions and cash replace the database's: the sync used to
    book the fill on the database's positions first and stop on their CHECK (shares >= 0)."""
    from stages.trading.book import sync_folder_book

    config = load_config()
    store = ExecutionStore(tmp_path / "execution" / "trendflow.db", config.execution.initial_cash)
    coid = client_order_id(DAY, "510300.SH", "SELL", "daily")
    store.insert_pending(coid, "daily", str(DAY), "510300.SH", "SELL", 500, "atr_stop", "ibkr")
    store.set_status(coid, "APPROVED", approved_shares=500)
    store.set_status(coid, "SUBMITTED")
    store.set_status(coid, "OPEN")
    store.close()
    sold = [(coid, "510300", "SEHKNTL", "CNH", "SELL", 500, 4.1, 2.0)]
    with FakeTWS(positions=[("159915", "SEHKSZSE", "CNH", 200, 3.0)], cash=102_048.0, executions=sold) as tws:
        monkeypatch.setenv("TRENDFLOW_IB_PORT", str(tws.port))
        loaded = sync_folder_book(tmp_path, config, say=lambda line: None)
    store = ExecutionStore(tmp_path / "execution" / "trendflow.db", 1.0)
    assert store.order(coid)["status"] == "FILLED" and store.filled_shares(coid) == 500
    assert store.positions() == {"159915.SZ": 200} and store.cash() == 102_048.0
    assert loaded == {"broker": "ibkr", "cash": 102_048.0, "positions": {"159915.SZ": 200}, "open_orders": 0}


def test_the_reconciliation_says_when_the_broker_filled_an_order_in_part_or_not_at_all():
    from stages.trading.book import MATCH, _why
    from stages.trading.engine import Fill, Order

    decided = pd.Timestamp(DAY)
    order = Order(0, "BUY", 300, "new_entry", 1.0, 1.0, 0.1, 4.0, decided)
    model = Fill(0, "BUY", 300, 4.0, 1.0, 0.0, "new_entry", decided)
    sent = {"status": "FAILED", "rejection_reason": "no longer open at the broker", "approved_shares": 300,
            "requested_shares": 300, "broker": "ibkr", "reason": "new_entry"}
    assert _why("BUY", order, sent, model, None, 0, 0, True) == "ibkr filled 0 of 300 (FAILED: no longer open at the broker)"
    part = Fill(0, "BUY", 100, 4.0, 1.0, 0.0, "new_entry", decided)
    assert (_why("BUY", order, {**sent, "status": "PARTIALLY_FILLED", "rejection_reason": None}, model, part, 0, 0, True)
            == "ibkr filled 100 of 300 (PARTIALLY_FILLED)")
    assert _why("BUY", order, {**sent, "status": "FILLED", "rejection_reason": None}, model, model, 0, 0, True) == MATCH
    paper = {**sent, "broker": "paper", "status": "FILLED", "rejection_reason": None}  # the paper broker's cut: cash
    assert _why("BUY", order, paper, model, part, 0, 0, True) == "cash at the open differed (buy shrunk to what cash allows)"


def test_how_long_an_order_is_followed_comes_from_the_environment(monkeypatch):
    assert IBKRSettings.from_env().wait == 30.0
    monkeypatch.setenv("TRENDFLOW_IB_WAIT", "2.5")
    assert IBKRSettings.from_env().wait == 2.5
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("TRENDFLOW_IB_WAIT", bad)
        with pytest.raises(ConfigError, match="TRENDFLOW_IB_WAIT=.*a number >= 0"):
            IBKRSettings.from_env()
