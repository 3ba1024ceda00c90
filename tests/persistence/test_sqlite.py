"""One connection per owner, queries off the event loop, and each owner's schema migrated on its
own, including databases made when one list of migrations (PRAGMA user_version) served them all."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from persistence.sqlite import Database, Migrations
from recorder.index import SCHEMA as RECORDINGS_SCHEMA
from recorder.index import RecordingIndex
from signaling.db.audit import SCHEMA as AUDIT_SCHEMA
from signaling.db.audit import AuditTrail
from signaling.db.store import SCHEMA as CONSULTATIONS_SCHEMA
from signaling.db.store import ConsultationStore

COUNTER = Migrations(
    "counter",
    ("CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter (n) VALUES (0);",),
)

# signaling/db/store.py's MIGRATIONS before owners kept their own (PRAGMA user_version 1..3),
# verbatim, applied as that code did: the databases in the field were made by these.
OLD_MIGRATIONS = (
    """
    CREATE TABLE consultations (
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        video_codec TEXT NOT NULL CHECK (video_codec IN ('VP8', 'H264'))
    );
    CREATE TABLE consents (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        confirmed_by    TEXT NOT NULL,
        confirmed_at    TEXT NOT NULL,
        method          TEXT NOT NULL CHECK (method IN ('page', 'paper')),
        recorded_by     TEXT NOT NULL
    );
    CREATE INDEX consents_by_consultation ON consents (consultation_id, seq);
    """,
    """
    ALTER TABLE consultations
        ADD COLUMN recording_enabled INTEGER NOT NULL DEFAULT 1 CHECK (recording_enabled IN (0, 1));
    CREATE TABLE recordings (
        id              TEXT PRIMARY KEY,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        status          TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'interrupted')),
        stop_reason     TEXT,
        started_at      TEXT NOT NULL,
        ended_at        TEXT,
        video_codec     TEXT NOT NULL CHECK (video_codec IN ('VP8', 'H264')),
        container       TEXT NOT NULL CHECK (container IN ('webm', 'mp4')),
        duration_s      REAL NOT NULL DEFAULT 0,
        bytes           INTEGER NOT NULL DEFAULT 0,
        chain_head      TEXT
    );
    CREATE INDEX recordings_by_consultation ON recordings (consultation_id, started_at);
    CREATE INDEX recordings_by_status ON recordings (status);
    CREATE TABLE segments (
        recording_id    TEXT NOT NULL REFERENCES recordings (id),
        seq             INTEGER NOT NULL CHECK (seq >= 1),
        file            TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('open', 'closed', 'interrupted')),
        started_at      TEXT NOT NULL,
        ended_at        TEXT,
        offset_s        REAL NOT NULL DEFAULT 0,
        duration_s      REAL NOT NULL DEFAULT 0,
        frames          INTEGER NOT NULL DEFAULT 0,
        bytes           INTEGER NOT NULL DEFAULT 0,
        dropped         INTEGER NOT NULL DEFAULT 0,
        sha256          TEXT,
        chain           TEXT,
        repaired_file   TEXT,
        repaired_sha256 TEXT,
        PRIMARY KEY (recording_id, seq)
    );
    """,
    """
    CREATE TABLE audit (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        at              TEXT NOT NULL,
        identity        TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        role            TEXT NOT NULL,
        action          TEXT NOT NULL
            CHECK (action IN ('replay', 'download', 'export', 'export-download')),
        recording_id    TEXT REFERENCES recordings (id),
        detail          TEXT
    );
    CREATE INDEX audit_by_consultation ON audit (consultation_id, seq);
    """,
)

CID = "cons0001"
RID = "20250131T091502Z-Ab3dE_9x"
STAMP = "2025-01-31T09:15:02+00:00"


def make_old_database(path: Path, user_version: int) -> None:
    """A database as the old store left it at ``user_version``, holding a row in every table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA foreign_keys = ON")
    for step in range(user_version):
        db.executescript(
            f"BEGIN; {OLD_MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
        )
    rows = [
        (
            1,
            "INSERT INTO consultations (id, title, created_at, video_codec)"
            " VALUES (?, 'Knee', ?, 'H264')",
            (CID, STAMP),
        ),
        (1, "INSERT INTO consents VALUES (1, ?, 'Dr. Bat', ?, 'paper', 'admin')", (CID, STAMP)),
        (2, "UPDATE consultations SET recording_enabled = 0", ()),
        (
            2,
            "INSERT INTO recordings VALUES (?, ?, 'complete', 'shutdown', ?, ?, 'H264', 'mp4',"
            " 12.5, 4096, 'head')",
            (RID, CID, STAMP, STAMP),
        ),
        (
            2,
            "INSERT INTO segments VALUES (?, 1, 'segment-001.mp4', 'closed', ?, ?, 0, 12.5, 375,"
            " 4096, 0, 'sha', 'chain', NULL, NULL)",
            (RID, STAMP, STAMP),
        ),
        (
            3,
            "INSERT INTO audit VALUES (1, ?, ?, 'viewer-1', 'Dr. Who', 'viewer', 'replay', ?,"
            " NULL)",
            (CID, STAMP, RID),
        ),
    ]
    with db:
        for since, sql, args in rows:
            if user_version >= since:
                db.execute(sql, args)
    db.close()


def schema_of(path: Path) -> dict[str, object]:
    """Every table's columns, foreign keys and indexes, as SQLite reports them."""
    db = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT IN ('sqlite_sequence', 'schema_versions') ORDER BY name"
            )
        ]
        return {
            table: (
                db.execute(f"PRAGMA table_info({table})").fetchall(),
                db.execute(f"PRAGMA foreign_key_list({table})").fetchall(),
                sorted(
                    (index[1], db.execute(f"PRAGMA index_info({index[1]})").fetchall())
                    for index in db.execute(f"PRAGMA index_list({table})")
                ),
            )
            for table in tables
        }
    finally:
        db.close()


def versions_of(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT owner, version FROM schema_versions").fetchall())


async def open_all(path: Path) -> None:
    """Open and close the file the way the server does: store, recordings index, audit trail."""
    for owner in (ConsultationStore(path), RecordingIndex(path), AuditTrail(path)):
        await owner.close()


async def test_a_new_file_gets_every_owners_tables_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "data" / "new.sqlite3"
    await open_all(path)
    old = tmp_path / "old.sqlite3"
    make_old_database(old, len(OLD_MIGRATIONS))
    await open_all(old)  # the audit table was rebuilt since (its hash chain)
    assert schema_of(path) == schema_of(old)
    assert versions_of(path) == {"consultations": 3, "recordings": 2, "audit": 3}

    db = Database(path)
    try:
        settings = await db.run(
            lambda c: [
                c.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
        )
    finally:
        await db.close()
    assert settings == ["wal", 1, 5000]


@pytest.mark.parametrize("user_version", range(len(OLD_MIGRATIONS) + 1))
async def test_a_database_made_by_the_old_single_list_upgrades_without_loss(
    tmp_path: Path, user_version: int
) -> None:
    path = tmp_path / "endolink.sqlite3"
    make_old_database(path, user_version)
    fresh = tmp_path / "fresh.sqlite3"
    await open_all(fresh)

    store = ConsultationStore(path)
    index = RecordingIndex(path)
    audit = AuditTrail(path)
    try:
        assert schema_of(path) == schema_of(fresh)
        assert versions_of(path) == versions_of(fresh)
        consultation = await store.get(CID)
        recording = await index.get(RID)
        trail = await audit.trail(CID)
        if user_version >= 1:
            assert consultation is not None and consultation.created_at == STAMP
            assert consultation.consent is not None and consultation.consent.method == "paper"
            assert await store.recording_enabled(CID) is (user_version < 2)
        else:
            assert consultation is None
        if user_version >= 2:
            assert recording is not None and recording.bytes == 4096
            assert [s.file for s in recording.segments] == ["segment-001.mp4"]
        else:
            assert recording is None
        assert [(e.identity, e.recording_id) for e in trail] == (
            [("viewer-1", RID)] if user_version >= 3 else []
        )
    finally:
        for owner in (store, index, audit):
            await owner.close()


async def test_owners_of_an_old_database_may_open_it_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "endolink.sqlite3"
    make_old_database(path, 3)
    audit = AuditTrail(path)
    await audit.close()
    assert versions_of(path) == {"audit": 3}
    index = RecordingIndex(path)
    assert (await index.get(RID)) is not None
    await index.close()
    await ConsultationStore(path).close()
    assert versions_of(path) == {"consultations": 3, "recordings": 2, "audit": 3}


async def test_an_owner_adds_a_step_without_touching_the_others(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    await Database(path, COUNTER, CONSULTATIONS_SCHEMA).close()
    grown = Migrations("counter", (*COUNTER.steps, "ALTER TABLE counter ADD COLUMN note TEXT"))
    db = Database(path, grown, CONSULTATIONS_SCHEMA)
    try:
        assert await db.run(lambda c: c.execute("SELECT n, note FROM counter").fetchall()) == [
            (0, None)
        ]
    finally:
        await db.close()
    assert versions_of(path) == {"counter": 2, "consultations": 3}


async def test_a_failing_step_leaves_the_owners_tables_and_version_as_they_were(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.sqlite3"
    broken = Migrations("counter", (*COUNTER.steps, "CREATE TABLE other (a); SELECT nonsense("))
    with pytest.raises(sqlite3.OperationalError):
        Database(path, broken)
    with sqlite3.connect(path) as db:
        assert (
            db.execute("SELECT name FROM sqlite_master WHERE name != 'schema_versions'").fetchall()
            == []
        )
    await Database(path, COUNTER).close()
    assert versions_of(path) == {"counter": 1}


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    await Database(path, COUNTER).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_versions SET version = 2")
    with pytest.raises(RuntimeError, match="counter schema version 2 is newer"):
        Database(path, COUNTER)


async def test_semicolons_inside_sql_text_do_not_split_a_statement(tmp_path: Path) -> None:
    steps = ("CREATE TABLE t (a TEXT); -- a comment; still one\nINSERT INTO t VALUES ('x;y');",)
    db = Database(tmp_path / "x.sqlite3", Migrations("text", steps))
    try:
        assert await db.run(lambda c: c.execute("SELECT a FROM t").fetchall()) == [("x;y",)]
    finally:
        await db.close()


def test_owner_names_are_checked_before_they_reach_sql() -> None:
    with pytest.raises(ValueError, match="owner"):
        Migrations("bad'; DROP TABLE x; --", ())


async def test_run_serialises_calls_in_worker_threads(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.sqlite3", COUNTER)
    threads: set[int] = set()
    inside = 0
    overlapped = False

    def bump(c: sqlite3.Connection) -> None:
        nonlocal inside, overlapped
        threads.add(threading.get_ident())
        inside += 1
        overlapped |= inside > 1
        n = c.execute("SELECT n FROM counter").fetchone()[0]
        time.sleep(0.002)  # a read-modify-write that would lose updates if two ran at once
        with c:
            c.execute("UPDATE counter SET n = ?", (n + 1,))
        inside -= 1

    try:
        await asyncio.gather(*(db.run(bump) for _ in range(40)))
        assert await db.run(lambda c: c.execute("SELECT n FROM counter").fetchone()[0]) == 40
    finally:
        await db.close()
    assert not overlapped
    assert threading.get_ident() not in threads


def slow(entered: threading.Event, seconds: float) -> Callable[[sqlite3.Connection], int]:
    """A query that says when it has started, then blocks its thread for ``seconds``."""

    def query(c: sqlite3.Connection) -> int:
        entered.set()
        time.sleep(seconds)
        return int(c.execute("SELECT n FROM counter").fetchone()[0])

    return query


async def test_the_event_loop_runs_while_a_query_blocks(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.sqlite3", COUNTER)
    entered = threading.Event()
    try:
        query = asyncio.ensure_future(db.run(slow(entered, 0.5)))
        await asyncio.to_thread(entered.wait)
        started = time.monotonic()
        await asyncio.sleep(0.01)
        assert time.monotonic() - started < 0.3
        assert not query.done()
        assert await query == 0
    finally:
        await db.close()


async def test_close_is_idempotent_and_waits_for_the_query_in_progress(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.sqlite3", COUNTER)
    entered = threading.Event()
    read = asyncio.ensure_future(db.run(slow(entered, 0.05)))
    await asyncio.to_thread(entered.wait)
    await db.close()
    await db.close()
    assert await read == 0
    with pytest.raises(sqlite3.ProgrammingError):
        await db.run(lambda c: c.execute("SELECT 1"))


def test_the_released_steps_are_the_old_lists_own_sql_unchanged() -> None:
    """OLD_MIGRATIONS is kept frozen on purpose: each owner's step that claims an old
    ``user_version`` must run the very SQL that version ran, or adopted files would differ."""

    def words(sql: str) -> str:
        return " ".join(sql.replace(";", " ; ").split())

    claimed: dict[int, list[str]] = {}
    for schema in (CONSULTATIONS_SCHEMA, RECORDINGS_SCHEMA, AUDIT_SCHEMA):
        for step, user_version in zip(schema.steps, schema.legacy, strict=False):
            claimed.setdefault(user_version, []).append(words(step))
    assert {v: " ".join(steps) for v, steps in claimed.items()} == {
        v + 1: words(sql) for v, sql in enumerate(OLD_MIGRATIONS)
    }
