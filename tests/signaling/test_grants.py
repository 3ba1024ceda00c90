"""Tokens carry exactly the rights they were issued with, and nothing else gets through."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from relay import FeedName
from signaling.auth.grants import (
    ALGORITHM,
    ANY_CONSULTATION,
    ISSUER,
    Forbidden,
    Grant,
    Role,
    TokenInvalid,
    TokenIssuer,
    new_identity,
)

SECRET = "s" * 40
CID = "abcdef123"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET)


def grant(role: Role, consultation: str = CID, ttl_s: int = 600) -> Grant:
    return Grant.for_role(role, consultation, new_identity(role), ttl_s, name="Dr. Who")


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": ISSUER,
        "sub": "clinic-1234",
        "cid": CID,
        "role": "clinic",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("role", list(Role))
def test_a_verified_token_gives_back_the_issued_grant(issuer: TokenIssuer, role: Role) -> None:
    original = grant(role)
    assert issuer.verify(issuer.issue(original)) == original


def test_expired_token_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(grant(Role.SURGEON, ttl_s=-1))
    with pytest.raises(TokenInvalid, match="expired"):
        issuer.verify(token)


def test_token_signed_with_another_secret_is_rejected(issuer: TokenIssuer) -> None:
    token = TokenIssuer("o" * 40).issue(grant(Role.CLINIC))
    with pytest.raises(TokenInvalid, match="rejected"):
        issuer.verify(token)


def test_tampered_payload_is_rejected(issuer: TokenIssuer) -> None:
    header, payload, signature = issuer.issue(grant(Role.OBSERVER)).split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(role="admin", cid=ANY_CONSULTATION)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        issuer.verify(f"{header}.{forged}.{signature}")


def test_unsigned_token_is_rejected(issuer: TokenIssuer) -> None:
    token = jwt.encode(claims(role="admin", cid="*"), key="", algorithm="none")
    with pytest.raises(TokenInvalid):
        issuer.verify(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "cid", "role"])
def test_token_missing_a_required_claim_is_rejected(issuer: TokenIssuer, missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm=ALGORITHM)
    with pytest.raises(TokenInvalid):
        issuer.verify(token)


@pytest.mark.parametrize(
    "bad", [{"iss": "someone-else"}, {"role": "superuser"}, {"exp": "tomorrow"}]
)
def test_token_with_a_wrong_claim_is_rejected(issuer: TokenIssuer, bad: dict[str, str]) -> None:
    token = jwt.encode(claims(**bad), SECRET, algorithm=ALGORITHM)
    with pytest.raises(TokenInvalid):
        issuer.verify(token)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_garbage_is_rejected_as_invalid_token(issuer: TokenIssuer, token: str) -> None:
    with pytest.raises(TokenInvalid):
        issuer.verify(token)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenIssuer("short")


def test_new_identities_are_random_and_carry_only_the_role() -> None:
    first, second = new_identity(Role.CLINIC), new_identity(Role.CLINIC)
    assert first != second
    assert first.startswith("clinic-")


def test_clinic_publishes_and_annotates_but_does_not_replay() -> None:
    clinic = grant(Role.CLINIC)
    clinic.ensure_publish(CID)
    clinic.ensure_annotate(CID)
    with pytest.raises(Forbidden):
        clinic.ensure_replay(CID)
    with pytest.raises(Forbidden):
        clinic.ensure_admin()


def test_surgeon_publishes_annotates_and_replays() -> None:
    surgeon = grant(Role.SURGEON)
    surgeon.ensure_publish(CID)
    surgeon.ensure_annotate(CID)
    surgeon.ensure_replay(CID)


def test_observer_only_watches() -> None:
    observer = grant(Role.OBSERVER)
    observer.ensure_member(CID)
    for check in (observer.ensure_publish, observer.ensure_annotate, observer.ensure_replay):
        with pytest.raises(Forbidden):
            check(CID)


def test_admin_of_every_consultation_manages_but_never_publishes() -> None:
    admin = grant(Role.ADMIN, consultation=ANY_CONSULTATION)
    admin.ensure_admin()
    admin.ensure_member("anyother1")
    admin.ensure_replay("anyother1")
    with pytest.raises(Forbidden):
        admin.ensure_publish(CID)


@pytest.mark.parametrize("role", list(Role))
def test_a_grant_gives_no_rights_in_another_consultation(role: Role) -> None:
    with pytest.raises(Forbidden, match="another consultation"):
        grant(role).ensure_member("otherone1")


@pytest.mark.parametrize(
    ("role", "leads", "manages_recording", "publishes", "views"),
    [
        (Role.CLINIC, False, True, FeedName.ENDOSCOPE, FeedName.TALKBACK),
        (Role.SURGEON, True, False, FeedName.TALKBACK, FeedName.ENDOSCOPE),
        (Role.OBSERVER, False, False, None, FeedName.ENDOSCOPE),
        (Role.ADMIN, True, True, None, FeedName.ENDOSCOPE),
    ],
)
def test_rights_follow_from_the_role_and_survive_a_token_round_trip(
    issuer: TokenIssuer,
    role: Role,
    leads: bool,
    manages_recording: bool,
    publishes: FeedName | None,
    views: FeedName,
) -> None:
    verified = issuer.verify(issuer.issue(grant(role)))
    rights = (verified.leads, verified.manages_recording, verified.publishes, verified.views)
    assert rights == (leads, manages_recording, publishes, views)


def test_a_session_is_changed_only_by_its_owner_or_an_admin() -> None:
    clinic = grant(Role.CLINIC)
    clinic.ensure_owner(clinic.identity)
    with pytest.raises(Forbidden, match="belongs to another participant"):
        clinic.ensure_owner("clinic-other")
    grant(Role.ADMIN).ensure_owner("clinic-other")
