"""Invite tokens and links, shared by the REST API and the CLI (no aiohttp in here).

A link carries its token in the URL fragment (``#token=``), which browsers never send to the
server nor in ``Referer``: see docs/architecture.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from relay import ConsultationId
from signaling.auth.grants import Grant, Role, TokenIssuer, new_identity
from signaling.db.store import Consultation
from signaling.settings import Settings

logger = logging.getLogger(__name__)

# Observers watch on the surgeon page; its controls follow the token's rights.
PAGE_FOR_ROLE: dict[Role, str] = {
    Role.CLINIC: "clinic",
    Role.SURGEON: "surgeon",
    Role.OBSERVER: "surgeon",
}
INVITE_ROLES: tuple[Role, ...] = tuple(PAGE_FOR_ROLE)


@dataclass(frozen=True)
class Invite:
    token: str
    link: str
    role: Role
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "link": self.link,
            "role": str(self.role),
            "expires_at": self.expires_at,
        }


def issue_token(
    tokens: TokenIssuer, role: Role, cid: ConsultationId, ttl_s: int, name: str = ""
) -> tuple[str, Grant]:
    """A token with the role's default rights and a fresh random identity."""
    grant = Grant.for_role(role, cid, new_identity(role), ttl_s, name=name)
    return tokens.issue(grant), grant


def issue_invite(
    settings: Settings,
    tokens: TokenIssuer,
    cid: ConsultationId,
    role: Role,
    ttl_s: int | None = None,
) -> Invite:
    """An invite for one of ``INVITE_ROLES`` (admins have no page to be invited to)."""
    token, grant = issue_token(tokens, role, cid, ttl_s or settings.token_ttl_s)
    link = f"{settings.base_url}/{PAGE_FOR_ROLE[role]}#token={token}"
    return Invite(token=token, link=link, role=role, expires_at=grant.expires_at)


def invite_links(settings: Settings, tokens: TokenIssuer, cid: ConsultationId) -> dict[str, str]:
    """One link per participant role, keyed ``clinic`` / ``surgeon`` / ``observer``."""
    return {str(role): issue_invite(settings, tokens, cid, role).link for role in INVITE_ROLES}


def with_links(
    settings: Settings, tokens: TokenIssuer, consultation: Consultation
) -> dict[str, Any]:
    """Consultation JSON plus invite links: the answer to creating a consultation."""
    return {**consultation.to_json(), "links": invite_links(settings, tokens, consultation.id)}
