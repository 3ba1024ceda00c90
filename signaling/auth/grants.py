"""Grants and tokens: who may do what in which consultation.

A Token is a signed, expiring JWT (HS256) carrying one Grant. Handlers never read claims: they ask
the Grant (``grant.ensure_publish(cid)``...), which raises ``Forbidden`` with a readable reason.
``TokenInvalid`` maps to HTTP 401 / WebSocket close 4401, ``Forbidden`` to 403 / 4403.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import jwt

from relay import ConsultationId, FeedName

ISSUER = "endolink"
ALGORITHM = "HS256"
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"Three base64url parts: what a token looks like before anything decodes it."
ANY_CONSULTATION = ConsultationId("*")


class Role(StrEnum):
    CLINIC = "clinic"
    SURGEON = "surgeon"
    OBSERVER = "observer"
    ADMIN = "admin"


class TokenInvalid(Exception):
    """The token is missing, malformed, badly signed or expired (HTTP 401)."""

    code = "unauthorized"
    close_code = 4401


class TokenMissing(TokenInvalid):
    """The request carries no credentials at all: RFC 6750 §3.1 answers it without an error
    code (a client learns it must authenticate, not that a token was wrong)."""


class TokenWithdrawn(TokenInvalid):
    """The token was good, but its consultation's links (or its own link) were withdrawn since
    it was issued (HTTP 401 ``access-withdrawn``, WebSocket close 4410)."""

    code = "access-withdrawn"
    close_code = 4410


class Forbidden(Exception):
    """The token is valid but its Grant does not allow the action (HTTP 403)."""


@dataclass(frozen=True)
class Grant:
    """Rights carried by one token. ``cid`` is ``*`` only for admins.

    The ``may_*`` flags travel in the token (claims ``pub``, ``ann``, ``rep``); the other rights
    below follow from the role alone and are never signed, so a token minted before a right
    existed grants exactly what it granted then. Handlers ask ``ensure_*``, never the role."""

    identity: str
    cid: ConsultationId
    role: Role
    may_publish: bool
    may_annotate: bool
    may_replay: bool
    expires_at: int
    name: str = ""
    issued_at: float = field(default=0.0, compare=False)
    """When the token was signed (claim ``iat``, sub-second), set by ``verify``: revocations
    compare against it. Not part of the rights, so not compared."""

    @classmethod
    def for_role(
        cls, role: Role, cid: ConsultationId, identity: str, ttl_s: int, name: str = ""
    ) -> Grant:
        """Default rights of a role: clinic publishes the endoscope, surgeon publishes talk-back
        and annotates, observer only watches, admin manages everything."""
        return cls(
            identity=identity,
            cid=cid,
            role=role,
            may_publish=role in (Role.CLINIC, Role.SURGEON),
            may_annotate=role in (Role.SURGEON, Role.CLINIC),
            may_replay=role in (Role.SURGEON, Role.ADMIN),
            expires_at=int(time.time()) + ttl_s,
            name=name,
        )

    @property
    def leads(self) -> bool:
        """May clear every mark and freeze the picture: the surgeon leads the consultation."""
        return self.role in (Role.SURGEON, Role.ADMIN)

    @property
    def manages_recording(self) -> bool:
        """May switch recording and record the patient's consent: the clinic is with the
        patient."""
        return self.role in (Role.CLINIC, Role.ADMIN)

    @property
    def publishes(self) -> FeedName | None:
        """The feed this token's WHIP publishes: the clinic the endoscope, others talk-back;
        None when it may not publish (admins never do)."""
        if not self.may_publish or self.role is Role.ADMIN:
            return None
        return FeedName.ENDOSCOPE if self.role is Role.CLINIC else FeedName.TALKBACK

    @property
    def views(self) -> FeedName:
        """The feed a WHEP request without ``?feed=`` receives: what the other side publishes."""
        return FeedName.TALKBACK if self.role is Role.CLINIC else FeedName.ENDOSCOPE

    @property
    def replays(self) -> bool:
        """May replay the recordings of the consultations it covers."""
        return self.may_replay or self.role is Role.ADMIN

    @property
    def sees_every_consultation(self) -> bool:
        """An admin token for ``*``: lists span every consultation, not just its own."""
        return self.role is Role.ADMIN and self.cid == ANY_CONSULTATION

    def covers(self, cid: ConsultationId) -> bool:
        return self.cid in (cid, ANY_CONSULTATION)

    def ensure_member(self, cid: ConsultationId) -> None:
        if not self.covers(cid):
            raise Forbidden("token is for another consultation")

    def ensure_publish(self, cid: ConsultationId) -> FeedName:
        """The feed to publish, or ``Forbidden``."""
        self.ensure_member(cid)
        if self.publishes is None:
            raise Forbidden(f"role {self.role} may not publish")
        return self.publishes

    def ensure_annotate(self, cid: ConsultationId) -> None:
        self._require(cid, self.may_annotate, "may not annotate")

    def ensure_lead(self, cid: ConsultationId) -> None:
        self.ensure_member(cid)
        if not self.leads:
            raise Forbidden("only the surgeon may clear all marks or freeze the picture")

    def ensure_record_consent(self, cid: ConsultationId) -> None:
        self._require(cid, self.manages_recording, "may not record consent")

    def ensure_switch_recording(self, cid: ConsultationId) -> None:
        self._require(cid, self.manages_recording, "may not switch recording")

    def ensure_replay_somewhere(self) -> None:
        """Before the recording (and so its consultation) is known."""
        if not self.replays:
            raise Forbidden(f"role {self.role} may not replay recordings")

    def ensure_replay(self, cid: ConsultationId) -> None:
        self._require(cid, self.replays, "may not replay recordings")

    def _require(self, cid: ConsultationId, allowed: bool, refusal: str) -> None:
        self.ensure_member(cid)
        if not allowed:
            raise Forbidden(f"role {self.role} {refusal}")

    def ensure_owner(self, identity: str) -> None:
        """A WHIP/WHEP session is changed or ended by whoever opened it, or an admin."""
        if identity != self.identity and self.role is not Role.ADMIN:
            raise Forbidden("this session belongs to another participant")

    def ensure_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden("admin token required")

    def ensure_admin_of(self, cid: ConsultationId) -> None:
        """Manage one consultation's access (invites, withdrawal): the coordinator's admin token
        for it or for every consultation. Withdrawing is not the surgeon's or the clinic's: it
        ends their own access too, and only the coordinator can issue the new links."""
        self.ensure_admin()
        self.ensure_member(cid)

    def ensure_admin_everywhere(self) -> None:
        """Acts beyond any one consultation (creating one): an admin token scoped to one
        consultation must not reach further."""
        self.ensure_admin()
        if self.cid != ANY_CONSULTATION:
            raise Forbidden(
                "this admin token is for one consultation only; "
                "creating consultations needs an admin token for every consultation"
            )


Refusal = Callable[[Grant], "str | None"]
"Why a correctly signed token is no longer honoured (withdrawn), or None."


class TokenIssuer:
    """Signs and verifies tokens with one shared secret. ``refusal`` is asked after the
    signature and expiry checks: the one place a withdrawn token is refused, for HTTP and
    WebSocket alike (``signaling/auth/revocations.py``; an in-memory lookup, no query)."""

    def __init__(self, secret: str, refusal: Refusal | None = None) -> None:
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 characters")
        self._secret = secret
        self.refusal: Refusal = refusal or (lambda grant: None)

    def issue(self, grant: Grant) -> str:
        # ``iat`` as a float: a token minted in the same second as a revocation, but after it,
        # must still count as newer (RFC 7519 NumericDate allows fractions).
        now = time.time()
        claims = {
            "iss": ISSUER,
            "sub": grant.identity,
            "name": grant.name,
            "cid": grant.cid,
            "role": str(grant.role),
            "pub": grant.may_publish,
            "ann": grant.may_annotate,
            "rep": grant.may_replay,
            "iat": now,
            "nbf": int(now) - 5,
            "exp": grant.expires_at,
            "jti": secrets.token_urlsafe(8),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Grant:
        if not JWT_SHAPE.fullmatch(token):
            # PyJWT encodes the token to UTF-8 first: a lone surrogate (a JSON "\ud800" or a
            # non-UTF-8 header byte) would escape as UnicodeEncodeError, a 500.
            raise TokenInvalid("token rejected: not a JSON Web Token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "cid", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenInvalid("token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"token rejected: {exc}") from exc
        try:
            grant = Grant(
                identity=str(claims["sub"]),
                cid=ConsultationId(str(claims["cid"])),
                role=Role(claims["role"]),
                may_publish=bool(claims.get("pub", False)),
                may_annotate=bool(claims.get("ann", False)),
                may_replay=bool(claims.get("rep", False)),
                expires_at=int(claims["exp"]),
                name=str(claims.get("name", "")),
                issued_at=float(claims["iat"]),
            )
        except (ValueError, TypeError) as exc:
            raise TokenInvalid(f"token claims malformed: {exc}") from exc
        refusal = self.refusal(grant)
        if refusal is not None:
            raise TokenWithdrawn(refusal)
        return grant


def new_identity(role: Role) -> str:
    """A random participant id: no names or patient data end up in tokens or logs."""
    return f"{role}-{secrets.token_hex(4)}"
