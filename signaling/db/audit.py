"""The consultation audit trail: who replayed, downloaded or exported which recording, and when.

One append-only table (``audit``, migration 3 in ``signaling/store.py``), written and read on
its own connection to the server's SQLite file (the store migrates the schema when it opens the
file, before this is made). Rows are never updated or deleted by the server. Queries run in a
worker thread; a failed audit write fails the request that caused it (no silent replay).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BUSY_TIMEOUT_S = 5.0


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
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            if not self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
            ).fetchone():
                raise RuntimeError(f"{path} has no audit table: open it with the server's store")
        except BaseException:
            self._db.close()
            raise

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await asyncio.to_thread(locked)

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
            datetime.now(UTC).isoformat(timespec="milliseconds"),
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

        await self._run(insert)

    async def trail(self, consultation_id: str) -> list[AuditEntry]:
        """Every row of a consultation, oldest first."""

        def select(db: sqlite3.Connection) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT seq, {_COLUMNS} FROM audit WHERE consultation_id = ? ORDER BY seq",
                (consultation_id,),
            ).fetchall()
            return [AuditEntry(*row) for row in rows]

        return await self._run(select)

    async def close(self) -> None:
        def close(db: sqlite3.Connection) -> None:
            db.close()

        await self._run(close)
