"""The audit trail's table and its actions: what the trail can say, and how its table grew.

Kept apart from ``audit.py`` (the writer and the reader): a new action means a new migration
step here (SQLite cannot change a CHECK, so a step rebuilds the table; PostgreSQL's step
replaces the ``audit_action_check`` constraint) and a member of ``AuditAction`` — the two must
list the same names (tests/signaling/test_audit.py).
"""

from __future__ import annotations

from enum import StrEnum

from persistence.sqlite import Migrations

_ACTIONS = (
    "'join', 'leave', 'publish', 'publish-end', 'view', 'view-end', 'annotation', 'snapshot', "
    "'freeze', 'unfreeze', 'consent', 'recording', 'replay', 'download', 'export', "
    "'export-download', 'revoke', 'refused-token'"
)
# Step 3 widens the CHECK for the hospital-record actions (issue 11: dicom-export; fhir and
# patient, named in the same plan, so one rebuild serves both).
_ACTIONS_3 = f"{_ACTIONS}, 'dicom-export', 'fhir', 'patient'"


def _chained_table(name: str, actions: str, seq: str = "INTEGER") -> str:
    """The chained trail's table (steps 2 and 3 differ only in the actions allowed; PostgreSQL's
    ``seq`` is a BIGINT: its INTEGER has 32 bits)."""
    return f"""CREATE TABLE {name} (
        seq             {seq} PRIMARY KEY,
        consultation_id TEXT,
        at              TEXT NOT NULL,
        identity        TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        role            TEXT NOT NULL,
        action          TEXT NOT NULL CHECK (action IN ({actions})),
        recording_id    TEXT,
        detail          TEXT,
        count           INTEGER NOT NULL DEFAULT 1,
        prev_hash       TEXT,
        consultation_prev_hash TEXT,
        hash            TEXT
    );"""


# Step 1 was user_version 3 of the old single list in signaling/db/store.py. Step 2 rebuilds the
# table (SQLite cannot change a CHECK) with the chain's columns; the rows it copies are chained
# right after it, when the trail is opened (``_chain_unhashed``). No foreign keys: the trail
# outlives what it names (and may name no consultation: a refused token).
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
    f"""
    {_chained_table("audit_chained", _ACTIONS)}
    INSERT INTO audit_chained
        (seq, consultation_id, at, identity, name, role, action, recording_id, detail)
        SELECT seq, consultation_id, at, identity, name, role, action, recording_id, detail
        FROM audit ORDER BY seq;
    DROP TABLE audit;
    ALTER TABLE audit_chained RENAME TO audit;
    CREATE INDEX audit_by_consultation ON audit (consultation_id, seq);
    """,
    f"""
    {_chained_table("audit_widened", _ACTIONS_3)}
    INSERT INTO audit_widened SELECT * FROM audit ORDER BY seq;
    DROP TABLE audit;
    ALTER TABLE audit_widened RENAME TO audit;
    CREATE INDEX audit_by_consultation ON audit (consultation_id, seq);
    """,
)
# PostgreSQL: today's table, with no unchained past to copy.
_POSTGRES: tuple[str, ...] = (
    f"""
    {_chained_table("audit", _ACTIONS_3, "BIGINT")}
    CREATE INDEX audit_by_consultation ON audit (consultation_id, seq);
    """,
)
SCHEMA = Migrations("audit", _STEPS, legacy=(3,), postgres=_POSTGRES)


class AuditAction(StrEnum):
    JOIN = "join"
    "A device of a person opened the consultation's WebSocket."
    LEAVE = "leave"
    "That device's WebSocket ended (detail: how)."
    PUBLISH = "publish"
    "A WHIP session was created (detail: feed, session)."
    PUBLISH_END = "publish-end"
    VIEW = "view"
    "A WHEP session was created (detail: feed, session, annotated, quality)."
    VIEW_END = "view-end"
    ANNOTATION = "annotation"
    "A mark was added, removed or undone, the board cleared, archived or restored (not updates)."
    SNAPSHOT = "snapshot"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    CONSENT = "consent"
    RECORDING = "recording"
    "The recording switch was set (detail: on/off)."
    REPLAY = "replay"
    "A replay page was given access to the media (a media token, or a Bearer read from byte 0)."
    DOWNLOAD = "download"
    "The original recording files were downloaded."
    EXPORT = "export"
    "An annotated export was started or cancelled."
    EXPORT_DOWNLOAD = "export-download"
    "An annotated export's MP4 was downloaded."
    REVOKE = "revoke"
    "A consultation's access was revoked."
    REFUSED_TOKEN = "refused-token"
    "Requests with a bad token from one address within a minute (``count``); no consultation."
    DICOM_EXPORT = "dicom-export"
    "A DICOM export was started (detail: the job, and zip or the archive's kind; no patient data)."
    FHIR = "fhir"
    "A recording's FHIR Bundle (which holds the patient's details) was read."
    PATIENT = "patient"
    "The patient's details were recorded or read (detail: which; never the values)."
