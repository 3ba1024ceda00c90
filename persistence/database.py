"""What the record owners see of a database, whichever holds it: an SQLite file (the embedded
default, one node) or a PostgreSQL database shared by several nodes (``persistence.postgres``).

Owners (the consultation store, the invites, the patients, the audit trail, the recordings index)
open their database with ``open_database(target, SCHEMA)`` and run their queries with
``await db.run(fn)``, ``fn`` taking a ``Connection``: the subset of ``sqlite3.Connection`` they
use, which the PostgreSQL adapter gives too. So their query code is written once; where the
dialects differ, each owner's ``Migrations`` carries a PostgreSQL schema of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from persistence.postgres import PostgresDatabase
from persistence.sqlite import Database, Migrations

T = TypeVar("T")

Target = Path | str
"Where the records are: an SQLite file, or a ``postgresql://`` URL."

DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
"What a query may raise when the database fails (unreadable file, server down): catch these."
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
"A constraint refused the write (a duplicate key): the same meaning in both dialects."

_SCHEMES = ("postgresql", "postgres")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What owners use of a connection (``sqlite3.Connection`` has it all): ``?`` placeholders,
    ``with db:`` commits (or rolls back), ``BEGIN IMMEDIATE`` takes the write lock."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> bool | None: ...


class Backend(Protocol):
    """A database an owner runs its queries on, off the event loop."""

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


def is_url(target: Target) -> bool:
    """Whether ``target`` names a PostgreSQL database (else it is an SQLite file)."""
    return isinstance(target, str) and urlsplit(target).scheme in _SCHEMES


def describe(target: Target) -> str:
    """``target`` as it may be printed or logged: a URL without its password."""
    if not is_url(target):
        return str(target)
    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def open_database(target: Target, *schemas: Migrations) -> Backend:
    """A connection to ``target`` with the owners' tables up to date: PostgreSQL for a URL
    (``persistence.postgres``), else the SQLite file (``persistence.sqlite``)."""
    if is_url(target):
        return PostgresDatabase(str(target), *schemas)
    return Database(Path(target), *schemas)
