"""The PostgreSQL backend behaves as owners expect of sqlite3: ``?`` placeholders, a write opens a
transaction that ``with db:`` commits or rolls back, ``BEGIN IMMEDIATE`` serialises writers,
constraint errors are ``INTEGRITY_ERRORS``, and each owner's PostgreSQL schema is its tables."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from persistence.database import (
    DATABASE_ERRORS,
    INTEGRITY_ERRORS,
    Connection,
    is_url,
    open_database,
)
from persistence.postgres import PostgresDatabase
from persistence.sqlite import Migrations
from signaling.db.audit_schema import SCHEMA as AUDIT
from signaling.db.audit_schema import AuditAction
from tests.postgres import query

COUNTER = Migrations(
    "counter",
    ("CREATE TABLE counter (n INTEGER NOT NULL);",),
    postgres=(
        "CREATE TABLE counter (n INTEGER NOT NULL);"
        " CREATE TABLE notes (k TEXT PRIMARY KEY, v TEXT);",
    ),
)


def test_urls_and_paths_are_told_apart() -> None:
    assert is_url("postgresql://u@h/db") and is_url("postgres://h/db")
    assert not is_url("data/endolink.sqlite3") and not is_url("sqlite:///x")


async def test_with_commits_a_write_and_rolls_back_a_failed_one(postgres_url: str) -> None:
    db = open_database(postgres_url, COUNTER)

    def write(c: Connection) -> None:
        with c:
            c.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("a", "100%"))

    def write_twice(c: Connection) -> None:
        with c:
            c.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("b", "kept?"))
            c.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("a", "again"))

    try:
        await db.run(write)
        with pytest.raises(INTEGRITY_ERRORS):
            await db.run(write_twice)
        rows = await db.run(
            lambda c: c.execute("SELECT k, v FROM notes WHERE v LIKE '%'").fetchall()
        )
        assert rows == [("a", "100%")]
        # Outside ``with`` a write waits for ``commit``: like sqlite3, closing discards it.
        updated = await db.run(lambda c: c.execute("UPDATE notes SET v = ?", ("x",)).rowcount)
        assert updated == 1
    finally:
        await db.close()
    assert query(postgres_url, "SELECT v FROM notes") == [("100%",)]


async def test_begin_immediate_serialises_read_then_write(postgres_url: str) -> None:
    """Two connections each read the counter and write it + 1 under BEGIN IMMEDIATE, 50 times:
    without the lock they would read the same value and lose increments."""
    dbs = [open_database(postgres_url, COUNTER) for _ in range(2)]

    def start(c: Connection) -> None:
        with c:
            c.execute("INSERT INTO counter (n) VALUES (0)")

    await dbs[0].run(start)

    def bump(c: Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        (n,) = c.execute("SELECT n FROM counter").fetchone()
        c.execute("UPDATE counter SET n = ?", (n + 1,))
        c.commit()

    try:
        await asyncio.gather(*(dbs[k % 2].run(bump) for k in range(100)))
    finally:
        for db in dbs:
            await db.close()
    assert query(postgres_url, "SELECT n FROM counter") == [(100,)]


async def test_a_closed_database_stays_closed(postgres_url: str) -> None:
    db = PostgresDatabase(postgres_url, COUNTER)
    await db.close()
    await db.close()
    with pytest.raises(DATABASE_ERRORS, match="closed"):
        await db.run(lambda c: c.execute("SELECT 1").fetchone())


def test_an_owner_without_a_postgresql_schema_is_refused(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="no PostgreSQL schema"):
        PostgresDatabase(postgres_url, Migrations("sqlite_only", ("CREATE TABLE x (a);",)))


async def test_queries_run_in_a_worker_thread(postgres_url: str) -> None:
    """Opening is synchronous (as SQLite's is); queries never run on the event loop's thread."""
    db = PostgresDatabase(postgres_url, COUNTER)
    try:
        thread = await db.run(lambda c: threading.current_thread())
        assert thread is not threading.main_thread()
    finally:
        await db.close()


async def test_the_audit_table_allows_exactly_the_named_actions(postgres_url: str) -> None:
    await PostgresDatabase(postgres_url, AUDIT).close()
    (check,) = query(
        postgres_url,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'audit_action_check'",
    )
    allowed = set(re.findall(r"'([^']+)'::text", check[0]))
    assert allowed == {str(action) for action in AuditAction}
