"""The audit trail: who joined, published, watched, drew, froze, recorded, replayed, downloaded,
exported or revoked what in a consultation, and which tokens were refused — tamper-evident.

One append-only table (``audit``, declared and migrated here) in the server's database, each
entry chained by hash to the one before it in the whole trail and in its consultation
(``audit_chain.py``: what is hashed, the head file, the limits). Rows are never updated or
deleted by the server. Entries hold identities, roles and display names (the trail is for admins:
a clinician reviewing a consultation needs to read who watched), never a token.

One writer task appends entries in batches — one transaction (one fsync) per batch, then the head
file — so hashes are computed in submission order and a pen stroke never costs an fsync of its
own. ``record`` waits for room when ``MAX_BACKLOG`` entries are queued (backpressure on the
request or socket that causes them) and, for HTTP actions, until its entry is committed: a failed
audit write fails the request (no silent replay). ``submit`` is for callbacks that cannot wait
(a socket that closed, a media session that ended, a mark broadcast): it never drops and never
blocks; what it queues follows from events already admitted and rate-limited (a leave per join, a
session end per session, at most 30 annotation ops a second per participant), and the writer
commits thousands of entries a second. Nothing is ever dropped: a database error is logged with
the entries it lost and fails whoever awaits them.

Several nodes (``database_url``: one PostgreSQL database): the trail is one chain in the shared
database — each writer takes the database's write lock (``BEGIN IMMEDIATE``, an advisory lock on
PostgreSQL) before it reads the head, so nodes append in turn and never fork it. The head file
stays per node, in its data dir: it names the newest entry *that node* wrote, and verification
checks that the trail still holds that entry with that hash (a node that has not written yet
starts its file at the trail's head when it opens it). So every node's file catches a rewrite of,
or a cut through, what it wrote; a tail written by another node is covered by that node's file
(run ``endolink audit verify`` on each node, or ship each node's head line to the external log).
No head lives in the database: whoever can rewrite the database could rewrite it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from persistence import postgres
from persistence.database import Connection, Target, is_url, open_database
from persistence.files import PRIVATE_DIR
from persistence.sqlite import BUSY_TIMEOUT_S
from persistence.times import utc_now_iso

from .audit_chain import (
    ANCHOR_FILENAME,
    GENESIS,
    HASHED_COLUMNS,
    START,
    Checked,
    Head,
    Verdict,
    entry_hash,
    read_anchor,
    verify,
    write_anchor,
)

# AuditAction is imported from here by the edge (one place to name the trail's API).
from .audit_schema import SCHEMA as SCHEMA
from .audit_schema import AuditAction as AuditAction

logger = logging.getLogger(__name__)


MAX_BACKLOG = 1024
"Entries queued before ``record`` waits for the writer."
BATCH = 256
"Entries written in one transaction at most."
PAGE = 500
"Entries per page of a consultation's trail, by default (and ``MAX_PAGE`` at most)."
MAX_PAGE = 1000
VERIFY_CAP = 20_000
"Entries hashed in one step of verification at most (about 0.2 s): per audit page, at most."
RECHECK_S = 600.0
"The whole trail is checked from its first entry at start-up and this often (``check_all``)."
CHECK_PAUSE_S = 0.1
"Between two steps of a full check: hashing holds the GIL, and the loop forwards media."


@dataclass(frozen=True)
class AuditRecord:
    """An entry to append (the writer numbers and chains it)."""

    consultation_id: str | None
    identity: str
    name: str
    role: str
    action: AuditAction
    recording_id: str | None = None
    detail: str | None = None
    count: int = 1
    at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    consultation_id: str | None
    at: str
    identity: str
    name: str
    role: str
    action: str
    recording_id: str | None
    detail: str | None
    count: int
    prev_hash: str | None
    consultation_prev_hash: str | None
    hash: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = ", ".join((*HASHED_COLUMNS, "hash"))
_INSERT = f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * (len(HASHED_COLUMNS) + 1))})"


class AuditTrail:
    """The trail in ``path``'s database (an SQLite file or a PostgreSQL URL), its head file
    beside the SQLite file or, for PostgreSQL, at ``anchor`` (in the node's data dir)."""

    def __init__(self, path: Target, anchor: Path | None = None) -> None:
        if anchor is None and is_url(path):
            raise ValueError("a trail on PostgreSQL needs this node's head file (anchor)")
        self._db = open_database(path, SCHEMA)
        self._reader = open_database(path)
        "Reads and verification: readers never wait for the writer's transaction."
        self.anchor = anchor or Path(path).parent / ANCHOR_FILENAME
        if is_url(path):  # SQLite made the file's directory; this node's data dir may be new
            self.anchor.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        if read_anchor(self.anchor) is None:
            head = _first_anchor(path)
            if head is not None:
                write_anchor(self.anchor, head)
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[int]] | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._checking = asyncio.Lock()
        self._checked = START
        "How far the trail is verified: ``verify_new`` resumes here."
        self._problem: Verdict | None = None
        "The first problem found; reported until a restart (a trail does not heal)."

    def submit(self, record: AuditRecord) -> asyncio.Future[int]:
        """Queue ``record`` now (never blocks, never drops); the future gives its ``seq``."""
        if self._closed:
            raise RuntimeError("the audit trail is closed")
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name="audit-writer")
        future: asyncio.Future[int] = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # the writer logs
        self._queue.put_nowait((record, future))
        return future

    async def record(self, record: AuditRecord, durable: bool = True) -> None:
        """Queue ``record`` once there is room; with ``durable``, return once it is committed
        (raises if it could not be)."""
        while self._queue.qsize() >= MAX_BACKLOG:
            self._room.clear()
            await self._room.wait()
        future = self.submit(record)
        if durable:
            await asyncio.shield(future)

    async def trail(
        self, consultation_id: str, after: int = 0, limit: int = PAGE
    ) -> list[AuditEntry]:
        """A page of a consultation's entries, oldest first: those after ``seq`` ``after``."""

        def select(db: Connection) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE consultation_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (consultation_id, after, limit),
            ).fetchall()
            return [AuditEntry(*row) for row in rows]

        return await self._reader.run(select)

    async def actions(
        self,
        consultation_id: str,
        actions: tuple[AuditAction, ...],
        *,
        recording_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = MAX_PAGE,
    ) -> list[AuditEntry]:
        """A consultation's entries of these ``actions`` — of one recording, and from ``since``
        to ``until`` (ISO UTC as ``at`` is written, so they compare as text), if given — oldest
        first, at most ``limit``."""
        where, values = [], []
        for clause, value in (("recording_id =", recording_id), ("at >=", since), ("at <=", until)):
            if value is not None:
                where.append(f" AND {clause} ?")
                values.append(value)

        def select(db: Connection) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE consultation_id = ?"
                f" AND action IN ({', '.join('?' * len(actions))}){''.join(where)}"
                " ORDER BY seq LIMIT ?",
                (consultation_id, *map(str, actions), *values, limit),
            ).fetchall()
            return [AuditEntry(*row) for row in rows]

        return await self._reader.run(select)

    async def verify(self) -> Verdict:
        """The whole trail checked (``audit_chain.verify``), in a worker thread."""
        return await self._reader.run(lambda db: verify_database(db, self.anchor))

    async def verify_new(self) -> Verdict:
        """The entries added since the last check, at most ``VERIFY_CAP`` of them (then
        ``complete`` is false): what the audit route reports, without re-hashing the trail on
        every page. A change to an entry checked before is found by the next full check
        (``check_all``) and by ``endolink audit verify``."""
        async with self._checking:
            if self._problem is not None:
                return self._problem
            verdict = await self._step(self._checked)
            self._note(verdict)
            return verdict

    async def check_all(self, every_s: float = RECHECK_S) -> None:
        """Check the whole trail from its first entry now and every ``every_s`` (until
        cancelled), a step at a time so the reader is free between steps for pages, with a pause
        between steps so the event loop gets the GIL."""
        while True:
            verdict = await self._step(START)
            while verdict.ok and not verdict.complete:
                await asyncio.sleep(CHECK_PAUSE_S)
                verdict = await self._step(verdict.checked)
            async with self._checking:
                if not verdict.ok or verdict.checked.seq >= self._checked.seq:
                    self._note(verdict)
            await asyncio.sleep(every_s)

    async def _step(self, start: Checked) -> Verdict:
        return await self._reader.run(
            lambda db: verify_database(db, self.anchor, start, VERIFY_CAP)
        )

    def _note(self, verdict: Verdict) -> None:
        if verdict.ok:
            self._checked = verdict.checked
        elif self._problem is None:
            self._problem = verdict

    async def close(self) -> None:
        """Write what is queued, then stop; idempotent."""
        self._closed = True
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
        await self._db.close()
        await self._reader.close()

    async def _write(self) -> None:
        """The one writer: batch after batch, in submission order."""
        while True:
            item = await self._queue.get()
            batch = []
            while item is not None:
                batch.append(item)
                if len(batch) >= BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)
            self._room.set()
            if item is None:
                return

    async def _commit(self, batch: list[tuple[AuditRecord, asyncio.Future[int]]]) -> None:
        records = [record for record, _ in batch]
        try:
            seqs = await self._db.run(lambda db: self._append(db, records))
        except Exception as exc:
            logger.exception("Audit trail: %d entries could not be written", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), seq in zip(batch, seqs, strict=True):
            if not future.done():
                future.set_result(seq)

    def _append(self, db: Connection, records: list[AuditRecord]) -> list[int]:
        """Number, chain and insert ``records`` in one transaction, then rewrite the head file.
        The heads are read inside the write lock (``BEGIN IMMEDIATE``), never cached, so another
        process appending too (a CLI) cannot fork the chain."""
        db.execute("BEGIN IMMEDIATE")
        try:
            head = _head(db) or Head(0, GENESIS)
            heads: dict[str, str] = {}
            rows = []
            for record in records:
                cid = record.consultation_id
                if cid is not None and cid not in heads:
                    heads[cid] = _consultation_head(db, cid)
                fields = (
                    head.seq + 1,
                    cid,
                    record.at,
                    record.identity,
                    record.name,
                    record.role,
                    str(record.action),
                    record.recording_id,
                    record.detail,
                    record.count,
                    head.hash,
                    None if cid is None else heads[cid],
                )
                head = Head(head.seq + 1, entry_hash(fields))
                rows.append((*fields, head.hash))
                if cid is not None:
                    heads[cid] = head.hash
            db.executemany(_INSERT, rows)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        write_anchor(self.anchor, head)
        return [row[0] for row in rows]


def _head(db: Connection) -> Head | None:
    """The trail's newest entry, if any."""
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else Head(int(row[0]), row[1] or GENESIS)


def _first_anchor(path: Target) -> Head | None:
    """What a new head file names, once (later, a missing file is a finding). SQLite: the rows
    the migration copied from before the chain, chained now. PostgreSQL (never unchained): a
    node that has not written yet starts its file at the shared trail's head, so its checks of
    what other nodes wrote find no missing head file."""
    if is_url(path):
        with contextlib.closing(postgres.connect(str(path))) as db:
            return _head(db)
    with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        return _chain_unhashed(db)


def _consultation_head(db: Connection, cid: str) -> str:
    row = db.execute(
        "SELECT hash FROM audit WHERE consultation_id = ? ORDER BY seq DESC LIMIT 1", (cid,)
    ).fetchone()
    return GENESIS if row is None else str(row[0])


def verify_database(
    db: Connection, anchor: Path, start: Checked = START, limit: int | None = None
) -> Verdict:
    """Verify the trail in ``db`` against the head file ``anchor`` (read first: see ``verify``):
    the entries after ``start``, at most ``limit`` of them."""
    head = read_anchor(anchor)
    with db:  # one read transaction: one consistent picture of the table
        db.execute("BEGIN")
        query = f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq"
        if limit is None:
            return verify(db.execute(query, (start.seq,)), head, start)
        rows = db.execute(f"{query} LIMIT ?", (start.seq, limit)).fetchall()
        return verify(rows, head, start, end=len(rows) < limit)


def _chain_unhashed(db: sqlite3.Connection) -> Head | None:
    """Chain the rows the migration copied, if no row has a hash yet; the new head, if any."""
    if db.execute("SELECT 1 FROM audit WHERE hash IS NOT NULL LIMIT 1").fetchone():
        return None
    rows = db.execute(f"SELECT {', '.join(HASHED_COLUMNS)} FROM audit ORDER BY seq").fetchall()
    if not rows:
        return None
    previous, heads, updates = GENESIS, dict[str, str](), []
    for row in rows:
        cid = row[1]
        fields = (*row[:-2], previous, None if cid is None else heads.get(cid, GENESIS))
        previous = entry_hash(fields)
        if cid is not None:
            heads[cid] = previous
        updates.append((fields[-2], fields[-1], previous, row[0]))
    with db:
        db.executemany(
            "UPDATE audit SET prev_hash = ?, consultation_prev_hash = ?, hash = ? WHERE seq = ?",
            updates,
        )
    logger.info("Audit trail: %d earlier entries chained", len(rows))
    return Head(rows[-1][0], previous)
