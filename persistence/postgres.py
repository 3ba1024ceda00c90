"""The records on PostgreSQL, shared by every node of a cluster: the same ``run(fn)`` as
``persistence.sqlite.Database``, so each owner's query code serves both.

psycopg 3 (the maintained driver) with a *synchronous* connection in a worker thread, under a
lock, exactly like SQLite: owners' queries are plain functions of a connection, so one body of
query code runs on either backend, and the event loop never waits on the network. (psycopg's
async API would need every owner's queries written a second time, as coroutines.)

``PgConnection`` gives owners what they use of ``sqlite3.Connection``: ``?`` placeholders,
Python's sqlite3 transaction rules (a write opens a transaction, ``with db:`` commits it or rolls
it back, ``commit``/``rollback``), and ``BEGIN IMMEDIATE`` — SQLite's write lock — as a
transaction-level advisory lock (``WRITE_LOCK``): the audit writers of several nodes take it
before reading the chain's head, so they never fork the chain, and so do migrations, so two
nodes starting at once never both apply a step. A broken connection (the server restarted) is
replaced before the next query; the failed one raised ``psycopg.Error``
(``persistence.database.DATABASE_ERRORS``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import psycopg
from psycopg import pq

from persistence.sqlite import Migrations

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5
"How long opening a connection may take before the server counts as down."
WRITE_LOCK = 0x656E646F6C696E6B
"The advisory lock key (``endolink`` in ASCII) that ``BEGIN IMMEDIATE`` and migrations take."

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class PgConnection:
    """A psycopg connection (in autocommit mode: transactions are opened here, as Python's
    sqlite3 opens them) behind the ``persistence.database.Connection`` interface."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.raw = conn

    @property
    def broken(self) -> bool:
        return self.raw.broken

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb == "BEGIN":
            cursor = self.raw.execute("BEGIN")
            if "IMMEDIATE" in sql.upper():
                self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return cursor
        if verb in _WRITES and not self._in_transaction():
            self.raw.execute("BEGIN")
        return self.raw.execute(*_query(sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        if not self._in_transaction():
            self.raw.execute("BEGIN")
        cursor = self.raw.cursor()
        cursor.executemany(_placeholders(sql), parameters)
        return cursor

    def commit(self) -> None:
        if self._in_transaction():
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self._in_transaction():
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Literal[False]:
        if kind is None:
            self.commit()
        elif not self.raw.broken:
            self.rollback()
        return False

    def _in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE


def connect(url: str) -> PgConnection:
    """A new connection to ``url`` (raises ``psycopg.OperationalError`` when it cannot)."""
    conn = psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="endolink"
    )
    return PgConnection(conn)


class PostgresDatabase:
    """A connection to the database at ``url`` with the owners' tables up to date."""

    def __init__(self, url: str, *schemas: Migrations) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._closed = False
        self._db = connect(url)
        try:
            for schema in schemas:
                _migrate(self._db, schema)
        except BaseException:
            self._db.close()
            raise

    async def run(self, fn: Callable[[PgConnection], T]) -> T:
        """``fn(connection)`` in a worker thread, alone on the connection; commit with ``with``.
        A connection the server broke is replaced first (until ``close``)."""

        def locked() -> T:
            with self._lock:
                if self._db.broken and not self._closed:
                    self._db = connect(self._url)
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def close(self) -> None:
        """Idempotent; waits for the query in progress; never reconnects (the server may be
        gone: shutting down must not fail for it)."""

        def close() -> None:
            with self._lock:
                self._closed = True
                self._db.close()

        await asyncio.to_thread(close)


def _query(sql: str, parameters: Sequence[Any]) -> tuple[str, Sequence[Any] | None]:
    """sqlite3's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled); the SQL as
    written when there are no parameters."""
    return (_placeholders(sql), parameters) if parameters else (sql, None)


def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _migrate(db: PgConnection, schema: Migrations) -> None:
    """Bring ``schema.owner``'s PostgreSQL tables up to date in one transaction, under the
    advisory lock, so that two nodes starting at once do not both apply a step."""
    if not schema.postgres:
        raise ValueError(f"{schema.owner} has no PostgreSQL schema")
    conn = db.raw
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions"
            " (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE owner = %s", (schema.owner,)
        ).fetchone()
        version = 0 if row is None else int(row[0])
        target = len(schema.postgres)
        if version > target:
            raise RuntimeError(
                f"{schema.owner} schema version {version} is newer than this EndoLink "
                f"({target}): upgrade EndoLink"
            )
        for step in schema.postgres[version:]:
            conn.execute(step)  # no parameters: several statements may run at once
        conn.execute(
            "INSERT INTO schema_versions (owner, version) VALUES (%s, %s)"
            " ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
            (schema.owner, target),
        )
    if version < target:
        logger.info("%s schema migrated to version %d (PostgreSQL)", schema.owner, target)
