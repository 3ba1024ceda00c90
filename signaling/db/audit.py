"""The consultation audit trail: who replayed, downloaded or exported which recording, and when.

One append-only table (``audit``, declared and migrated here), written and read on its own
connection to the server's SQLite file. Rows are never updated or deleted by the server. Queries
run in a worker thread; a failed audit write fails the request that caused it (no silent replay).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from persistence.sqlite import Database, Migrations
from persistence.times import utc_now_iso

# Step 1 was user_version 3 of the old single list in signaling/db/store.py.
_STEPS: tuple[str, ...] = (
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
SCHEMA = Migrations("audit", _STEPS, legacy=(3,))


class AuditAction(StrEnum):
    REPLAY = "replay"
    "A replay page was given access to the media (a media token, or a Bearer read from byte 0)."
    DOWNLOAD = "download"
    "The original recording files were downloaded."
    EXPORT = "export"
    "An annotated export was started."
    EXPORT_DOWNLOAD = "export-download"
    "An annotated export's MP4 was downloaded."


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    consultation_id: str
    at: str
    identity: str
    name: str
    role: str
    action: str
    recording_id: str | None
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "consultation_id, at, identity, name, role, action, recording_id, detail"


class AuditTrail:
    def __init__(self, path: Path) -> None:
        self._db = Database(path, SCHEMA)

    async def record(
        self,
        consultation_id: str,
        identity: str,
        name: str,
        role: str,
        action: AuditAction,
        recording_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        row = (
            consultation_id,
            utc_now_iso(),
            identity,
            name,
            role,
            str(action),
            recording_id,
            detail,
        )

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute(f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self._db.run(insert)

    async def trail(self, consultation_id: str) -> list[AuditEntry]:
        """Every row of a consultation, oldest first."""

        def select(db: sqlite3.Connection) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT seq, {_COLUMNS} FROM audit WHERE consultation_id = ? ORDER BY seq",
                (consultation_id,),
            ).fetchall()
            return [AuditEntry(*row) for row in rows]

        return await self._db.run(select)

    async def close(self) -> None:
        await self._db.close()
