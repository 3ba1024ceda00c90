"""RFC 9725 §4.5–§5 (redirects, ICE servers, authentication, simulcast, extensions, security
considerations), one test per MUST and SHOULD that binds a server, named after its section;
``[whep]`` where draft-ietf-wish-whep says the same. Real app on 127.0.0.1, real aiortc offers;
nothing logged at ERROR or with a traceback (test_rfc9725.py's ``quiet_log``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from signaling.auth.grants import Grant, Role
from signaling.db.store import Consultation
from signaling.keys import STORE, TOKENS
from signaling.settings import IceServer, Settings
from tests.conftest import MakeToken, bearer, error_of
from tests.signaling.test_rfc9725 import SIDES, kind, open_session, quiet_log, sections
from tests.signaling.test_whip import offer, post

__all__ = ["kind", "quiet_log"]  # the fixtures, shared with test_rfc9725.py


# -- 4.5 – 4.9 ------------------------------------------------------------------------------


async def test_4_5_no_whip_url_redirects_with_301_or_302(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    side, cid = SIDES[kind], consultation.id
    token = make_token(side.role, cid)
    for path in (f"/{kind}/{cid}/", f"/{kind}//{cid}", f"/{kind.upper()}/{cid}"):
        body = await offer(direction=side.direction)
        headers = {"Content-Type": "application/sdp", **bearer(token)}
        response = await client.post(path, data=body, headers=headers, allow_redirects=False)
        assert response.status not in (301, 302), path


@pytest.fixture
async def turn_client(aiohttp_client, settings: Settings) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    turn = IceServer("turn:turn.example.org:3478", "user", "pass")
    yield await aiohttp_client(create_app(settings.with_overrides(ice_servers=(turn,))))


async def turn_setup(turn_client: TestClient, kind: str) -> tuple[str, str]:
    consultation = await turn_client.app[STORE].create("t", "VP8", consent_by="A", recorded_by="x")
    role = Role(SIDES[kind].role)
    token = turn_client.app[TOKENS].issue(Grant.for_role(role, consultation.id, "c", 60))
    return consultation.id, token


LINK = (
    '<turn:turn.example.org:3478>; rel="ice-server"; username="user"; credential="pass"; '
    'credential-type="password"'
)


async def test_4_6_ice_servers_are_link_headers_on_the_201(
    turn_client: TestClient, kind: str
) -> None:
    cid, token = await turn_setup(turn_client, kind)
    body = await offer(direction=SIDES[kind].direction)
    response = await post(turn_client, f"/{kind}/{cid}", token, body)
    assert response.status == 201
    assert response.headers.getall("Link") == [LINK]


async def test_4_6_ice_servers_on_options_with_a_token(turn_client: TestClient, kind: str) -> None:
    cid, token = await turn_setup(turn_client, kind)
    response = await turn_client.options(f"/{kind}/{cid}", headers=bearer(token))
    assert response.status == 200 and response.headers.getall("Link") == [LINK]


async def test_4_6_cors_preflight_gets_no_ice_servers(turn_client: TestClient, kind: str) -> None:
    cid, _ = await turn_setup(turn_client, kind)
    preflight = {
        "Origin": "https://tower.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    response = await turn_client.options(f"/{kind}/{cid}", headers=preflight)
    assert response.status == 200 and "Link" not in response.headers


async def test_4_7_requests_without_a_bearer_token_are_401_with_www_authenticate(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    body = await offer(direction=SIDES[kind].direction)
    frag = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
    for method, path, headers, data in (
        ("POST", f"/{kind}/{consultation.id}", {"Content-Type": "application/sdp"}, body),
        ("GET", f"/{kind}/{consultation.id}", {}, ""),
        ("GET", session.location, {}, ""),
        ("PATCH", session.location, frag, "a=end-of-candidates\r\n"),
        ("DELETE", session.location, {}, ""),
    ):
        for auth in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await client.request(method, path, headers={**headers, **auth}, data=data)
            await error_of(response, 401)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer"), (method, path)
            # RFC 6750 §3.1: no credentials → no error code; a wrong token → invalid_token.
            assert ('error="invalid_token"' in challenge) == bool(auth), (method, path, challenge)
    assert (await client.get(session.location, headers=bearer(session.token))).status == 204


async def test_4_7_another_members_token_cannot_touch_a_session(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    other = bearer(make_token(SIDES[kind].role, consultation.id))
    for method in ("GET", "DELETE"):
        await error_of(await client.request(method, session.location, headers=other), 403)


async def test_4_8_a_simulcast_offer_is_answered_without_simulcast(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """Simulcast is a MAY; a server that takes a simulcast offer without it declines it by
    leaving ``a=simulcast`` out of the answer (RFC 8853 §5.3.2)."""
    sdp = await offer()
    video = sections(sdp)[0]
    rids = "a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n"
    body = sdp.replace(video, video + rids)
    session = await open_session(client, "whip", consultation.id, make_token, body)
    assert "a=simulcast" not in session.answer and "a=rid:" not in session.answer


async def test_4_9_no_extension_is_advertised_or_required(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    links = session.response.headers.getall("Link", [])
    assert not [link for link in links if "urn:ietf:params:whip:ext" in link]


# -- 5 Security considerations ---------------------------------------------------------------


async def test_5_session_urls_are_unguessable(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    """At least 96 random bits per session id (RFC 4086), one new id per session."""
    ids = set()
    for _ in range(3):
        session = await open_session(client, kind, consultation.id, make_token)
        sid = session.location.rpartition("/")[2]
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", sid)
        ids.add(sid)
        assert (await client.delete(session.location, headers=bearer(session.token))).status == 200
    assert len(ids) == 3


async def test_5_posts_are_rate_limited_per_identity(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    limited = settings.with_overrides(session_limit_per_identity=(3, 60.0))
    client = await aiohttp_client(create_app(limited))
    consultation = await client.app[STORE].create("t", "VP8", consent_by="A", recorded_by="x")
    token = client.app[TOKENS].issue(Grant.for_role(Role.SURGEON, consultation.id, "s", 60))
    statuses = []
    for _ in range(4):
        body = await offer(direction="recvonly")
        response = await post(client, f"/whep/{consultation.id}", token, body)
        statuses.append(response.status)
    assert statuses == [201, 201, 201, 429]
    assert int(response.headers["Retry-After"]) > 0
