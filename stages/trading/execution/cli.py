"""`trendflow execute`, `trendflow risk`, `trendflow status`."""
from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from schemas.execution import RiskProfile
from stages.common.cli import add_common_arguments, config_from_args, parse_and_run
from stages.common.config import PROJECT_ROOT
from stages.common.errors import ConfigError
from stages.common.stage import resolve_out_dir

PROFILE_DIR = PROJECT_ROOT / "config" / "risk_profiles"


def load_profile(name_or_path: str) -> RiskProfile:
    """A preset name (conservative | balanced | aggressive) or a path to a profile JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.exists():
        presets = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
        raise ConfigError(f"risk profile {name_or_path!r} not found (presets: {', '.join(presets)})")
    try:
        return RiskProfile.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"key '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def _default_db(folder: Path) -> Path:
    return folder / "execution" / "trendflow.db"


def execute_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow execute",
                                     description="Send a daily run's orders to a broker under portfolio risk controls")
    add_common_arguments(parser)
    parser.add_argument("--orders", help="orders_YYYY-MM-DD.csv written by the daily trading run")
    parser.add_argument("--init", action="store_true",
                        help="create the account's execution database (--db, or <--out>/execution/trendflow.db) holding "
                             "config execution.initial_cash; the only way one is created")
    parser.add_argument("--out", "--output-dir", help="with --init and no --db: the artifact folder the database goes in")
    parser.add_argument("--broker", choices=["paper", "ibkr"], default="paper")
    parser.add_argument("--profile", default="balanced", help="risk profile: conservative | balanced | aggressive | FILE")
    parser.add_argument("--db", help="execution database (default: <orders folder>/execution/trendflow.db)")
    parser.add_argument("--audit", help="audit log (default: <orders folder>/execution/audit.jsonl)")
    parser.add_argument("--run-id", default="daily", help="part of each client order id; reruns with the same id never resubmit")

    def body(args: argparse.Namespace) -> int:
        from stages.common.folder_lock import writing
        from stages.trading.execution.executor import orders_date
        from stages.trading.execution.notify import Notifier
        from stages.trading.execution.store import ExecutionStore

        config = config_from_args(args)
        if args.init:
            db = Path(args.db) if args.db else _default_db(resolve_out_dir(args.out, config))
            if db.exists():
                raise ConfigError(f"--init: {db} already exists; it holds an account (delete it yourself to start over)")
            with writing(db.parent, wait=args.wait):
                ExecutionStore(db, config.execution.initial_cash).close()
            print(f"created execution database {db} holding cash {config.execution.initial_cash:,.2f}")
            return 0
        if not args.orders:
            raise ConfigError("--orders FILE is required (or --init to create the execution database)")
        profile = load_profile(args.profile)
        notifier = Notifier()  # a bad webhook URL is a config error here, before any order
        orders_path = Path(args.orders)
        orders_date(orders_path)  # a badly named file is refused before the lock is taken
        db = Path(args.db) if args.db else _default_db(orders_path.parent)
        with writing(db.parent, wait=args.wait):
            return _execute(args, config, profile, notifier, orders_path, db)

    def _execute(args, config, profile, notifier, orders_path, db) -> int:
        from stages.trading.execution.executor import execute_orders_file

        summary = execute_orders_file(orders_path, config=config, broker=args.broker, profile=profile, db=db,
                                      audit_path=Path(args.audit) if args.audit else None, run_id=args.run_id,
                                      notifier=notifier)
        print(f"executed {orders_path.name} on {args.broker} ({profile.name}): approved {summary.approved}, filled {summary.filled}, "
              f"working {summary.working}, rejected {summary.rejected}, failed {summary.failed}, "
              f"already done {summary.skipped_already_done}")
        for symbol, why in summary.resized.items():
            print(f"  resized {symbol}: {why}")
        for symbol, reason in summary.rejections.items():
            print(f"  rejected {symbol}: {reason}")
        return 1 if summary.failed else 0

    return parse_and_run(parser, body, argv)


def risk_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow risk", description="Show or reset the persisted circuit breaker")
    add_common_arguments(parser)
    parser.add_argument("action", choices=["show", "reset-breaker"])
    parser.add_argument("--out", "--output-dir", help="artifact folder holding execution/trendflow.db (default: config output.folder)")
    parser.add_argument("--db", help="execution database path")
    parser.add_argument("--by", help="who resets the breaker (recorded in the audit log); required for reset-breaker")

    def body(args: argparse.Namespace) -> int:
        from stages.trading.execution.notify import AuditLog
        from stages.trading.execution.store import ExecutionStore, now

        from stages.common.folder_lock import writing

        config = config_from_args(args)
        db = Path(args.db) if args.db else _default_db(resolve_out_dir(args.out, config))
        if args.action == "show":
            store = ExecutionStore(db, config.execution.initial_cash, create=False)  # never creates one
            breaker = store.breaker()
            print(json.dumps({"breaker_tripped": bool(breaker["tripped"]), "since": breaker["since"], "reason": breaker["reason"],
                              "cash": store.cash(), "peak_equity": store.peak_equity()}, indent=2))
            store.close()
            return 0
        if not args.by:
            raise ConfigError("reset-breaker needs --by NAME (recorded in the audit log)")
        if not db.is_file():
            raise ConfigError(f"no execution database at {db}: nothing to reset (check --out/--db)")
        with writing(db.parent, wait=args.wait):
            store = ExecutionStore(db, config.execution.initial_cash, create=False)
            try:
                breaker = store.breaker()
                if not breaker["tripped"]:
                    print(f"circuit breaker in {db} is not tripped: nothing to reset")
                    return 0
                store.reset_breaker(audit={"event": "breaker_reset", "by": args.by, "was_tripped": True,
                                           "previous_reason": breaker["reason"], "timestamp": now()})
                AuditLog(db.parent / "audit.jsonl").export(store)
            finally:
                store.close()
        print(f"circuit breaker reset by {args.by} (was tripped since {breaker['since']}: {breaker['reason']})")
        return 0

    return parse_and_run(parser, body, argv)


def status_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow status", description="Terminal dashboard of the execution state")
    add_common_arguments(parser)
    parser.add_argument("--out", "--output-dir", help="artifact folder holding execution/trendflow.db (default: config output.folder)")
    parser.add_argument("--db", help="execution database path")
    parser.add_argument("--date", type=date.fromisoformat, default=None, help="day for the execution counts (default: latest)")
    parser.add_argument("--lineage", action="store_true",
                        help="instead: every artifact in --out, what it was made from, and whether it is stale under this config")

    def body(args: argparse.Namespace) -> int:
        from stages.trading.execution.store import ExecutionStore

        config = config_from_args(args)
        if args.lineage:
            from stages.common.lineage import describe_folder

            print("\n".join(describe_folder(resolve_out_dir(args.out, config), config)))
            return 0
        db = Path(args.db) if args.db else _default_db(resolve_out_dir(args.out, config))
        store = ExecutionStore(db, config.execution.initial_cash, create=False)
        day = str(args.date) if args.date else (store.conn.execute("SELECT MAX(as_of_date) d FROM orders").fetchone()["d"] or "-")
        cost = {r["symbol"]: r["cost"] for r in store.conn.execute("SELECT symbol, cost FROM positions")}
        positions = store.positions()
        invested = sum(cost.values())
        cash = store.cash()
        breaker = store.breaker()
        counts = store.counts_for(day)
        print("trendflow execution status")
        print(f"  database     {db}")
        print(f"  cash         {cash:,.2f}")
        print(f"  invested     {invested:,.2f} at cost  (deployment {invested / max(cash + invested, 1e-9):.1%})")
        print(f"  breaker      {'TRIPPED since ' + str(breaker['since']) + ': ' + str(breaker['reason']) if breaker['tripped'] else 'ok'}")
        print(f"  {day}   executed {counts.get('FILLED', 0) + counts.get('PARTIALLY_FILLED', 0)}, "
              f"working {counts.get('OPEN', 0) + counts.get('SUBMITTED', 0)}, rejected {counts.get('REJECTED', 0)}, "
              f"failed {counts.get('FAILED', 0)}, expired {counts.get('EXPIRED', 0)}")
        print("  positions" + ("" if positions else "   (none)"))
        for symbol, shares in positions.items():
            print(f"    {symbol:<12} {shares:>10,d} shares   cost {cost[symbol]:>14,.2f}")
        return 0

    return parse_and_run(parser, body, argv)


def reconcile_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "trendflow reconcile", description=(
        "The executed book against the model's: accept a broker position the model does not know, or load the "
        "IBKR account's positions and cash into the execution database"))
    add_common_arguments(parser)
    parser.add_argument("--out", "--output-dir", help="artifact folder holding execution/trendflow.db (default: config output.folder)")
    parser.add_argument("--db", help="execution database path")
    parser.add_argument("--accept", action="append", default=[], metavar="SYMBOL",
                        help="adopt this broker position into the model's book from the next daily run (repeatable)")
    parser.add_argument("--by", help="who accepts (recorded in the audit log); required with --accept")
    parser.add_argument("--sync", choices=["ibkr"], help="replace the database's positions and cash with the broker's")

    def body(args: argparse.Namespace) -> int:
        from stages.common.folder_lock import writing
        from stages.trading.execution.notify import AuditLog, Notifier
        from stages.trading.execution.store import ExecutionStore, now

        config = config_from_args(args)
        db = Path(args.db) if args.db else _default_db(resolve_out_dir(args.out, config))
        if args.accept and not args.by:
            raise ConfigError("--accept needs --by NAME (recorded in the audit log)")
        if not args.accept and not args.sync:
            store = ExecutionStore(db, config.execution.initial_cash, create=False)
            print(json.dumps({"cash": store.cash(), "positions": store.positions(), "accepted": store.accepted()}, indent=2))
            store.close()
            return 0
        with writing(db.parent, wait=args.wait):
            store = ExecutionStore(db, config.execution.initial_cash, create=False)
            try:
                _reconcile(args, store, AuditLog(db.parent / "audit.jsonl"), Notifier(), now)
            finally:
                store.close()
        return 0

    def _reconcile(args, store, audit, notifier, now) -> None:
        if args.sync:
            from stages.trading.book import sync_broker_book

            sync_broker_book(store, args.sync, notifier=notifier, say=print)
        held = store.positions()
        for symbol in args.accept:
            if symbol not in held:
                raise ConfigError(f"--accept {symbol}: the executed book holds no {symbol} (it holds {sorted(held) or 'nothing'})")
            store.accept_position(symbol, held[symbol], args.by)
            print(f"accepted {held[symbol]} {symbol} into the model's book (by {args.by})")
        audit.export(store)

    return parse_and_run(parser, body, argv)
