"""Invites and their short links, shared by the REST API and the CLI (no aiohttp in here).

An invite link is ``<base URL>/j/<code>``: the page there trades the code for a token
(``POST /api/join``, signaling/http/api.py), keeps the token in ``sessionStorage`` and the short
link in the address bar. The code is bound to one consultation, role, page and identity, so a
reload (or a second device) joins as the same participant. Old ``/<page>#token=`` links still
work: see docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay import ConsultationId
from signaling.auth.grants import Grant, Role, TokenIssuer, new_identity
from signaling.db.invites import InviteBook, InviteRecord
from signaling.db.store import Consultation

logger = logging.getLogger(__name__)

# Observers watch on the surgeon page; its controls follow the token's rights.
PAGE_FOR_ROLE: dict[Role, str] = {
    Role.CLINIC: "clinic",
    Role.SURGEON: "surgeon",
    Role.OBSERVER: "surgeon",
}
INVITE_ROLES: tuple[Role, ...] = tuple(PAGE_FOR_ROLE)
REPLAY_PAGE = "replay"
"The surgeon's link to the consultation's recordings (the replay right comes with the role)."


@dataclass(frozen=True)
class Invite:
    id: str
    link: str
    role: Role
    page: str
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "link": self.link,
            "role": str(self.role),
            "page": self.page,
            "expires_at": self.expires_at,
        }


def issue_token(
    tokens: TokenIssuer, role: Role, cid: ConsultationId, ttl_s: int, name: str = ""
) -> tuple[str, Grant]:
    """A token with the role's default rights and a fresh random identity."""
    grant = Grant.for_role(role, cid, new_identity(role), ttl_s, name=name)
    return tokens.issue(grant), grant


def token_for(tokens: TokenIssuer, invite: InviteRecord) -> str:
    """The token a valid invite is exchanged for: always the same participant, and never
    outliving the invite."""
    ttl_s = max(1, invite.expires_at - int(time.time()))
    grant = Grant.for_role(
        invite.role, invite.consultation_id, invite.identity, ttl_s, name=invite.name
    )
    return tokens.issue(grant)


async def issue_invite(
    book: InviteBook,
    base_url: str,
    cid: ConsultationId,
    role: Role,
    ttl_s: int,
    page: str | None = None,
    name: str = "",
) -> Invite:
    """An invite for one of ``INVITE_ROLES`` (admins have no page to be invited to) on its
    role's page, or on ``page``. ``name`` (already checked by ``display_name``) is who it is
    for; without one the page asks its holder."""
    page = page or PAGE_FOR_ROLE[role]
    expires_at = int(time.time()) + ttl_s
    record, code = await book.add(cid, role, page, new_identity(role), expires_at, name)
    link = f"{base_url.rstrip('/')}/j/{code}"
    return Invite(record.id, link, role, page, record.expires_at)


async def invite_links(
    book: InviteBook,
    base_url: str,
    cid: ConsultationId,
    ttl_s: int,
    names: Mapping[Role, str] | None = None,
) -> dict[str, str]:
    """One link per participant role (``clinic`` / ``surgeon`` / ``observer``) plus the
    surgeon's ``replay`` link; ``names``: who each role's link is for (the replay link is the
    surgeon's)."""
    names = names or {}
    links = {
        str(role): (
            await issue_invite(book, base_url, cid, role, ttl_s, name=names.get(role, ""))
        ).link
        for role in INVITE_ROLES
    }
    replay = await issue_invite(
        book, base_url, cid, Role.SURGEON, ttl_s, REPLAY_PAGE, names.get(Role.SURGEON, "")
    )
    return {**links, REPLAY_PAGE: replay.link}


async def with_links(
    book: InviteBook,
    base_url: str,
    consultation: Consultation,
    ttl_s: int,
    names: Mapping[Role, str] | None = None,
) -> dict[str, Any]:
    """Consultation JSON plus invite links: the answer to creating a consultation."""
    links = await invite_links(book, base_url, consultation.id, ttl_s, names)
    return {**consultation.to_json(), "links": links}
