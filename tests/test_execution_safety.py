"""Durable execution state: only --init creates an account, a damaged database is an error, the audit
record is committed with the change it describes, lock contention and bad webhooks are one line."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from schemas.trading import OrdersSchema
from stages.common.artifacts import stage_run
from stages.common.config import load_config
from stages.common.errors import ConfigError, TransientIOError, TrendflowError
from stages.trading.execution.brokers import PaperBroker
from stages.trading.execution.cli import load_profile
from stages.trading.execution.executor import execute_orders
from stages.trading.execution.notify import WEBHOOK_ENV, AuditLog, Notifier
from stages.trading.execution.store import ExecutionStore

DAY = date(2024, 3, 1)


def wait_bounded(pid: int, seconds: float = 60.0) -> int:
    """os.waitpid with a deadline: a forked child that hangs fails the test instead of the CI run."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} did not finish in {seconds:g}s")


def _orders(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(symbol=s, action="BUY", shares=n, reason="new_entry", signal_strength=q, momentum_score=1.0,
                              target_weight=0.1, current_price=p, estimated_value=n * p) for s, n, q, p in rows])


BATCH = _orders(("A", 1000, 1.0, 10.0), ("B", 500, 1.0, 20.0), ("Q", 100, 0.1, 10.0), ("C", 300, 0.9, 30.0))


def _orders_file(folder: Path) -> Path:
    with stage_run("trading", folder, csv_twins=False) as run:
        run.write(BATCH, f"orders_{DAY}.csv", OrdersSchema)
    return folder / f"orders_{DAY}.csv"


def test_only_init_creates_an_account_and_an_existing_file_must_be_one(tmp_path, capsys):
    orders = _orders_file(tmp_path)
    db = tmp_path / "execution" / "trendflow.db"
    assert main(["execute", "--orders", str(orders)]) == 2
    assert f"no execution database at {db}: create the account once with `trendflow execute --init" in capsys.readouterr().err
    assert not db.exists()
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 0 and db.is_file()
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    for content, why in [(b"", "is empty (0 bytes)"), (b"not a database" * 100, "is damaged or not a SQLite file")]:
        db.write_bytes(content)
        assert main(["execute", "--orders", str(orders)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0] and str(db) in err[0]
        assert db.read_bytes() == content  # never taken as a new account
    db.unlink()
    foreign = sqlite3.connect(db)
    foreign.execute("CREATE TABLE customers (id INTEGER)")
    foreign.commit()
    foreign.close()
    assert main(["execute", "--orders", str(orders)]) == 2
    assert "is not a trendflow execution database" in capsys.readouterr().err
    assert [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")] == ["customers"]


def test_risk_commands_refuse_a_folder_without_a_database_and_create_none(tmp_path, capsys):
    mistyped = tmp_path / "ouput"
    assert main(["risk", "show", "--out", str(mistyped)]) == 2
    assert "no execution database at" in capsys.readouterr().err
    assert main(["risk", "reset-breaker", "--by", "alice", "--out", str(mistyped)]) == 2
    assert "nothing to reset" in capsys.readouterr().err
    assert not mistyped.exists()
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["risk", "reset-breaker", "--by", "alice", "--out", str(tmp_path)]) == 0
    assert "is not tripped: nothing to reset" in capsys.readouterr().out
    assert not (tmp_path / "execution" / "audit.jsonl").exists()


def test_a_bad_webhook_url_is_a_config_error_before_any_order(tmp_path, capsys, monkeypatch):
    orders = _orders_file(tmp_path)
    assert main(["execute", "--init", "--out", str(tmp_path)]) == 0
    for url in ("file:///etc/passwd", "htp://hooks.example.com/x", "https://"):
        monkeypatch.setenv(WEBHOOK_ENV, url)
        assert main(["execute", "--orders", str(orders)]) == 2
        assert f"error: {WEBHOOK_ENV}: {url!r} is not an http(s) URL with a host" in capsys.readouterr().err
    db = sqlite3.connect(tmp_path / "execution" / "trendflow.db")
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
    with pytest.raises(ConfigError, match="the webhook URL"):
        Notifier(url="file:///tmp/x")


def test_a_database_locked_by_another_process_is_retried_then_one_transient_error(tmp_path):
    db = tmp_path / "trendflow.db"
    ExecutionStore(db, 1000.0).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = ExecutionStore(db, 1000.0, create=False, busy_timeout=0.05)
        with pytest.raises(TransientIOError, match="is locked by another process .*3 tries") as err:
            store.reset_breaker()
        assert err.value.exit_code == 3
    finally:
        holder.execute("ROLLBACK")
    store.reset_breaker()  # free again: works


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="kills a forked executor")
def test_a_kill_at_any_point_of_a_batch_loses_no_audit_record(tmp_path):
    """Each state change commits with its audit record; audit.jsonl catches up on the next run."""
    config = load_config(None, ["execution.initial_cash=100000", "execution.slippage_bps=0"])
    commits = 0
    while True:
        commits += 1
        folder = tmp_path / f"kill{commits}"
        folder.mkdir()
        db = folder / "trendflow.db"
        ExecutionStore(db, 100000.0).close()
        pid = os.fork()
        if pid == 0:
            try:
                done = [0]
                real = ExecutionStore.transaction

                def killing(self):
                    context = real(self)

                    class Counted:
                        def __enter__(self_):
                            return context.__enter__()

                        def __exit__(self_, *exc):
                            result = context.__exit__(*exc)
                            done[0] += 1
                            if done[0] == commits:
                                os.kill(os.getpid(), signal.SIGKILL)  # right after a commit, before any export
                            return result
                    return Counted()

                ExecutionStore.transaction = killing
                store = ExecutionStore(db, 100000.0, create=False)
                execute_orders(BATCH, store=store, broker=PaperBroker(store, config), profile=load_profile("balanced"),
                               config=config, as_of=DAY, audit=AuditLog(folder / "audit.jsonl"))
            finally:
                os._exit(0)
        status = wait_bounded(pid)
        killed = os.WIFSIGNALED(status)
        store = ExecutionStore(db, 100000.0, create=False)
        decided = {r[0] for r in store.conn.execute("SELECT client_order_id FROM orders WHERE status IN ('REJECTED','OPEN')")}
        recorded = [r["order_id"] for r in store.audit_since(0) if "order_id" in r]
        assert sorted(recorded) == sorted(decided), f"killed after commit {commits}"
        AuditLog(folder / "audit.jsonl").export(store)  # what the next run does first
        lines = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()] if recorded else []
        assert sorted(r["order_id"] for r in lines if "order_id" in r) == sorted(decided)
        assert [r["seq"] for r in lines] == sorted({r["seq"] for r in lines})  # each once, in order
        store.close()
        if not killed:
            break
    assert commits > 8 and len(decided) == len(BATCH)
