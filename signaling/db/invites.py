"""Invites behind short links: one row per ``/j/<code>``, bound to a consultation, a role, a page
and the identity (and name) its token will carry.

The table (``invites``, declared and migrated here) keeps only the code's SHA-256; the code itself
is shown once, in the printed link. Rows are never deleted: a revoked or expired invite stays so
that its link says "withdrawn" or "expired" instead of "unknown".
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from persistence.database import INTEGRITY_ERRORS, Connection, Target, open_database
from persistence.sqlite import Migrations
from persistence.times import utc_now_iso
from relay import ConsultationId
from signaling.auth.grants import Role
from signaling.auth.invite_codes import code_hash, new_code, normalise

_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE invites (
        id              TEXT PRIMARY KEY,
        code_hash       TEXT NOT NULL UNIQUE,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        role            TEXT NOT NULL,
        page            TEXT NOT NULL,
        identity        TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        created_at      TEXT NOT NULL,
        expires_at      INTEGER NOT NULL,
        revoked_at      TEXT
    );
    CREATE INDEX invites_by_consultation ON invites (consultation_id);
    """,
)
# PostgreSQL: the same table; expires_at (Unix seconds) as BIGINT, past 2038.
_POSTGRES: tuple[str, ...] = (
    """
    CREATE TABLE invites (
        id              TEXT PRIMARY KEY,
        code_hash       TEXT NOT NULL UNIQUE,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        role            TEXT NOT NULL,
        page            TEXT NOT NULL,
        identity        TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        created_at      TEXT NOT NULL,
        expires_at      BIGINT NOT NULL,
        revoked_at      TEXT
    );
    CREATE INDEX invites_by_consultation ON invites (consultation_id);
    """,
)
SCHEMA = Migrations("invites", _STEPS, postgres=_POSTGRES)

_COLUMNS = "id, consultation_id, role, page, identity, name, created_at, expires_at, revoked_at"


@dataclass(frozen=True)
class InviteRecord:
    """One invite as stored (no code: only its hash is kept)."""

    id: str
    consultation_id: ConsultationId
    role: Role
    page: str
    identity: str
    name: str
    created_at: str
    expires_at: int
    revoked_at: str | None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> InviteRecord:
        values = list(row)
        values[2] = Role(values[2])
        return cls(*values)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        """What the API shows of an invite; the name is left out (personal data)."""
        return {
            "id": self.id,
            "consultation": self.consultation_id,
            "role": str(self.role),
            "page": self.page,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


class InviteBook:
    """The invites table on its own connection to the server's database."""

    def __init__(self, path: Target) -> None:
        self._db = open_database(path, SCHEMA)

    async def add(
        self,
        cid: ConsultationId,
        role: Role,
        page: str,
        identity: str,
        expires_at: int,
        name: str = "",
    ) -> tuple[InviteRecord, str]:
        """A new invite and its code (the only time the code exists in full)."""
        record = InviteRecord(
            "inv-" + secrets.token_hex(6),
            cid,
            role,
            page,
            identity,
            name,
            utc_now_iso(),
            expires_at,
            None,
        )

        def insert(db: Connection) -> str:
            while True:
                code = new_code()
                try:
                    with db:
                        db.execute(
                            f"INSERT INTO invites (code_hash, {_COLUMNS})"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (code_hash(normalise(code) or ""), *_row(record)),
                        )
                    return code
                except INTEGRITY_ERRORS:  # 1 in 2**60 per stored code: draw again
                    continue

        return record, await self._db.run(insert)

    async def find(self, code: str) -> InviteRecord | None:
        """The invite a code opens, in whatever state; None for a code never issued."""
        symbols = normalise(code)
        if symbols is None:
            return None
        return await self._one("code_hash = ?", code_hash(symbols))

    async def get(self, invite_id: str) -> InviteRecord | None:
        return await self._one("id = ?", invite_id)

    async def revoke(self, invite_id: str) -> bool:
        """Withdraw an invite; False if it does not exist (revoking twice keeps the first time)."""

        def update(db: Connection) -> bool:
            with db:
                found = db.execute("SELECT 1 FROM invites WHERE id = ?", (invite_id,)).fetchone()
                db.execute(
                    "UPDATE invites SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (utc_now_iso(), invite_id),
                )
            return found is not None

        return await self._db.run(update)

    async def revoke_all(self, cid: ConsultationId) -> int:
        """Withdraw every invite of a consultation not withdrawn yet; how many."""

        def update(db: Connection) -> int:
            with db:
                return db.execute(
                    "UPDATE invites SET revoked_at = ? WHERE consultation_id = ?"
                    " AND revoked_at IS NULL",
                    (utc_now_iso(), cid),
                ).rowcount

        return await self._db.run(update)

    async def withdrawn_identities(self) -> set[tuple[ConsultationId, str]]:
        """(consultation, identity) of every withdrawn invite whose tokens could still be
        valid: an invite's identity is its own, so it names exactly the tokens its link gave."""
        now = int(time.time())

        def select(db: Connection) -> set[tuple[ConsultationId, str]]:
            rows = db.execute(
                "SELECT consultation_id, identity FROM invites"
                " WHERE revoked_at IS NOT NULL AND expires_at > ?",
                (now,),
            ).fetchall()
            return {(ConsultationId(cid), identity) for cid, identity in rows}

        return await self._db.run(select)

    async def close(self) -> None:
        await self._db.close()

    async def _one(self, where: str, value: str) -> InviteRecord | None:
        def select(db: Connection) -> InviteRecord | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM invites WHERE {where}", (value,)).fetchone()
            return None if row is None else InviteRecord.of(row)

        return await self._db.run(select)


def _row(record: InviteRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.consultation_id,
        str(record.role),
        record.page,
        record.identity,
        record.name,
        record.created_at,
        record.expires_at,
        record.revoked_at,
    )
