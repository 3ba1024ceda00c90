"""REST API: every route's success, and every way a request can be wrong."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, TokenIssuer
from signaling.db.store import MAX_TEXT_LENGTH, Consultation
from signaling.keys import HUB
from signaling.settings import IceServer, Settings
from tests.conftest import OTHER_CID, MakeToken, bearer, error_of, join


def routes(cid: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every API route with a body that would succeed for the right token."""
    return [
        ("POST", "/api/consultations", {"title": "x"}),
        ("GET", f"/api/consultations/{cid}", None),
        ("POST", f"/api/consultations/{cid}/consent", {"confirmed_by": "A", "method": "page"}),
        ("POST", f"/api/consultations/{cid}/invites", {"role": "observer"}),
        ("GET", "/api/session", None),
    ]


POST_ROUTES = ["/api/consultations", "/consent", "/invites"]


def post_path(kind: str, cid: str) -> str:
    return kind if kind.startswith("/api") else f"/api/consultations/{cid}{kind}"


@pytest.fixture
def hub_messages(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(
        client.app[HUB], "broadcast", lambda cid, msg: sent.append((cid, msg.to_json()))
    )
    return sent


# --- authentication, common to every route ------------------------------------------------


@pytest.mark.parametrize("index", range(5))
async def test_a_request_without_a_token_is_rejected_with_401(
    client: TestClient, consultation: Consultation, index: int
) -> None:
    method, path, body = routes(consultation.id)[index]
    response = await client.request(method, path, json=body)
    assert await error_of(response, 401) == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("index", range(5))
async def test_an_expired_token_is_rejected_with_401(
    client: TestClient, consultation: Consultation, make_token: MakeToken, index: int
) -> None:
    method, path, body = routes(consultation.id)[index]
    token = make_token("admin", ANY_CONSULTATION, ttl_s=-5)
    response = await client.request(method, path, json=body, headers=bearer(token))
    assert await error_of(response, 401) == "unauthorized"
    assert "expired" in (await response.json())["reason"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.jwt"},
        bearer(
            TokenIssuer("another-secret-" + "y" * 30).issue(
                Grant.for_role(Role.ADMIN, ANY_CONSULTATION, "admin-1", 600)
            )
        ),
    ],
    ids=["basic-scheme", "empty-bearer", "garbage", "wrong-secret"],
)
async def test_a_malformed_or_foreign_token_is_rejected_with_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = await client.get("/api/session", headers=headers)
    assert await error_of(response, 401) == "unauthorized"


@pytest.mark.parametrize("name", ["token", "access_token"])
async def test_a_token_in_the_query_string_is_refused(
    client: TestClient, make_token: MakeToken, name: str
) -> None:
    response = await client.get("/api/session", params={name: make_token("admin", "*")})
    assert await error_of(response, 401) == "unauthorized"
    assert "URL" in (await response.json())["reason"]


# --- POST /api/consultations ----------------------------------------------------------------


async def test_an_admin_creates_a_consultation_with_invite_links(
    client: TestClient, admin: dict[str, str], tokens: TokenIssuer, settings: Settings
) -> None:
    response = await client.post(
        "/api/consultations",
        json={"title": "Knee", "consent_by": "Dr. Bat", "video_codec": "h264"},
        headers=admin,
    )
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"id", "title", "created_at", "video_codec", "consent", "links"}
    assert (body["title"], body["video_codec"]) == ("Knee", "H264")
    admin_identity = tokens.verify(admin["Authorization"].split()[1]).identity
    assert body["consent"]["method"] == "paper"
    assert body["consent"]["recorded_by"] == admin_identity
    pages = {
        "clinic": ("clinic", "clinic"),
        "surgeon": ("surgeon", "surgeon"),
        "observer": ("observer", "surgeon"),
        "replay": ("surgeon", "replay"),
    }
    assert set(body["links"]) == set(pages)
    for key, link in body["links"].items():
        assert link.startswith(f"{settings.base_url}/j/")
        answer = await join(client, link)
        grant = tokens.verify(answer["token"])
        assert (grant.role, answer["page"]) == (Role(pages[key][0]), pages[key][1])
        assert grant.cid == body["id"]
        assert abs(grant.expires_at - time.time() - settings.token_ttl_s) < 5
    fetched = await client.get(f"/api/consultations/{body['id']}", headers=admin)
    assert await fetched.json() == {k: v for k, v in body.items() if k != "links"}


async def test_an_empty_body_creates_a_default_consultation(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    response = await client.post("/api/consultations", headers=admin)
    assert response.status == 201
    body = await response.json()
    assert (body["title"], body["video_codec"], body["consent"]) == (
        "Consultation",
        settings.video_codec,
        None,
    )


@pytest.mark.parametrize("role", ["clinic", "surgeon", "observer"])
async def test_only_admins_create_consultations(
    client: TestClient, make_token: MakeToken, consultation: Consultation, role: str
) -> None:
    headers = bearer(make_token(role, consultation.id))
    response = await client.post("/api/consultations", json={}, headers=headers)
    assert await error_of(response, 403) == "forbidden"


@pytest.mark.parametrize(
    "body",
    [
        {"title": 5},
        {"title": ["a"]},
        {"consent_by": {}},
        {"consent_by": True},
        {"video_codec": 8},
        {"video_codec": "AV1"},
        {"title": "x" * (MAX_TEXT_LENGTH + 1)},
        {"consent_by": " "},
        {"tittle": "typo"},
    ],
)
async def test_invalid_consultation_fields_are_a_400(
    client: TestClient, admin: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/api/consultations", json=body, headers=admin)
    assert await error_of(response, 400) == "bad-request"


# --- bodies, common to every POST route -----------------------------------------------------


@pytest.mark.parametrize("kind", POST_ROUTES)
@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"text"', b"null", b"\xff\xfe{", b"{} trailing"]
)
async def test_a_body_that_is_not_a_json_object_is_a_400(
    client: TestClient, admin: dict[str, str], consultation: Consultation, kind: str, raw: bytes
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    response = await client.post(post_path(kind, consultation.id), data=raw, headers=headers)
    assert await error_of(response, 400) == "bad-request"


@pytest.mark.parametrize("kind", POST_ROUTES)
async def test_an_oversized_body_is_a_413(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    settings: Settings,
    kind: str,
) -> None:
    raw = b'{"title": "' + b"x" * settings.max_sdp_bytes + b'"}'
    headers = {**admin, "Content-Type": "application/json"}
    response = await client.post(post_path(kind, consultation.id), data=raw, headers=headers)
    assert await error_of(response, 413) == "too-large"


# --- GET /api/consultations/{cid} -----------------------------------------------------------


@pytest.mark.parametrize("role", ["clinic", "surgeon", "observer"])
async def test_members_read_their_consultation_without_links(
    client: TestClient, make_token: MakeToken, consultation: Consultation, role: str
) -> None:
    response = await client.get(
        f"/api/consultations/{consultation.id}", headers=bearer(make_token(role, consultation.id))
    )
    assert response.status == 200
    assert await response.json() == consultation.to_json()


async def test_a_token_for_another_consultation_cannot_read_it(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    for role in ("surgeon", "admin"):
        response = await client.get(
            f"/api/consultations/{consultation.id}", headers=bearer(make_token(role, OTHER_CID))
        )
        assert await error_of(response, 403) == "forbidden"


@pytest.mark.parametrize("cid", ["unknown1234", "bad", "x" * 40])
async def test_an_unknown_consultation_is_a_404(
    client: TestClient, admin: dict[str, str], cid: str
) -> None:
    response = await client.get(f"/api/consultations/{cid}", headers=admin)
    assert await error_of(response, 404) == "not-found"


async def test_a_member_of_another_consultation_learns_nothing_about_unknown_ids(
    client: TestClient, make_token: MakeToken
) -> None:
    response = await client.get(
        "/api/consultations/unknown1234", headers=bearer(make_token("clinic", OTHER_CID))
    )
    assert await error_of(response, 403) == "forbidden"


# --- POST /api/consultations/{cid}/consent --------------------------------------------------


@pytest.mark.parametrize("role", ["clinic", "admin"])
async def test_clinic_or_admin_records_consent_and_everyone_is_told(
    client: TestClient,
    make_token: MakeToken,
    consultation_without_consent: Consultation,
    hub_messages: list[tuple[str, dict]],
    tokens: TokenIssuer,
    role: str,
) -> None:
    cid = consultation_without_consent.id
    token = make_token(role, cid)
    response = await client.post(
        f"/api/consultations/{cid}/consent",
        json={"confirmed_by": " Nurse Joy ", "method": "page"},
        headers=bearer(token),
    )
    assert response.status == 201
    consent = await response.json()
    assert set(consent) == {"confirmed_by", "confirmed_at", "method", "recorded_by"}
    assert (consent["confirmed_by"], consent["method"]) == ("Nurse Joy", "page")
    assert consent["recorded_by"] == tokens.verify(token).identity
    assert hub_messages == [(cid, {"type": "consent", "consent": consent})]
    fetched = await client.get(f"/api/consultations/{cid}", headers=bearer(token))
    assert (await fetched.json())["consent"] == consent


async def test_a_new_consent_replaces_the_one_shown(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    hub_messages: list[tuple[str, dict]],
) -> None:
    headers = bearer(make_token("clinic", consultation.id))
    path = f"/api/consultations/{consultation.id}/consent"
    await client.post(path, json={"confirmed_by": "Second", "method": "paper"}, headers=headers)
    fetched = await (
        await client.get(f"/api/consultations/{consultation.id}", headers=headers)
    ).json()
    assert fetched["consent"]["confirmed_by"] == "Second"


@pytest.mark.parametrize("role", ["surgeon", "observer"])
async def test_only_the_clinic_or_an_admin_records_consent(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    hub_messages: list[tuple[str, dict]],
    role: str,
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/consent",
        json={"confirmed_by": "X", "method": "page"},
        headers=bearer(make_token(role, consultation.id)),
    )
    assert await error_of(response, 403) == "forbidden"
    assert hub_messages == []


async def test_a_clinic_of_another_consultation_cannot_record_consent(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/consent",
        json={"confirmed_by": "X", "method": "page"},
        headers=bearer(make_token("clinic", OTHER_CID)),
    )
    assert await error_of(response, 403) == "forbidden"


async def test_consent_for_an_unknown_consultation_is_a_404(
    client: TestClient, admin: dict[str, str], hub_messages: list[tuple[str, dict]]
) -> None:
    response = await client.post(
        "/api/consultations/unknown1234/consent",
        json={"confirmed_by": "X", "method": "page"},
        headers=admin,
    )
    assert await error_of(response, 404) == "not-found"
    assert hub_messages == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"method": "page"},
        {"confirmed_by": "X"},
        {"confirmed_by": "", "method": "page"},
        {"confirmed_by": "   ", "method": "page"},
        {"confirmed_by": "x" * (MAX_TEXT_LENGTH + 1), "method": "page"},
        {"confirmed_by": 42, "method": "page"},
        {"confirmed_by": ["X"], "method": "page"},
        {"confirmed_by": "X", "method": "email"},
        {"confirmed_by": "X", "method": 1},
        {"confirmed_by": "X", "method": "page", "extra": 1},
    ],
)
async def test_invalid_consent_is_a_400(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    hub_messages: list[tuple[str, dict]],
    body: dict[str, Any],
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/consent",
        json=body,
        headers=bearer(make_token("clinic", consultation.id)),
    )
    assert await error_of(response, 400) == "bad-request"
    assert hub_messages == []


# --- GET /api/session -----------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
async def test_the_session_describes_the_token(
    client: TestClient, make_token: MakeToken, tokens: TokenIssuer, role: Role
) -> None:
    token = make_token(role, "abcdef123", name="Dr. Who")
    response = await client.get("/api/session", headers=bearer(token))
    assert response.status == 200
    grant = tokens.verify(token)
    assert await response.json() == {
        "identity": grant.identity,
        "name": "Dr. Who",
        "role": str(role),
        "consultation": "abcdef123",
        "may_publish": grant.may_publish,
        "may_annotate": grant.may_annotate,
        "may_replay": grant.may_replay,
        "expires_at": grant.expires_at,
        "ice_servers": [],
        "replay_idle_s": 900.0,
    }


async def test_the_session_lists_the_configured_ice_servers(
    aiohttp_client: Any, settings: Settings, make_token: MakeToken
) -> None:
    ice = (IceServer("stun:stun.example.org:3478"), IceServer("turn:t.example.org", "u", "p"))
    client = await aiohttp_client(create_app(replace(settings, ice_servers=ice)))
    response = await client.get("/api/session", headers=bearer(make_token("observer", "abcdef1")))
    assert (await response.json())["ice_servers"] == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:t.example.org"], "username": "u", "credential": "p"},
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"region": 5}, "region must be"),
        ({"region": ["seoul"]}, "region must be"),
        ({"cascade": "yes"}, "cascade must be true or false"),
        ({"cascade": 1}, "cascade must be true or false"),
    ],
)
async def test_a_consultations_placement_fields_are_checked(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], reason: str
) -> None:
    """``region`` and ``cascade`` (a cluster's placement) are refused with a reason when of the
    wrong type; alone, a node accepts them and has nothing to place (no ``node`` answered)."""
    response = await client.post("/api/consultations", json=body, headers=admin)
    assert await error_of(response, 400) == "bad-request"
    assert reason in (await response.json())["reason"]
    fine = await client.post(
        "/api/consultations", json={"region": "seoul", "cascade": True}, headers=admin
    )
    assert fine.status == 201 and "node" not in await fine.json()
