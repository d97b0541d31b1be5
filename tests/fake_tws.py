"""A stand-in for TWS / IB Gateway on 127.0.0.1 that speaks the IB socket protocol as ib_async does
(read from ib_async 2.x client.py, decoder.py, wrapper.py): the "API\\0" handshake with server
version and time, startApi -> nextValidId + managedAccounts, the start-up sync (positions, open and
completed orders, account updates, executions, each answered with its end marker), and placeOrder,
answered by a scripted sequence of orderStatus / execDetails / commissionReport messages. A scripted
fill also books into the account, as TWS does: positions, cash and the executions a later connection
is told about.

Only what the IBKR adapter uses is spoken; every message the client sends is kept in `received`.
"""
from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

SERVER_VERSION = 176  # >= ib_async's MinClientVersion 157; < 178, so execDetails has no pendingPriceRevision


def frame(*fields) -> bytes:
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


@dataclass
class Placed:
    """An order as the client sent it: id, contract routing, side, quantity and orderRef."""

    order_id: int
    symbol: str
    exchange: str
    currency: str
    action: str
    quantity: float
    order_ref: str
    fields: list[str]


# A script step: (seconds to wait, kind, values). kinds: status (status, filled, remaining, avg_price),
# fill (shares, price, commission).
Step = tuple[float, str, tuple]


@dataclass
class FakeTWS:
    positions: list[tuple[str, str, str, float, float]] = field(default_factory=list)  # symbol, exchange, ccy, qty, avg cost
    cash: float = 0.0
    account: str = "DU123"
    script: Callable[[Placed], list[Step]] = lambda placed: []
    # executions the account already has (answering reqExecutions): order_ref, symbol, exchange, ccy, side, shares, price, fee
    executions: list[tuple[str, str, str, str, str, float, float, float]] = field(default_factory=list)
    received: list[list[str]] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)

    def __enter__(self) -> "FakeTWS":
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                fake._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    # ------------------------------------------------------------------ protocol
    def _serve(self, sock: socket.socket) -> None:
        reader = _Reader(sock)
        if reader.exact(4) != b"API\0":
            return
        reader.message()  # "v157..178"
        send = lambda *f: sock.sendall(frame(*f))  # noqa: E731
        send(SERVER_VERSION, "20261204 10:00:00 UTC")
        next_exec = [1]
        while True:
            fields = reader.fields()
            if fields is None:
                return
            self.received.append(fields)
            msg = int(fields[0])
            if msg == 71:  # startApi
                send(9, 1, 1)  # nextValidId
                send(15, 1, self.account)  # managedAccounts
            elif msg == 61:  # reqPositions
                for con_id, (symbol, exchange, currency, qty, cost) in enumerate(self.positions, start=1):
                    send(61, 3, self.account, con_id, symbol, "STK", "", 0.0, "", "", exchange, currency, symbol, "", qty, cost)
                send(62, 1)
            elif msg == 5:  # reqOpenOrders
                send(53, 1)
            elif msg == 99:  # reqCompletedOrders
                send(102)
            elif msg == 6:  # reqAccountUpdates
                send(6, 2, "TotalCashValue", self.cash, "BASE", self.account)
                send(54, 1, self.account)
            elif msg == 76:  # reqAccountUpdatesMulti
                send(74, 1, fields[2])
            elif msg == 7:  # reqExecutions
                for k, (ref, symbol, exchange, currency, side, shares, price, fee) in enumerate(self.executions, start=1):
                    exec_id = f"0000.{k:04d}"
                    send(11, fields[2], 900 + k, 0, symbol, "STK", "", 0.0, "", "", exchange, currency, symbol, "", exec_id,
                         "20261203 09:30:01 UTC", self.account, exchange, "BOT" if side == "BUY" else "SLD", shares, price,
                         5000 + k, 17, 0, shares, price, ref, "", "", "", 1)
                    send(59, 1, exec_id, fee, currency, "", "", "")
                send(55, 1, fields[2])
            elif msg == 3:  # placeOrder
                placed = _placed(fields)
                self.placed.append(placed)
                threading.Thread(target=self._play, args=(send, placed, next_exec), daemon=True).start()

    def _play(self, send, placed: Placed, next_exec: list[int]) -> None:
        filled = 0.0
        for wait, kind, values in self.script(placed):
            time.sleep(wait)
            if kind == "status":
                status, done, remaining, avg = values
                send(3, placed.order_id, status, done, remaining, avg, 1000 + placed.order_id, 0, avg, 17, "", 0.0)
            else:
                shares, price, commission = values
                filled += shares
                exec_id = f"0001.{next_exec[0]:04d}"
                next_exec[0] += 1
                send(11, -1, placed.order_id, 0, placed.symbol, "STK", "", 0.0, "", "", placed.exchange, placed.currency,
                     placed.symbol, "", exec_id, "20261204 10:00:01 UTC", self.account, placed.exchange,
                     "BOT" if placed.action == "BUY" else "SLD", shares, price, 1000 + placed.order_id, 17, 0, filled, price,
                     placed.order_ref, "", "", "", 1)
                send(59, 1, exec_id, commission, placed.currency, "", "", "")
                self.book_fill(placed, shares, price, commission)

    def book_fill(self, placed: Placed, shares: float, price: float, commission: float) -> None:
        """A fill into the account (a scripted one, or one a test makes "overnight", while no client is
        connected): the position (average cost), the cash and the executions a later connection gets."""
        sign = 1 if placed.action == "BUY" else -1
        key = (placed.symbol, placed.exchange, placed.currency)
        held = next((p for p in self.positions if p[:3] == key), None)
        qty, cost = (held[3], held[4]) if held else (0.0, 0.0)
        new_qty = qty + sign * shares
        new_cost = (qty * cost + shares * price) / new_qty if sign > 0 and new_qty else cost
        self.positions = [p for p in self.positions if p[:3] != key] + ([(*key, new_qty, new_cost)] if new_qty else [])
        self.cash -= sign * shares * price + commission
        self.executions.append((placed.order_ref, *key, placed.action, shares, price, commission))


def _placed(fields: list[str]) -> Placed:
    # [3, orderId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange, primaryExchange,
    #  currency, localSymbol, tradingClass, secIdType, secId, action, totalQuantity, orderType, ...]
    ref = next((f for f in fields if f.startswith("TF-")), "")
    return Placed(int(fields[1]), fields[3], fields[9], fields[11], fields[16], float(fields[17]), ref, fields)


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self) -> bytes | None:
        head = self.exact(4)
        return None if head is None else self.exact(struct.unpack(">I", head)[0])

    def fields(self) -> list[str] | None:
        body = self.message()
        return None if body is None else body.decode().split("\0")[:-1]
