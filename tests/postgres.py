"""PostgreSQL for the shared-records tests: one real server per test session
(``postgres_server``, ``bench/postgres.py``) and a database of its own for each test
(``postgres_url``); ``BACKENDS`` and ``records_target`` run a test on either place records can be.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.postgres import PostgresServer, running_postgres
from persistence.database import Target
from signaling.db.store import DB_FILENAME

BACKENDS = ("sqlite", "postgresql")
"The two places records can be: parametrize a fixture with these and call ``records_target``."


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database of the session's server, for this test alone."""
    return postgres_server.new_database()


def records_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Where a test parametrized with ``BACKENDS`` keeps its records: the data dir's SQLite file,
    or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "data" / DB_FILENAME
    url: str = request.getfixturevalue("postgres_url")
    return url


def query(target: Target, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement run straight on the records (``?`` placeholders), committed: what a test
    reads or tampers with behind the owners' backs, in either backend."""
    if isinstance(target, Path):
        with contextlib.closing(sqlite3.connect(target)) as db, db:
            return db.execute(sql, parameters).fetchall()
    with psycopg.connect(target, autocommit=True) as db:
        cursor = db.execute(sql.replace("?", "%s"), parameters or None)
        return cursor.fetchall() if cursor.description else []
