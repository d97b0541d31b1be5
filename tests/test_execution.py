"""Execution layer: risk checks, lifecycle in a real SQLite file, idempotent reruns, breaker,
webhooks over real loopback HTTP, audit log, IBKR mapping (no network)."""
from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest

from stages.common.config import load_config
from stages.trading.execution.brokers import BrokerOrder, PaperBroker
from stages.trading.execution.cli import load_profile
from stages.trading.execution.executor import client_order_id, execute_orders, quality_position_shares, quality_score
from stages.trading.execution.notify import AuditLog, Notifier
from stages.trading.book import settle_at_open
from stages.trading.execution.store import ExecutionStore

DAY = date(2024, 3, 1)


def orders(*rows):
    return pd.DataFrame([dict(symbol=s, action=a, shares=n, reason="new_entry" if a == "BUY" else "atr_stop",
                              signal_strength=q, momentum_score=1.0, target_weight=0.1, current_price=p,
                              estimated_value=n * p) for s, a, n, q, p in rows])


@pytest.fixture
def env(tmp_path):
    config = load_config(None, ["execution.initial_cash=100000", "execution.slippage_bps=0", "execution.commission_minimum=0"])
    store = ExecutionStore(tmp_path / "exec.db", config.execution.initial_cash)
    return config, store, PaperBroker(store, config), AuditLog(tmp_path / "audit.jsonl"), tmp_path


def run(env, frame, profile="balanced", **kw):
    config, store, broker, audit, _ = env
    return execute_orders(frame, store=store, broker=broker, profile=load_profile(profile), config=config, as_of=DAY,
                          audit=audit, **kw)


def settle(env, opens, session="2024-03-04"):
    """The next session's open: the paper broker's working orders fill through the engine."""
    config, store, *_ = env
    return settle_at_open(store, config, session, opens)


def test_quality_and_size_reference_values():
    assert quality_score(0.8, 1.5) == pytest.approx(0.6)
    assert quality_score(0.8, 5.0) == pytest.approx(0.8)
    assert quality_position_shares(100_000, 0.025, 0.6, 150.0, 1) == 10
    assert quality_position_shares(100_000, 0.025, 0.6, 150.0, 100) == 0


def test_fresh_all_cash_portfolio_can_buy(env, capsys):
    from flows.cli import main

    summary = run(env, orders(("A", "BUY", 1000, 1.0, 10.0)))
    # quality 1.0 x min(1/2, 1) = 0.5 (no price history: neutral Sharpe 1) -> 100,000 x 0.15 x 0.5 = 7,500 -> 700 shares
    assert summary.working == 1 and env[1].positions() == {}  # paper: works until the next open
    assert main(["status", "--db", str(env[4] / "exec.db")]) == 0
    assert "executed 0, working 1, rejected 0, failed 0, expired 0" in capsys.readouterr().out
    settle(env, {"A": 10.0})
    assert env[1].positions() == {"A": 700}
    assert env[1].cash() == pytest.approx(100_000 - 7_000 - 7_000 * 0.0003)


def test_sells_are_never_blocked_and_sized_by_holding(env):
    config, store, *_ = env
    run(env, orders(("A", "BUY", 1000, 1.0, 10.0)))
    settle(env, {"A": 10.0})
    store.trip_breaker("test")
    summary = run(env, orders(("A", "SELL", 5000, 0.0, 9.0)), run_id="second")
    assert summary.working == 1
    settle(env, {"A": 9.0}, "2024-03-05")
    assert store.positions() == {}
    buy = run(env, orders(("B", "BUY", 100, 1.0, 10.0)), run_id="third")
    assert buy.rejections == {"B": "circuit_breaker"}


def test_low_quality_and_deployment_limit_reject_the_rest_with_state_updated_inside_the_batch(env):
    batch = orders(("Q", "BUY", 100, 0.1, 10.0),  # quality 0.05 < 0.3
                   *[(f"S{i}", "BUY", 1500, 1.0 - i * 0.01, 10.0) for i in range(10)])
    assert run(env, orders(("Q", "BUY", 100, 0.1, 10.0)), run_id="q").rejections == {"Q": "low_quality"}
    summary = run(env, batch, profile="aggressive")
    settle(env, {f"S{i}": 10.0 for i in range(10)})
    assert summary.rejections["Q"] == "deployment_limit"  # lowest quality comes last: after the limit, the rest is rejected
    store = env[1]
    invested = sum(store.positions().values()) * 10.0
    assert invested <= 0.80 * 100_000 + 1e-6
    filled = sorted(store.positions())
    assert filled == [f"S{i}" for i in range(len(filled))]  # descending quality order
    assert 5 <= len(filled) < 10
    assert all(summary.rejections[f"S{i}"] in ("deployment_limit", "cash_buffer") for i in range(len(filled), 10))


def test_rerun_after_a_crash_in_the_settlement_never_fills_twice(env, monkeypatch):
    config, store, broker, *_ = env
    batch = orders(("A", "BUY", 1000, 1.0, 10.0))
    run(env, batch)
    coid = client_order_id(DAY, "A", "BUY", "daily")
    assert store.order(coid)["status"] == "OPEN" and broker.executions() == 0
    assert run(env, batch).working == 1 and broker.executions() == 0  # a rerun before the open: still one working order
    real = store._apply_fill

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(store, "_apply_fill", crash)
    with pytest.raises(KeyboardInterrupt):
        settle(env, {"A": 10.0})
    assert store.order(coid)["status"] == "OPEN" and store.positions() == {} and broker.executions() == 0
    monkeypatch.setattr(store, "_apply_fill", real)
    settle(env, {"A": 10.0})
    settle(env, {"A": 10.0})  # the session again: replayed, not refilled
    assert broker.executions() == 1 and store.positions() == {"A": 700} and store.order(coid)["status"] == "FILLED"
    assert run(env, batch).skipped_already_done == 1 and store.positions() == {"A": 700}


def test_breaker_trips_on_drawdown_and_survives_restart_until_reset(env, capsys):
    config, store, broker, audit, tmp = env
    run(env, orders(("A", "BUY", 2000, 1.0, 10.0)))
    settle(env, {"A": 10.0})
    store.update_peak(200_000.0)  # the book was worth twice as much: drawdown -50% >= 12%
    summary = run(env, orders(("B", "BUY", 100, 1.0, 10.0), ("A", "SELL", 100, 0.0, 9.0)), run_id="crash")
    assert summary.breaker_tripped and summary.rejections.get("B") == "circuit_breaker"
    store.close()
    reopened = ExecutionStore(tmp / "exec.db", 1.0)
    assert reopened.breaker()["tripped"] == 1
    from flows.cli import main

    assert main(["risk", "reset-breaker", "--db", str(tmp / "exec.db")]) == 2  # --by is required
    assert main(["risk", "reset-breaker", "--db", str(tmp / "exec.db"), "--by", "alice"]) == 0
    assert ExecutionStore(tmp / "exec.db", 1.0).breaker()["tripped"] == 0
    events = [json.loads(line) for line in (tmp / "audit.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "breaker_reset" and e["by"] == "alice" for e in events)
    assert main(["status", "--db", str(tmp / "exec.db")]) == 0
    assert "breaker      ok" in capsys.readouterr().out


def test_audit_log_has_one_json_line_per_signal(env):
    batch = orders(("A", "BUY", 1000, 1.0, 10.0), ("Q", "BUY", 100, 0.1, 10.0), ("Z", "SELL", 100, 0.0, 5.0))
    run(env, batch)
    lines = (env[4] / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    for rec in records:
        assert {"signal", "status", "risk_check_passed", "position_size", "position_value", "order_id",
                "rejection_reason", "timestamp"} <= set(rec)
    assert {r["signal"]["symbol"]: r["status"] for r in records} == {"A": "OPEN", "Q": "REJECTED", "Z": "REJECTED"}


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_payloads_reach_a_real_http_server_and_a_dead_one_does_not_block(env, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        run(env, orders(("A", "BUY", 1000, 1.0, 10.0), ("Q", "BUY", 100, 0.1, 10.0)), notifier=Notifier(url))
    finally:
        server.shutdown()
    levels = sorted(p["level"] for p in _Hook.received)
    assert levels == ["INFO", "WARNING", "WARNING"] and "A" in " ".join(p["text"] for p in _Hook.received)  # + cash above the buffer
    dead = Notifier("http://127.0.0.1:9/nothing-listens-here", retries=2, timeout=0.2, backoff=0.01)
    summary = run(env, orders(("B", "BUY", 1000, 1.0, 10.0)), notifier=dead, run_id="dead")
    assert summary.working == 1 and dead.failures >= 1


def test_webhook_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRENDFLOW_WEBHOOK_URL", "http://127.0.0.1:9/x")
    assert Notifier().url == "http://127.0.0.1:9/x"


def test_ibkr_mapping_without_network():
    pytest.importorskip("ib_async")
    from ib_async import CommissionReport, Execution, Fill

    from stages.trading.execution.brokers import IBKRSettings, from_ib_fills, to_ib_contract, to_ib_order

    settings = IBKRSettings(host="127.0.0.1", port=7497, client_id=1, account="DU123", exchange="SMART", currency="USD")
    contract = to_ib_contract("SPY.US", settings)
    assert (contract.symbol, contract.exchange, contract.currency, contract.secType) == ("SPY", "SMART", "USD", "STK")
    order = to_ib_order(BrokerOrder("TF-abc", "SPY", "BUY", 300, 400.0), settings)
    assert (order.action, order.totalQuantity, order.orderType, order.orderRef, order.account) == ("BUY", 300, "MKT", "TF-abc", "DU123")
    fills = [Fill(contract, Execution(shares=100, price=400.0), CommissionReport(commission=1.0), None),
             Fill(contract, Execution(shares=200, price=401.5), CommissionReport(commission=1.5), None)]
    fill = from_ib_fills("TF-abc", fills)
    assert fill.shares == 300 and fill.price == pytest.approx((100 * 400 + 200 * 401.5) / 300) and fill.commission == 2.5


def test_bad_profile_and_damaged_database_are_clear_errors(tmp_path):
    from stages.common.errors import ConfigError, TrendflowError

    with pytest.raises(ConfigError, match="presets"):
        load_profile("reckless")
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"name": "x", "max_position_size": "big"}))
    with pytest.raises(ConfigError, match="max_position_size"):
        load_profile(str(bad))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(TrendflowError, match="damaged"):
        ExecutionStore(junk, 1.0)
    assert np.isfinite(load_profile("conservative").max_drawdown)


# --------------------------------------------------------------------------- point-4 defects, one hand-made case each
def closes(**levels):
    """A prices frame with one close per symbol on DAY."""
    return pd.DataFrame({"date": pd.Timestamp(DAY), "symbol": list(levels), "close": list(levels.values())})


def test_a_zero_lot_order_is_size_too_small_and_does_not_block_the_rest_of_the_batch(env):
    # 100,000 x 0.15 x quality 0.5 = 7,500 < one lot of 100 at 2,000: size_too_small; the next buy still goes
    summary = run(env, orders(("BIG", "BUY", 100, 1.0, 2000.0), ("B", "BUY", 500, 0.9, 10.0)))
    assert summary.rejections == {"BIG": "size_too_small"}
    assert summary.working == 1 and any("position size too small" in w and "BIG" in w for w in summary.warnings)


def test_the_profiles_stop_loss_sells_a_holding_below_its_cost(env):
    config, store, *_ = env
    run(env, orders(("A", "BUY", 700, 1.0, 10.0)))
    settle(env, {"A": 10.0})
    # balanced: stop loss 7% -> below 10.003 x 0.93 = 9.30; the batch itself does not mention A
    summary = run(env, orders(("B", "BUY", 100, 0.9, 10.0)), run_id="next", prices=closes(A=9.2, B=10.0))
    coid = client_order_id(DAY, "A", "SELL", "next")
    assert store.order(coid)["reason"] == "stop_loss" and store.order(coid)["status"] == "OPEN" and summary.working == 2
    settle(env, {"A": 9.2, "B": 10.0}, "2024-03-05")
    assert "A" not in store.positions()
    held = run(env, orders(("C", "BUY", 100, 0.9, 10.0)), run_id="third", prices=closes(B=9.5, C=10.0))
    assert store.order(client_order_id(DAY, "B", "SELL", "third")) is None and held.working == 1  # 5% down: above the 7% stop


def test_a_rebalance_trim_stops_at_the_cash_buffer_maximum_but_an_exit_does_not(env):
    config, store, *_ = env
    run(env, orders(*[(f"S{i}", "BUY", 900, 1.0, 10.0) for i in range(3)]), profile="aggressive")
    settle(env, {f"S{i}": 10.0 for i in range(3)})
    assert store.positions() == {"S0": 900, "S1": 900, "S2": 900}  # 27% invested, cash ~73%
    room = 0.80 * (store.cash() + 2700 * 10.0) - store.cash()  # what the trim may add to cash: ~7,000
    trim = orders(("S0", "SELL", 900, 0.0, 10.0))
    trim["reason"] = "rebalance"
    summary = run(env, pd.concat([trim, orders(("S1", "SELL", 900, 0.0, 10.0))]), profile="aggressive", run_id="trim")
    assert summary.resized == {"S0": "cash_buffer_max"}
    approved = {s: store.order(client_order_id(DAY, s, "SELL", "trim"))["approved_shares"] for s in ("S0", "S1")}
    assert approved["S0"] == int(room // 1000) * 100 == 700  # the trim stops where cash reaches 80%
    assert approved["S1"] == 900  # an exit (atr_stop) is never held back
    assert any("above the buffer's upper edge" in w for w in summary.warnings)


def test_warnings_for_a_small_position_and_for_deployment_near_its_limit(env):
    summary = run(env, orders(("A", "BUY", 50, 1.0, 10.0)))  # 500 of 100,000 = 0.5% < 1%
    assert any("position size too small" in w and "A" in w for w in summary.warnings)
    assert not any("deployment" in w for w in summary.warnings)
    batch = orders(*[(f"S{i}", "BUY", 1000, 1.0, 10.0) for i in range(9)])
    big = run(env, batch, profile="aggressive", run_id="big")  # ~9-10% each: deployment reaches the 80% limit
    assert any("deployment limit approaching" in w for w in big.warnings)


def test_the_paper_broker_refuses_close_fills_it_cannot_make(tmp_path):
    from stages.common.errors import ConfigError

    config = load_config(None, ["execution.fill_price=close"])
    with pytest.raises(ConfigError, match="execution.fill_price=next_open"):
        PaperBroker(ExecutionStore(tmp_path / "x.db", 1.0), config)
