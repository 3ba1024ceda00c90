"""RFC 9725 (WHIP) to the letter, one test per MUST and SHOULD that binds a server, named after
its section; ``[whep]`` runs the same check where draft-ietf-wish-whep says the same of a WHEP
endpoint. The ICE sections (4.3.x) are in test_rfc9725_ice.py, 4.5–5 in test_rfc9725_policy.py.
docs/rfc9725.md lists every requirement with its test (tests/test_docs.py holds the two together).

Real app on 127.0.0.1, real aiortc offers; after every test nothing was logged at ERROR or
with a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from relay.codecs import preferences
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken, bearer, error_of
from tests.peers import new_pc
from tests.signaling.test_errors import assert_quiet
from tests.signaling.test_whip import offer, post

KINDS = ("whip", "whep")


@dataclass
class Side:
    """Who posts to a WHIP or a WHEP endpoint, and how their offer is directed."""

    kind: str
    role: str
    direction: str
    answer_direction: str


SIDES = {
    "whip": Side("whip", "clinic", "sendonly", "recvonly"),
    "whep": Side("whep", "surgeon", "recvonly", "sendonly"),
}


@pytest.fixture(autouse=True)
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every conformance test: no ERROR line and no traceback, through the app's shutdown."""
    yield
    assert_quiet(caplog)


@dataclass
class Session:
    token: str
    response: ClientResponse
    answer: str

    @property
    def location(self) -> str:
        return self.response.headers["Location"]


async def open_session(
    client: TestClient, kind: str, cid: str, make_token: MakeToken, sdp: str | None = None
) -> Session:
    """POST an aiortc offer (video + audio) to the endpoint and insist on its 201."""
    side = SIDES[kind]
    token = make_token(side.role, cid)
    body = sdp or await offer(direction=side.direction)
    response = await post(client, f"/{kind}/{cid}", token, body)
    assert response.status == 201, await response.text()
    return Session(token, response, await response.text())


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sections(sdp: str) -> list[str]:
    return re.split(r"^(?=m=)", sdp, flags=re.M)[1:]


# -- 4.1 HTTP usage --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ("GET", "HEAD"))
async def test_4_1_get_on_endpoint_answers_2xx_without_content(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str, method: str
) -> None:
    cid = consultation.id
    headers = bearer(make_token(SIDES[kind].role, cid))
    response = await client.request(method, f"/{kind}/{cid}", headers=headers)
    assert 200 <= response.status < 300 and await response.read() == b""
    assert response.headers["Accept-Post"] == "application/sdp"


@pytest.mark.parametrize("method", ("GET", "HEAD"))
async def test_4_1_get_on_session_answers_2xx_without_content(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str, method: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    response = await client.request(method, session.location, headers=bearer(session.token))
    assert response.status == 204 and await response.read() == b""
    assert "ETag" not in response.headers


async def test_4_1_get_on_a_session_that_ended_is_404(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    auth = bearer(session.token)
    assert (await client.delete(session.location, headers=auth)).status == 200
    await error_of(await client.get(session.location, headers=auth), 404)


async def test_4_1_unknown_method_is_405_with_allow(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    for path, allowed in ((f"/{kind}/{consultation.id}", "POST"), (session.location, "PATCH")):
        response = await client.put(path, headers=bearer(session.token))
        assert await error_of(response, 405) == "method-not-allowed"
        assert allowed in response.headers["Allow"] and "GET" in response.headers["Allow"]


async def test_4_1_whep_head_on_endpoint_says_it_takes_sdp(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """draft-ietf-wish-whep, discoverability: HEAD SHOULD answer 200 with Content-Type
    application/sdp, the same headers as GET, and no body."""
    cid = consultation.id
    headers = bearer(make_token("surgeon", cid))
    head = await client.head(f"/whep/{cid}", headers=headers)
    get = await client.get(f"/whep/{cid}", headers=headers)
    assert head.status == get.status == 200
    assert head.headers["Content-Type"] == get.headers["Content-Type"] == "application/sdp"
    assert await head.read() == b"" == await get.read()


# -- 4.2 Ingest session setup ----------------------------------------------------------------


async def test_4_2_post_answers_201_with_sdp_answer_and_location(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    assert session.response.content_type == "application/sdp"
    assert session.answer.startswith("v=0\r\n") and "a=fingerprint:" in session.answer
    assert session.location.startswith(f"/{kind}/{consultation.id}/sessions/")


async def test_4_2_post_with_another_content_type_is_4xx(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    side = SIDES[kind]
    cid = consultation.id
    for content_type in ("text/plain", "application/json", "application/sdp-offer"):
        headers = {**bearer(make_token(side.role, cid)), "Content-Type": content_type}
        body = await offer(direction=side.direction)
        response = await client.post(f"/{kind}/{cid}", data=body, headers=headers)
        assert await error_of(response, 415) == "unsupported-media-type"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sdp: "not sdp",
        lambda sdp: sdp.replace("v=0", "v=1", 1),
        lambda sdp: sdp.split("m=")[0],
        lambda sdp: re.sub(r"a=fingerprint:.*\r\n", "", sdp),
        lambda sdp: re.sub(r"a=mid:.*\r\n", "", sdp),
        lambda sdp: sdp.replace("UDP/TLS/RTP/SAVPF 96", "UDP/TLS/RTP/SAVPF x"),
    ],
    ids=["text", "version", "no-media", "no-fingerprint", "no-mid", "bad-format"],
)
async def test_4_2_malformed_sdp_is_4xx(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str, mangle
) -> None:  # type: ignore[no-untyped-def]
    side = SIDES[kind]
    cid = consultation.id
    body = mangle(await offer(direction=side.direction))
    response = await post(client, f"/{kind}/{cid}", make_token(side.role, cid), body)
    assert 400 <= response.status < 500, await response.text()
    await error_of(response, response.status)


@pytest.mark.parametrize("direction", ["sendonly", "sendrecv"])
async def test_4_2_answer_is_recvonly(
    client: TestClient, consultation: Consultation, make_token: MakeToken, direction: str
) -> None:
    sdp = await offer(direction=direction)
    session = await open_session(client, "whip", consultation.id, make_token, sdp)
    assert all("a=recvonly\r\n" in media for media in sections(session.answer))


async def test_4_2_whep_answer_is_sendonly(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    session = await open_session(client, "whep", consultation.id, make_token)
    assert all("a=sendonly\r\n" in media for media in sections(session.answer))


@pytest.mark.parametrize("direction", ["inactive", "recvonly"])
async def test_4_2_whip_offer_that_does_not_send_is_refused(
    client: TestClient, consultation: Consultation, make_token: MakeToken, direction: str
) -> None:
    cid = consultation.id
    body = await offer(direction=direction)
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), body)
    assert "cannot publish" in (await response.json())["reason"]
    await error_of(response, 400)


async def test_4_2_delete_answers_200_and_frees_the_session(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    sid = session.location.rpartition("/")[2]
    router = client.app[RELAY].find(consultation.id)
    assert router is not None and router.peer(sid) is not None
    response = await client.delete(session.location, headers=bearer(session.token))
    assert response.status == 200
    assert router.peer(sid) is None


@pytest.mark.parametrize("sid", [False, True], ids=["endpoint", "session"])
async def test_4_2_options_answers_200_with_accept_post(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str, sid: bool
) -> None:
    path = f"/{kind}/{consultation.id}"
    if sid:
        path = (await open_session(client, kind, consultation.id, make_token)).location
    response = await client.options(
        path,
        headers={"Origin": "https://tower.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status == 200
    assert response.headers["Accept-Post"] == "application/sdp"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


# -- 4.4 WebRTC constraints ------------------------------------------------------------------


async def test_4_4_1_answer_is_max_bundle_with_rtcp_mux(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    mids = re.findall(r"^a=mid:(\S+)", session.answer, re.M)
    bundle = re.search(r"^a=group:BUNDLE (.+?)\r$", session.answer, re.M)
    assert bundle is not None and bundle.group(1).split() == mids and len(mids) == 2
    assert all("a=rtcp-mux\r\n" in media for media in sections(session.answer))


async def test_4_4_1_offer_without_rtcp_mux_is_refused(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    side, cid = SIDES[kind], consultation.id
    body = re.sub(r"a=rtcp-mux\r\n", "", await offer(direction=side.direction))
    response = await post(client, f"/{kind}/{cid}", make_token(side.role, cid), body)
    assert "rtcp-mux" in (await response.json())["reason"]
    await error_of(response, 400)


@pytest.mark.parametrize("kinds", [("video", "video"), ("audio", "video", "audio")])
async def test_4_4_2_more_than_one_track_of_a_kind_is_422_with_the_reason(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    kind: str,
    kinds: tuple[str, ...],
) -> None:
    side, cid = SIDES[kind], consultation.id
    body = await offer(kinds, direction=side.direction)
    response = await post(client, f"/{kind}/{cid}", make_token(side.role, cid), body)
    assert await error_of(response, 422) == "too-many-tracks"
    assert f"at most one {kinds[-1]} track" in (await response.json())["reason"]


async def test_4_4_3_an_offer_with_an_unusable_section_is_refused_whole_with_422(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """Video in the consultation's codec, audio without Opus: not a partial answer."""
    cid = consultation.id
    pc = new_pc()
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly").setCodecPreferences(
        preferences("audio", "PCMU")
    )
    await pc.setLocalDescription(await pc.createOffer())
    body = pc.localDescription.sdp
    await pc.close()
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), body)
    assert "OPUS" in (await response.json())["reason"]
    await error_of(response, 422)
    assert client.app[RELAY].find(cid) is None or not client.app[RELAY].find(cid).peers  # type: ignore[union-attr]


async def test_4_4_4_an_offer_with_setup_active_is_answered_passive(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    """A client that is only a DTLS client is supported, so nothing is refused (the SHOULD
    reject applies to servers that cannot)."""
    body = (await offer(direction=SIDES[kind].direction)).replace("setup:actpass", "setup:active")
    session = await open_session(client, kind, consultation.id, make_token, body)
    assert "a=setup:passive" in session.answer and "a=setup:active" not in session.answer


async def test_4_4_5_server_is_full_ice(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> None:
    session = await open_session(client, kind, consultation.id, make_token)
    assert "a=ice-lite" not in session.answer
