"""The recordings index: the ``recordings`` and ``segments`` tables of the server's database.

This module owns those tables (``SCHEMA``, migrated when it opens the file) and reads and writes
them on its own connection, so ``recorder`` never imports ``signaling``. Every save writes a
recording and all its segments in one transaction, mirroring the manifest, so the index is never
half-updated. Queries run in a worker thread.

With several nodes sharing a PostgreSQL database the rows are shared, the files are not: a
recording's segments stay in the data dir of the node that wrote them (or on storage the nodes
share), and its ``segments.file`` names are relative to that data dir (docs/deployment.md).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from persistence.database import Connection, Target, open_database
from persistence.sqlite import Migrations
from relay import ConsultationId

from .manifest import Manifest, Segment

logger = logging.getLogger(__name__)

# Recordings and their segments (docs/recording.md describes every column). Step 1 was part of
# user_version 2 of the old single list in signaling/db/store.py.
_STEPS: tuple[str, ...] = (
    """
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
    # 2: which node wrote the recording (a cluster's shared index: where its files are).
    "ALTER TABLE recordings ADD COLUMN node TEXT;",
)
# PostgreSQL: the same tables; REAL as double precision, counts as BIGINT.
_POSTGRES: tuple[str, ...] = (
    """
    CREATE TABLE recordings (
        id              TEXT PRIMARY KEY,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        status          TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'interrupted')),
        stop_reason     TEXT,
        started_at      TEXT NOT NULL,
        ended_at        TEXT,
        video_codec     TEXT NOT NULL CHECK (video_codec IN ('VP8', 'H264')),
        container       TEXT NOT NULL CHECK (container IN ('webm', 'mp4')),
        duration_s      DOUBLE PRECISION NOT NULL DEFAULT 0,
        bytes           BIGINT NOT NULL DEFAULT 0,
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
        offset_s        DOUBLE PRECISION NOT NULL DEFAULT 0,
        duration_s      DOUBLE PRECISION NOT NULL DEFAULT 0,
        frames          BIGINT NOT NULL DEFAULT 0,
        bytes           BIGINT NOT NULL DEFAULT 0,
        dropped         BIGINT NOT NULL DEFAULT 0,
        sha256          TEXT,
        chain           TEXT,
        repaired_file   TEXT,
        repaired_sha256 TEXT,
        PRIMARY KEY (recording_id, seq)
    );
    """,
    "ALTER TABLE recordings ADD COLUMN node TEXT;",
)
SCHEMA = Migrations("recordings", _STEPS, legacy=(2,), postgres=_POSTGRES)

_RECORDING_COLUMNS = (
    "id, consultation_id, status, stop_reason, started_at, ended_at, video_codec, container,"
    " duration_s, bytes, chain_head, node"
)
_SEGMENT_COLUMNS = (
    "seq, file, status, started_at, ended_at, offset_s, duration_s, frames, bytes, dropped,"
    " sha256, chain, repaired_file, repaired_sha256"
)


# Both dialects' upsert (SQLite's INSERT OR REPLACE is not PostgreSQL's): every column replaced.
_UPSERT_SEGMENT = (
    f"INSERT INTO segments (recording_id, {_SEGMENT_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (recording_id, seq) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SEGMENT_COLUMNS.split(", ") if c != "seq")
)


@dataclass(frozen=True)
class SegmentRow:
    seq: int
    file: str
    status: str
    started_at: str
    ended_at: str | None
    offset_s: float
    duration_s: float
    frames: int
    bytes: int
    dropped: int
    sha256: str | None
    chain: str | None
    repaired_file: str | None
    repaired_sha256: str | None

    @classmethod
    def of(cls, segment: Segment) -> SegmentRow:
        return cls(
            seq=segment.seq,
            file=segment.file,
            status=str(segment.status),
            started_at=segment.started_at,
            ended_at=segment.ended_at,
            offset_s=segment.offset_s,
            duration_s=segment.duration_s,
            frames=segment.frames,
            bytes=segment.bytes,
            dropped=sum(segment.dropped.values()),
            sha256=segment.sha256,
            chain=segment.chain,
            repaired_file=segment.repaired.file if segment.repaired else None,
            repaired_sha256=segment.repaired.sha256 if segment.repaired else None,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecordingRow:
    id: str
    consultation_id: ConsultationId
    status: str
    stop_reason: str | None
    started_at: str
    ended_at: str | None
    video_codec: str
    container: str
    duration_s: float
    bytes: int
    chain_head: str | None
    node: str | None = None
    "The node whose data dir holds the files (in a cluster); None: this server's own."
    segments: tuple[SegmentRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [s.to_json() for s in self.segments]
        return data


class RecordingIndex:
    """``node``: this node's id in a cluster, saved with every recording it writes (the index
    is shared; the files stay where they were written)."""

    def __init__(self, path: Target, node: str | None = None) -> None:
        self.path = path
        self.node = node
        self._db = open_database(path, SCHEMA)

    async def save(self, manifest: Manifest) -> None:
        """Insert or update the recording and all its segments, in one transaction."""
        recording = (
            manifest.recording_id,
            manifest.consultation["id"],
            str(manifest.status),
            manifest.stop_reason,
            manifest.started_at,
            manifest.ended_at,
            manifest.video_codec,
            manifest.container,
            manifest.duration_s,
            sum(s.bytes for s in manifest.segments),
            manifest.chain_head,
            self.node,
        )
        segments = [SegmentRow.of(s) for s in manifest.segments]

        def upsert(db: Connection) -> None:
            with db:
                db.execute(
                    f"INSERT INTO recordings ({_RECORDING_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                    " started_at = excluded.started_at,"
                    " stop_reason = excluded.stop_reason, ended_at = excluded.ended_at,"
                    " duration_s = excluded.duration_s, bytes = excluded.bytes,"
                    " chain_head = excluded.chain_head, node = excluded.node",
                    recording,
                )
                for row in segments:
                    db.execute(_UPSERT_SEGMENT, (manifest.recording_id, *asdict(row).values()))

        await self._db.run(upsert)

    async def get(self, recording_id: str) -> RecordingRow | None:
        def select(db: Connection) -> RecordingRow | None:
            rows = _recordings(db, "WHERE id = ?", (recording_id,))
            return rows[0] if rows else None

        return await self._db.run(select)

    async def unfinished(self) -> list[RecordingRow]:
        """Recordings still marked ``recording``: at start-up, the ones a crash left behind."""
        return await self._db.run(lambda db: _recordings(db, "WHERE status = 'recording'", ()))

    async def close(self) -> None:
        await self._db.close()

    # Defined last: a method named ``list`` shadows the builtin in later annotations.
    async def list(self, cid: ConsultationId | None = None) -> list[RecordingRow]:
        """Recordings, oldest first; only ``cid``'s if given."""
        if cid is None:
            return await self._db.run(lambda db: _recordings(db, "", ()))
        return await self._db.run(lambda db: _recordings(db, "WHERE consultation_id = ?", (cid,)))


def _recordings(db: Connection, where: str, args: tuple[Any, ...]) -> list[RecordingRow]:
    rows = db.execute(
        f"SELECT {_RECORDING_COLUMNS} FROM recordings {where} ORDER BY started_at, id", args
    ).fetchall()
    result = []
    for row in rows:
        segments = db.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE recording_id = ? ORDER BY seq",
            (row[0],),
        ).fetchall()
        fields = dict(zip(_RECORDING_COLUMNS.split(", "), row, strict=True))
        result.append(RecordingRow(**fields, segments=tuple(SegmentRow(*s) for s in segments)))
    return result
