"""The audit table's latest CHECK allows exactly the actions ``AuditAction`` names: an action
without a migration would fail every request that records it, at run time."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from persistence.sqlite import Database
from signaling.db.audit_schema import SCHEMA, AuditAction


async def test_the_table_allows_exactly_the_named_actions(tmp_path: Path) -> None:
    database = Database(tmp_path / "audit.sqlite3", SCHEMA)
    try:

        def table_sql(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'audit'").fetchone()
            return str(row[0])

        sql = await database.run(table_sql)
    finally:
        await database.close()
    check = re.search(r"action\s+TEXT NOT NULL CHECK \(action IN \(([^)]*)\)\)", sql)
    assert check is not None, sql
    allowed = set(re.findall(r"'([^']+)'", check.group(1)))
    assert allowed == {str(action) for action in AuditAction}
