"""``endolink audit verify``: check the audit trail's hash chains and head file (exit 0 when
intact, 1 naming the first bad entry); with ``--files`` also every snapshot PNG against the hash
its audit entry recorded. Reads the database read-only, so it may run beside the server; with
``ENDOLINK_DATABASE_URL`` it reads the shared PostgreSQL trail against this node's head file."""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from persistence import postgres
from persistence.database import Connection
from signaling.db.audit import verify_database
from signaling.db.audit_chain import ANCHOR_FILENAME
from signaling.db.snapshot_audit import check_snapshot_files
from signaling.db.store import DB_FILENAME, valid_consultation_id
from signaling.settings import Settings


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    error: Callable[[str], Exception],
) -> None:
    """``audit verify [--consultation CID] [--json]``; ``error(message)`` makes a usage error."""
    audit = commands.add_parser("audit", help="check the audit trail")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="check every entry's hash and links and the head file (exit 1 on any problem)",
    )
    verify.add_argument(
        "--consultation", help="also count this consultation's entries (the whole trail is checked)"
    )
    verify.add_argument(
        "--files",
        action="store_true",
        help="also re-hash every snapshot PNG against its audit entry (MODIFIED, MISSING: exit 1)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=lambda args: _verify(args, error))


def _verify(args: argparse.Namespace, error: Callable[[str], Exception]) -> int:
    cid = args.consultation
    if cid is not None and not valid_consultation_id(cid):
        raise error(f"not a consultation id: {cid!r}")
    settings = Settings.from_env(data_dir=args.data_dir)
    data_dir = settings.data_dir
    database = data_dir / DB_FILENAME
    db: Connection
    if settings.database_url:
        db = postgres.connect(settings.database_url)
        has_trail = "SELECT 1 WHERE to_regclass('audit') IS NOT NULL"
    elif not database.is_file():
        raise error(f"no database in {data_dir}")
    else:
        db = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True)
        has_trail = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
    try:
        if db.execute(has_trail).fetchone() is None:
            return _no_trail((data_dir / ANCHOR_FILENAME).exists(), args.json)
        verdict = verify_database(db, data_dir / ANCHOR_FILENAME)
        count = None
        if cid is not None:
            query = "SELECT COUNT(*) FROM audit WHERE consultation_id = ?"
            (count,) = db.execute(query, (cid,)).fetchone() or (0,)
        files = check_snapshot_files(db, data_dir) if args.files else []
    finally:
        db.close()
    bad_files = [check for check in files if check.status != "OK"]
    if args.json:
        found = [vars(check) for check in bad_files] if args.files else None
        extra = {"consultation_entries": count, "snapshot_files": found}
        print(json.dumps({**verdict.to_json(), **extra}))
    elif verdict.ok:
        head = f"entry {verdict.head.seq} {verdict.head.hash}" if verdict.head else "empty"
        print(f"audit trail intact: {verdict.entries} entries, head {head}")
    else:
        print(f"audit trail NOT intact: first bad entry {verdict.seq}: {verdict.problem}")
    if count is not None and not args.json:
        print(f"consultation {cid}: {count} entries")
    if args.files and not args.json:
        for check in bad_files:
            print(f"snapshot {check.snapshot_id} of consultation {check.cid}: {check.status}")
        print(f"snapshot files: {len(files) - len(bad_files)} of {len(files)} match the trail")
    return 0 if verdict.ok and not bad_files else 1


def _no_trail(had_one: bool, as_json: bool) -> int:
    """No audit table: a data directory no server ran on yet, or (with a head file) one whose
    table was dropped."""
    problem = "the audit table is missing but its head file is not" if had_one else None
    if as_json:
        print(json.dumps({"ok": not had_one, "entries": 0, "problem": problem}))
    elif had_one:
        print(f"audit trail NOT intact: {problem}")
    else:
        print("no audit trail yet: the server has not run on this data directory")
    return 1 if had_one else 0
