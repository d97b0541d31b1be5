"""Persisted execution state in one SQLite file: orders and their lifecycle, fills, positions,
cash, the circuit breaker, and the audit trail. Every change is a transaction, and the audit
record describing a change is written in the same transaction (then exported to audit.jsonl),
so a kill can lose neither without the other. WAL keeps readers unblocked.

Only a missing file is ever created (`trendflow execute --init`): an existing file that is empty,
not SQLite, or has no trendflow schema is an error, never a fresh account."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from stages.common.errors import ConfigError, TransientIOError, TrendflowError

SCHEMA_VERSION = 1
# OPEN: working at the broker (a paper order waits for the next session's open; an IBKR order for
# its final state), possibly with partial fills already recorded. EXPIRED: a day order that got no
# fill (no price at the open). PARTIALLY_FILLED is final: the remainder is no longer working.
STATUSES = ("PENDING", "APPROVED", "REJECTED", "SUBMITTED", "OPEN", "FILLED", "PARTIALLY_FILLED", "FAILED", "EXPIRED")
WORKING = ("SUBMITTED", "OPEN")
TRANSITIONS = {
    "PENDING": {"APPROVED", "REJECTED"},
    "APPROVED": {"SUBMITTED", "FAILED"},
    "SUBMITTED": {"OPEN", "FILLED", "PARTIALLY_FILLED", "FAILED", "EXPIRED"},
    "OPEN": {"OPEN", "FILLED", "PARTIALLY_FILLED", "FAILED", "EXPIRED"},
}
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, as_of_date TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('BUY','SELL')), requested_shares INTEGER NOT NULL, approved_shares INTEGER,
    status TEXT NOT NULL, reason TEXT, quality REAL, rejection_reason TEXT, broker TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
    shares INTEGER NOT NULL, price REAL NOT NULL, commission REAL NOT NULL, filled_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, shares INTEGER NOT NULL CHECK (shares >= 0), cost REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS breaker (id INTEGER PRIMARY KEY CHECK (id = 1), tripped INTEGER NOT NULL,
    since TEXT, reason TEXT);
CREATE TABLE IF NOT EXISTS paper_executions (client_order_id TEXT PRIMARY KEY, shares INTEGER NOT NULL,
    price REAL NOT NULL, commission REAL NOT NULL, executed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settlements (session TEXT PRIMARY KEY, record TEXT NOT NULL, settled_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accepted_positions (symbol TEXT PRIMARY KEY, shares INTEGER NOT NULL, accepted_by TEXT NOT NULL,
    accepted_at TEXT NOT NULL);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ExecutionStore:
    """The one place that reads and writes execution state."""

    def __init__(self, path: str | Path, initial_cash: float, *, create: bool = True, busy_timeout: float = 5.0):
        """Open the database at `path`; with `create`, a missing file becomes a new account holding
        `initial_cash` (built beside it and renamed into place, so a kill never leaves half a schema)."""
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        if not self.path.exists():
            if not create:
                raise ConfigError(f"no execution database at {self.path}: create the account once with "
                                  f"`trendflow execute --init --db {self.path}`")
            _create(self.path, initial_cash)
        if self.path.is_dir():
            raise ConfigError(f"execution database {self.path} is a folder, not a file")
        if self.path.stat().st_size == 0:
            raise TrendflowError(f"execution database {self.path} is empty (0 bytes): it is not an account; "
                                 "restore it from a backup (only `trendflow execute --init` creates a new one)")
        try:
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            version = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise TransientIOError(f"execution database {self.path} is locked by another process: {exc}") from None
            if "no such table" in str(exc):
                raise TrendflowError(f"execution database {self.path} is not a trendflow execution database "
                                     "(no schema); restore it from a backup or point --db at the right file") from None
            raise TrendflowError(f"execution database {self.path} is damaged or not a SQLite file: {exc}") from None
        if version is None:
            raise TrendflowError(f"execution database {self.path} has no schema version: not a trendflow execution "
                                 "database; restore it from a backup")
        if int(version["value"]) != SCHEMA_VERSION:
            raise TrendflowError(f"execution database {self.path} has schema version {version['value']}, expected {SCHEMA_VERSION}")
        self._retrying(lambda: (self.conn.execute("PRAGMA journal_mode=WAL"), self.conn.execute("PRAGMA foreign_keys=ON"),
                                self.conn.executescript(_DDL)))  # tables added since the file was made

    def _retrying(self, work, attempts: int = 3):
        """`work()`, retried while another process holds the database's write lock; then one line, exit 3."""
        for attempt in range(1, attempts + 1):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if attempt == attempts:
                    raise TransientIOError(f"execution database {self.path} is locked by another process "
                                           f"({attempts} tries, {self.busy_timeout:g}s each); try again") from None
                time.sleep(0.1 * attempt)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        self._retrying(lambda: cur.execute("BEGIN IMMEDIATE"))
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # orders ------------------------------------------------------------------
    def order(self, client_order_id: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,)).fetchone()

    def insert_pending(self, coid: str, run_id: str, as_of: str, symbol: str, side: str, shares: int, reason: str, broker: str) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT INTO orders (client_order_id, run_id, as_of_date, symbol, side, requested_shares, status, "
                        "reason, broker, created_at, updated_at) VALUES (?,?,?,?,?,?,'PENDING',?,?,?,?)",
                        (coid, run_id, as_of, symbol, side, shares, reason, broker, now(), now()))

    def set_status(self, coid: str, status: str, *, audit: dict | None = None, **fields) -> None:
        """Move an order to `status` (and set `fields`), with its `audit` record in the same transaction."""
        current = self.order(coid)["status"]
        if status not in TRANSITIONS.get(current, set()):
            raise TrendflowError(f"order {coid}: illegal status change {current} -> {status}")
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as cur:
            cur.execute(f"UPDATE orders SET status=?, updated_at=?{', ' + sets if sets else ''} WHERE client_order_id=?",
                        (status, now(), *fields.values(), coid))
            _insert_audit(cur, audit)

    def record_fill(self, coid: str, side: str, symbol: str, shares: int, price: float, commission: float, status: str,
                    *, audit: dict | None = None, book: bool = True) -> None:
        """Fill, position, cash, order status and the audit record change together or not at all
        (`book=False`: a fill the broker's own positions and cash, loaded next, already hold)."""
        with self.transaction() as cur:
            self._apply_fill(cur, coid, side, symbol, shares, price, commission, status, book=book)
            _insert_audit(cur, audit)

    # audit -------------------------------------------------------------------
    def add_audit(self, record: dict) -> None:
        """An audit record that goes with no state change (e.g. an order still working at a re-poll)."""
        with self.transaction() as cur:
            _insert_audit(cur, record)

    def audit_since(self, seq: int) -> list[dict]:
        """Audit records after sequence number `seq`, oldest first, each with its `seq`."""
        rows = self.conn.execute("SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq", (seq,))
        return [{**json.loads(r["record"]), "seq": int(r["seq"])} for r in rows]

    @staticmethod
    def _apply_fill(cur: sqlite3.Cursor, coid: str, side: str, symbol: str, shares: int, price: float, commission: float,
                    status: str, *, book: bool = True) -> None:
        cur.execute("INSERT INTO fills (client_order_id, shares, price, commission, filled_at) VALUES (?,?,?,?,?)",
                    (coid, shares, price, commission, now()))
        if not book:
            cur.execute("UPDATE orders SET status=?, updated_at=? WHERE client_order_id=?", (status, now(), coid))
            return
        row = cur.execute("SELECT shares, cost FROM positions WHERE symbol=?", (symbol,)).fetchone()
        held, cost = (row["shares"], row["cost"]) if row else (0, 0.0)
        if side == "BUY":
            held, cost = held + shares, cost + shares * price + commission
            cash_change = -(shares * price + commission)
        else:
            avg = cost / held if held else 0.0
            held, cost = held - shares, cost - avg * shares
            cash_change = shares * price - commission
        cur.execute("INSERT INTO positions VALUES (?,?,?) ON CONFLICT(symbol) DO UPDATE SET shares=excluded.shares, "
                    "cost=excluded.cost", (symbol, held, cost))
        cur.execute("DELETE FROM positions WHERE shares=0")
        cur.execute("UPDATE account SET value=value+? WHERE key='cash'", (cash_change,))
        cur.execute("UPDATE orders SET status=?, updated_at=? WHERE client_order_id=?", (status, now(), coid))

    # account -----------------------------------------------------------------
    def cash(self) -> float:
        return float(self.conn.execute("SELECT value FROM account WHERE key='cash'").fetchone()["value"])

    def peak_equity(self) -> float:
        return float(self.conn.execute("SELECT value FROM account WHERE key='peak_equity'").fetchone()["value"])

    def update_peak(self, equity: float) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE account SET value=MAX(value, ?) WHERE key='peak_equity'", (equity,))

    def costs(self) -> dict[str, float]:
        return {r["symbol"]: float(r["cost"]) for r in self.conn.execute("SELECT symbol, cost FROM positions ORDER BY symbol")}

    def positions(self) -> dict[str, int]:
        return {r["symbol"]: int(r["shares"]) for r in self.conn.execute("SELECT symbol, shares FROM positions ORDER BY symbol")}

    # breaker -----------------------------------------------------------------
    def breaker(self) -> sqlite3.Row:
        return self.conn.execute("SELECT * FROM breaker WHERE id=1").fetchone()

    def trip_breaker(self, reason: str, *, audit: dict | None = None) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE breaker SET tripped=1, since=?, reason=? WHERE id=1", (now(), reason))
            _insert_audit(cur, audit)

    def reset_breaker(self, *, audit: dict | None = None) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE breaker SET tripped=0, since=NULL, reason=NULL WHERE id=1")
            _insert_audit(cur, audit)

    # the executed book: settlement of working orders, accepted foreign positions ---------------------
    def working_orders(self, broker: str, as_of: str | None = None) -> list[sqlite3.Row]:
        """Orders still working at `broker` (decided at `as_of`, or any day), oldest first."""
        sql = f"SELECT * FROM orders WHERE broker=? AND status IN {WORKING}" + (" AND as_of_date=?" if as_of else "")
        return list(self.conn.execute(sql + " ORDER BY as_of_date, created_at, client_order_id", (broker, as_of) if as_of else (broker,)))

    def filled_shares(self, coid: str) -> int:
        return int(self.conn.execute("SELECT COALESCE(SUM(shares), 0) n FROM fills WHERE client_order_id=?", (coid,)).fetchone()["n"])

    def settlement(self, session: str) -> dict | None:
        """The recorded settlement of `session` (book before, working orders, fills), or None."""
        row = self.conn.execute("SELECT record FROM settlements WHERE session=?", (session,)).fetchone()
        return None if row is None else json.loads(row["record"])

    def settle(self, session: str, record: dict, fills: list[dict], expired: list[str], actions: dict | None = None) -> None:
        """The session's corporate actions on the paper book (`actions`: cash credited, new share
        counts), the fills of working paper orders at its open, the expired ones, the settlement record
        and its audit record: all in one transaction, so a crash leaves either none of it or all of it."""
        with self.transaction() as cur:
            if actions:
                cur.execute("UPDATE account SET value=value+? WHERE key='cash'", (actions.get("cash", 0.0),))
                for symbol, shares in actions.get("shares", {}).items():
                    cur.execute("UPDATE positions SET shares=? WHERE symbol=?", (shares, symbol))
                cur.execute("DELETE FROM positions WHERE shares=0")
            _insert_audit(cur, {"event": "paper_settlement", "session": session, "fills": fills, "expired": expired,
                                "timestamp": now()})
            for f in fills:
                cur.execute("INSERT INTO paper_executions VALUES (?,?,?,?,?)",
                            (f["client_order_id"], f["shares"], f["price"], f["commission"], now()))
                self._apply_fill(cur, f["client_order_id"], f["side"], f["symbol"], f["shares"], f["price"], f["commission"],
                                 f["status"])
            for coid in expired:
                cur.execute("UPDATE orders SET status='EXPIRED', rejection_reason=COALESCE(rejection_reason, "
                            "'no fill at the open'), updated_at=? WHERE client_order_id=?", (now(), coid))
            cur.execute("INSERT INTO settlements VALUES (?,?,?)", (session, json.dumps(record, sort_keys=True), now()))

    def record_engine_fills(self, as_of: str, fills: list[dict]) -> None:
        """Fills the day step itself made on the paper book at the close (a holding whose data ended,
        sold at its last close): each as a filled order of the paper broker, once (a rerun finds them)."""
        with self.transaction() as cur:
            for f in fills:
                if cur.execute("SELECT 1 FROM orders WHERE client_order_id=?", (f["client_order_id"],)).fetchone():
                    continue
                cur.execute("INSERT INTO orders (client_order_id, run_id, as_of_date, symbol, side, requested_shares, "
                            "approved_shares, status, reason, broker, created_at, updated_at) "
                            "VALUES (?,'engine',?,?,?,?,?,'SUBMITTED',?,'paper',?,?)",
                            (f["client_order_id"], as_of, f["symbol"], f["side"], f["shares"], f["shares"], f["reason"], now(), now()))
                self._apply_fill(cur, f["client_order_id"], f["side"], f["symbol"], f["shares"], f["price"], f["commission"],
                                 "FILLED")
                _insert_audit(cur, {"event": "engine_fill", **f, "timestamp": now()})

    def accepted(self) -> dict[str, int]:
        return {r["symbol"]: int(r["shares"]) for r in self.conn.execute("SELECT symbol, shares FROM accepted_positions")}

    def accept_position(self, symbol: str, shares: int, by: str) -> None:
        """The model may adopt this broker position; recorded with its audit record in one transaction."""
        with self.transaction() as cur:
            _insert_audit(cur, {"event": "position_accepted", "symbol": symbol, "shares": shares, "by": by, "timestamp": now()})
            cur.execute("INSERT INTO accepted_positions VALUES (?,?,?,?) ON CONFLICT(symbol) DO UPDATE SET "
                        "shares=excluded.shares, accepted_by=excluded.accepted_by, accepted_at=excluded.accepted_at",
                        (symbol, shares, by, now()))

    def set_book(self, positions: dict[str, tuple[int, float]], cash: float, *, broker: str = "ibkr",
                 audit: dict | None = None) -> None:
        """Replace positions (symbol -> (shares, cost)) and cash with `broker`'s own book; from then on the
        account's book is that broker's (`book_broker`)."""
        with self.transaction() as cur:
            _insert_audit(cur, audit)
            cur.execute("INSERT INTO meta VALUES ('book_broker', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (broker,))
            cur.execute("DELETE FROM positions")
            cur.executemany("INSERT INTO positions VALUES (?,?,?)", [(s, n, c) for s, (n, c) in positions.items() if n > 0])
            cur.execute("UPDATE account SET value=? WHERE key='cash'", (cash,))

    def book_broker(self) -> str | None:
        """The real broker whose book this account holds (set by a sync), or None for a paper account."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='book_broker'").fetchone()
        return None if row is None else str(row["value"])

    def counts_for(self, as_of: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) n FROM orders WHERE as_of_date=? GROUP BY status", (as_of,))
        return {r["status"]: int(r["n"]) for r in rows}


def _insert_audit(cur: sqlite3.Cursor, record: dict | None) -> None:
    if record is not None:
        cur.execute("INSERT INTO audit (record) VALUES (?)",
                    (json.dumps(record, sort_keys=True, default=str, allow_nan=False),))


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _create(path: Path, initial_cash: float) -> None:
    """A new account database: built under a temp name, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(_DDL)
            conn.execute("BEGIN")
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT INTO account VALUES ('cash', ?), ('peak_equity', ?)", (initial_cash, initial_cash))
            conn.execute("INSERT INTO breaker VALUES (1, 0, NULL, NULL)")
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
