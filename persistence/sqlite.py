"""One SQLite connection shared by coroutines, and schema migrations registered by their owners.

SQLite calls block, so every query runs in a worker thread (``asyncio.to_thread``) on one
connection guarded by a lock: the event loop that forwards media never waits on the disk.
Several owners (the consultation store, the recordings index, the audit trail) keep tables in the
same file, each on its own ``Database``; each declares its own ``Migrations`` and its version is
kept in ``schema_versions``, so no module has to know another's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from persistence.files import PRIVATE_DIR, PRIVATE_FILE

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
"How long a write waits for another connection's (or process's) transaction to end."

_OWNER = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Migrations:
    """An owner's schema: ``steps[n]`` upgrades its tables from version n to n + 1.

    Append new steps; never edit a released one. ``legacy`` serves databases made before
    versions were kept per owner (one ``PRAGMA user_version`` for the whole file): for each
    step, the ``user_version`` from which that step had already been applied. ``postgres`` is
    the same tables' history in PostgreSQL's dialect (``persistence.postgres``), versioned apart:
    it starts at today's tables, so it needs none of SQLite's rebuilds.
    """

    owner: str
    steps: tuple[str, ...]
    legacy: tuple[int, ...] = ()
    postgres: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _OWNER.fullmatch(self.owner):
            raise ValueError(f"owner must match {_OWNER.pattern}: {self.owner!r}")
        if len(self.legacy) > len(self.steps):
            raise ValueError("more legacy versions than steps")

    @property
    def version(self) -> int:
        return len(self.steps)


class Database:
    """A connection to ``path`` (created if missing) with the owners' tables up to date."""

    def __init__(self, path: Path, *schemas: Migrations) -> None:
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        # Made private before SQLite opens it: its -wal and -shm files take the file's mode. Only
        # a new file: closing any descriptor of a file drops every POSIX lock this process holds
        # on it, those of SQLite's connections already open included; a CLI command would then
        # see no other reader, checkpoint and delete the WAL under a running server.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            for schema in schemas:
                _migrate(self._db, schema)
        except BaseException:
            self._db.close()
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in a worker thread, alone on the connection; commit with ``with``."""

        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def close(self) -> None:
        """Idempotent; waits for the query in progress."""
        await self.run(lambda db: db.close())


def _migrate(db: sqlite3.Connection, schema: Migrations) -> None:
    """Bring ``schema.owner``'s tables up to date in one transaction, taken before the version is
    read again so that two processes opening a new file do not both apply a step."""
    if _recorded_version(db, schema.owner) == schema.version:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions"
            " (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        version = _recorded_version(db, schema.owner)
        if version is None:
            user_version = db.execute("PRAGMA user_version").fetchone()[0]
            version = sum(1 for v in schema.legacy if v <= user_version)
        if version > schema.version:
            raise RuntimeError(
                f"{schema.owner} schema version {version} is newer than this EndoLink "
                f"({schema.version}): upgrade EndoLink"
            )
        for step in schema.steps[version:]:
            for statement in _statements(step):
                db.execute(statement)
        db.execute(
            "INSERT INTO schema_versions (owner, version) VALUES (?, ?)"
            " ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
            (schema.owner, schema.version),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    if version < schema.version:
        logger.info("%s schema migrated to version %d", schema.owner, schema.version)


def _recorded_version(db: sqlite3.Connection, owner: str) -> int | None:
    """``owner``'s version in ``schema_versions``; None if absent (new, or older file)."""
    try:
        row = db.execute("SELECT version FROM schema_versions WHERE owner = ?", (owner,)).fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return None if row is None else int(row[0])


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one (``executescript`` would commit first)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \t\r\n;"):
                yield statement
            statement = ""
    if statement:
        raise ValueError(f"incomplete SQL statement: {statement.strip()!r}")
