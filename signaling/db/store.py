"""Consultations and their consent records, kept in the data dir's SQLite file (or, for several
nodes, the shared PostgreSQL database: ``persistence.database``).

Queries run in a worker thread (``persistence.sqlite.Database``): the event loop that forwards
media never waits on the disk. Consent is append-only: each confirmation is a new row (the audit
trail), the latest one counts.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from persistence.database import Connection, Target, open_database
from persistence.sqlite import Migrations
from persistence.times import utc_now_iso
from relay import ConsultationId
from signaling.settings import Settings, normalise_codec

logger = logging.getLogger(__name__)

DB_FILENAME = "endolink.sqlite3"
DEFAULT_TITLE = "Consultation"
MAX_TEXT_LENGTH = 200
CONSENT_METHODS = ("page", "paper")

_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{6,32}")

# The consultations' tables. Steps 1 and 2 were user_version 1 and 2 of the old single list for
# the whole file (whose step 2 also created the recordings tables: recorder/index.py's now).
_STEPS: tuple[str, ...] = (
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
    # 2: the recording switch.
    """
    ALTER TABLE consultations
        ADD COLUMN recording_enabled INTEGER NOT NULL DEFAULT 1 CHECK (recording_enabled IN (0, 1));
    """,
    # 3: withdrawn access: every token issued for the consultation up to this time (Unix
    # seconds, sub-second) is refused (signaling/auth/revocations.py).
    """
    ALTER TABLE consultations ADD COLUMN access_revoked_at REAL;
    """,
)
# PostgreSQL: today's tables. ``rowid`` stands in for SQLite's implicit one (insertion order,
# which ``list`` sorts by); REAL there is double precision here.
_POSTGRES: tuple[str, ...] = (
    """
    CREATE TABLE consultations (
        rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        video_codec TEXT NOT NULL CHECK (video_codec IN ('VP8', 'H264')),
        recording_enabled INTEGER NOT NULL DEFAULT 1 CHECK (recording_enabled IN (0, 1)),
        access_revoked_at DOUBLE PRECISION
    );
    CREATE TABLE consents (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        confirmed_by    TEXT NOT NULL,
        confirmed_at    TEXT NOT NULL,
        method          TEXT NOT NULL CHECK (method IN ('page', 'paper')),
        recorded_by     TEXT NOT NULL
    );
    CREATE INDEX consents_by_consultation ON consents (consultation_id, seq);
    """,
)
SCHEMA = Migrations("consultations", _STEPS, legacy=(1, 2), postgres=_POSTGRES)

# Each consultation with its latest consent (NULL columns when none was recorded yet).
_SELECT_CONSULTATIONS = """
    SELECT c.id, c.title, c.created_at, c.video_codec,
           k.confirmed_by, k.confirmed_at, k.method, k.recorded_by
    FROM consultations AS c
    LEFT JOIN consents AS k
      ON k.seq = (SELECT MAX(seq) FROM consents WHERE consultation_id = c.id)
"""


def database_of(settings: Settings) -> Target:
    """Where every owner keeps its records: the shared PostgreSQL database when
    ``database_url`` is set (several nodes), else the data dir's SQLite file."""
    return settings.database_url or settings.data_dir / DB_FILENAME


class UnknownConsultation(LookupError):
    """No consultation has this id."""


def new_consultation_id() -> ConsultationId:
    """64 random bits, URL-safe, never starting with "-": a command line would read
    ``--consultation -x…`` as an option (1 id in 64 did)."""
    while True:
        cid = secrets.token_urlsafe(8)
        if not cid.startswith("-"):
            return ConsultationId(cid)


def valid_consultation_id(cid: str) -> bool:
    """Ids come from URLs: check their shape before they reach SQL, logs or file names."""
    return isinstance(cid, str) and _ID_PATTERN.fullmatch(cid) is not None


@dataclass(frozen=True)
class Consent:
    """Who confirmed the patient's consent, when, how, and which participant recorded it."""

    confirmed_by: str
    confirmed_at: str
    method: str
    recorded_by: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Consultation:
    id: ConsultationId
    title: str
    created_at: str
    video_codec: str
    consent: Consent | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at,
            "video_codec": self.video_codec,
            "consent": self.consent.to_json() if self.consent else None,
        }


def _text(value: str, what: str, *, allow_empty: bool = False) -> str:
    """Free text as stored: stripped, bounded, and non-empty unless a default applies."""
    text = value.strip()
    if not text and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"{what} must be at most {MAX_TEXT_LENGTH} characters")
    return text


class ConsultationStore:
    """The persistent catalogue of consultations; safe to share by every handler of one app."""

    def __init__(self, path: Target) -> None:
        self.path = path
        "The SQLite file or the PostgreSQL URL (``describe`` it: never print its password)."
        self._db = open_database(path, SCHEMA)

    async def create(
        self,
        title: str,
        video_codec: str,
        consent_by: str | None = None,
        recorded_by: str | None = None,
    ) -> Consultation:
        """A new consultation; ``consent_by`` records a paper consent obtained beforehand."""
        c = Consultation(
            id=new_consultation_id(),
            title=_text(title, "title", allow_empty=True) or DEFAULT_TITLE,
            created_at=utc_now_iso(timespec="seconds"),
            video_codec=normalise_codec(video_codec),
            consent=None,
        )
        consent = None
        if consent_by is not None:
            consent = _new_consent(consent_by, "paper", recorded_by or "unknown")

        def insert(db: Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO consultations (id, title, created_at, video_codec)"
                    " VALUES (?, ?, ?, ?)",
                    (c.id, c.title, c.created_at, c.video_codec),
                )
                if consent:
                    _insert_consent(db, c.id, consent)

        await self._db.run(insert)
        logger.info("consultation %s created (%s)", c.id, c.video_codec)
        return replace(c, consent=consent)

    async def ping(self) -> None:
        """Read the database once; raises one of ``DATABASE_ERRORS`` if it cannot (``/readyz``)."""
        await self._db.run(lambda db: db.execute("SELECT 1 FROM consultations LIMIT 1").fetchall())

    async def get(self, cid: str) -> Consultation | None:
        if not valid_consultation_id(cid):
            return None

        def select(db: Connection) -> Consultation | None:
            row = db.execute(f"{_SELECT_CONSULTATIONS} WHERE c.id = ?", (cid,)).fetchone()
            return _consultation(row) if row else None

        return await self._db.run(select)

    async def record_consent(
        self, cid: str, confirmed_by: str, method: str, recorded_by: str
    ) -> Consent:
        """Append a consent record; it supersedes earlier ones, which stay for the audit trail."""
        consent = _new_consent(confirmed_by, method, recorded_by)
        if not valid_consultation_id(cid):
            raise UnknownConsultation(cid)

        def insert(db: Connection) -> None:
            with db:
                if db.execute("SELECT 1 FROM consultations WHERE id = ?", (cid,)).fetchone():
                    _insert_consent(db, cid, consent)
                    return
            raise UnknownConsultation(cid)

        await self._db.run(insert)
        logger.info("consent recorded for consultation %s (%s)", cid, method)
        return consent

    async def consent_history(self, cid: str) -> list[Consent]:
        """Every consent record of a consultation, oldest first (the audit trail)."""

        def select(db: Connection) -> list[Consent]:
            rows = db.execute(
                "SELECT confirmed_by, confirmed_at, method, recorded_by FROM consents"
                " WHERE consultation_id = ? ORDER BY seq",
                (cid,),
            ).fetchall()
            return [Consent(*row) for row in rows]

        return await self._db.run(select)

    async def recording_enabled(self, cid: str) -> bool | None:
        """The consultation's recording switch (on unless turned off); None if unknown."""
        if not valid_consultation_id(cid):
            return None

        def select(db: Connection) -> bool | None:
            row = db.execute(
                "SELECT recording_enabled FROM consultations WHERE id = ?", (cid,)
            ).fetchone()
            return bool(row[0]) if row else None

        return await self._db.run(select)

    async def set_recording_enabled(self, cid: str, enabled: bool) -> None:
        if not valid_consultation_id(cid):
            raise UnknownConsultation(cid)

        def update(db: Connection) -> int:
            with db:
                return db.execute(
                    "UPDATE consultations SET recording_enabled = ? WHERE id = ?",
                    (int(enabled), cid),
                ).rowcount

        if not await self._db.run(update):
            raise UnknownConsultation(cid)
        logger.info("recording %s for consultation %s", "enabled" if enabled else "disabled", cid)

    async def revoke_access(self, cid: str) -> float:
        """Withdraw every token issued for the consultation until now; the time it took effect
        (Unix seconds). Tokens issued later work. ``UnknownConsultation`` for an unknown id."""
        if not valid_consultation_id(cid):
            raise UnknownConsultation(cid)
        now = time.time()

        def update(db: Connection) -> int:
            with db:
                return db.execute(
                    "UPDATE consultations SET access_revoked_at = ? WHERE id = ?", (now, cid)
                ).rowcount

        if not await self._db.run(update):
            raise UnknownConsultation(cid)
        logger.info("access to consultation %s withdrawn", cid)
        return now

    async def access_revocations(self) -> dict[ConsultationId, float]:
        """Each consultation whose access was ever withdrawn, with the latest time."""

        def select(db: Connection) -> dict[ConsultationId, float]:
            rows = db.execute(
                "SELECT id, access_revoked_at FROM consultations"
                " WHERE access_revoked_at IS NOT NULL"
            ).fetchall()
            return {ConsultationId(cid): float(at) for cid, at in rows}

        return await self._db.run(select)

    async def close(self) -> None:
        """Idempotent: the app's cleanup and a CLI command may both call it."""
        await self._db.close()

    # Defined last: for type checkers, a method named ``list`` shadows the builtin in the
    # annotations that follow it in the class body.
    async def list(self) -> list[Consultation]:
        """Every consultation, oldest first."""

        def select(db: Connection) -> list[Consultation]:
            rows = db.execute(f"{_SELECT_CONSULTATIONS} ORDER BY c.rowid").fetchall()
            return [_consultation(row) for row in rows]

        return await self._db.run(select)


def _new_consent(confirmed_by: str, method: str, recorded_by: str) -> Consent:
    if method not in CONSENT_METHODS:
        raise ValueError(f"consent method must be one of {', '.join(CONSENT_METHODS)}")
    return Consent(
        confirmed_by=_text(confirmed_by, "confirmed_by"),
        confirmed_at=utc_now_iso(timespec="seconds"),
        method=method,
        recorded_by=recorded_by,
    )


def _insert_consent(db: Connection, cid: str, consent: Consent) -> None:
    db.execute(
        "INSERT INTO consents (consultation_id, confirmed_by, confirmed_at, method, recorded_by)"
        " VALUES (?, ?, ?, ?, ?)",
        (cid, consent.confirmed_by, consent.confirmed_at, consent.method, consent.recorded_by),
    )


def _consultation(row: tuple[Any, ...]) -> Consultation:
    cid, title, created_at, video_codec, *consent = row
    return Consultation(
        id=cid,
        title=title,
        created_at=created_at,
        video_codec=video_codec,
        consent=Consent(*consent) if consent[0] is not None else None,
    )
