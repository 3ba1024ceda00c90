"""WHIP/WHEP resources: the RFC 9725 exchange and every error a client can provoke."""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import TestClient

from relay.codecs import preferences
from signaling.app import create_app
from signaling.auth.grants import Grant, Role
from signaling.db.store import Consultation
from signaling.keys import RELAY, STORE, TOKENS
from signaling.settings import IceServer, Settings
from tests.conftest import MakeToken, bearer
from tests.peers import new_pc

SDP = {"Content-Type": "application/sdp"}


async def offer(kinds: tuple[str, ...] = ("video", "audio"), direction: str = "sendonly") -> str:
    pc = new_pc()
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post(client: TestClient, path: str, token: str | None, body: str, **headers: str):  # type: ignore[no-untyped-def]
    auth = bearer(token) if token else {}
    return await client.post(path, data=body, headers={**SDP, **auth, **headers})


@pytest.fixture
async def publish_offer() -> str:
    return await offer()


@pytest.fixture
async def play_offer() -> str:
    return await offer(direction="recvonly")


# -- the happy path ------------------------------------------------------------------------


async def test_publish_answers_201_with_sdp_location_and_etag(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), publish_offer)
    assert response.status == 201
    assert response.content_type == "application/sdp"
    assert response.headers["Location"].startswith(f"/whip/{cid}/sessions/")
    assert response.headers["ETag"].startswith('"')
    answer = await response.text()
    assert answer.startswith("v=0") and "a=recvonly" in answer
    assert "a=candidate:" in answer and "127.0.0.1" in answer
    assert "VP8/90000" in answer and "H264" not in answer
    assert "x-google-start-bitrate=1500" in answer  # 720p sharp from the first seconds
    assert "x-google-min-bitrate=150" in answer  # low enough to follow a narrow uplink down


async def test_play_answers_201_before_the_publisher_is_live(
    client: TestClient, consultation: Consultation, make_token: MakeToken, play_offer: str
) -> None:
    cid = consultation.id
    response = await post(client, f"/whep/{cid}", make_token("surgeon", cid), play_offer)
    assert response.status == 201
    assert response.headers["Location"].startswith(f"/whep/{cid}/sessions/")
    assert "a=sendonly" in await response.text()


async def test_delete_ends_the_session_and_a_second_delete_is_404(
    client: TestClient, consultation: Consultation, make_token: MakeToken, play_offer: str
) -> None:
    cid = consultation.id
    token = make_token("surgeon", cid)
    location = (await post(client, f"/whep/{cid}", token, play_offer)).headers["Location"]
    assert (await client.delete(location, headers=bearer(token))).status == 200
    assert client.app[RELAY].find(cid).viewer_count() == 0  # type: ignore[union-attr]
    assert (await client.delete(location, headers=bearer(token))).status == 404


async def test_options_preflight_advertises_sdp_and_cors(
    client: TestClient, consultation: Consultation
) -> None:
    response = await client.options(f"/whip/{consultation.id}")
    assert response.status == 200
    assert response.headers["Accept-Post"] == "application/sdp"
    assert "Location" in response.headers["Access-Control-Expose-Headers"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_configured_ice_servers_are_sent_as_link_headers(
    aiohttp_client, settings: Settings, publish_offer: str
) -> None:
    turn = IceServer("turn:turn.example.org:3478", "user", "pass")
    client = await aiohttp_client(create_app(settings.with_overrides(ice_servers=(turn,))))
    consultation = await client.app[STORE].create("t", "VP8", consent_by="Dr. A", recorded_by="x")
    token = client.app[TOKENS].issue(Grant.for_role(Role.CLINIC, consultation.id, "c", 60))
    response = await post(client, f"/whip/{consultation.id}", token, publish_offer)
    links = response.headers.getall("Link")
    assert links == [
        '<turn:turn.example.org:3478>; rel="ice-server"; username="user"; credential="pass"; '
        'credential-type="password"'
    ]


# -- errors --------------------------------------------------------------------------------


async def test_wrong_content_type_is_415(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    response = await client.post(
        f"/whip/{cid}",
        data=publish_offer,
        headers={**bearer(make_token("clinic", cid)), "Content-Type": "text/plain"},
    )
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported-media-type"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("hello", "not an SDP offer"),
        ("v=0\r\n", "no media sections"),
        (
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x UDP 1\r\n",
            "could not be parsed",
        ),
    ],
)
async def test_malformed_sdp_is_400_with_a_reason(
    client: TestClient, consultation: Consultation, make_token: MakeToken, body: str, fragment: str
) -> None:
    cid = consultation.id
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), body)
    assert response.status == 400
    assert fragment in (await response.json())["reason"]


async def test_sdp_without_ice_credentials_is_400(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    stripped = "\r\n".join(
        line for line in publish_offer.split("\r\n") if not line.startswith("a=ice-pwd")
    )
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), stripped)
    assert response.status == 400
    assert "ICE credentials" in (await response.json())["reason"]


async def test_recvonly_offer_cannot_publish(
    client: TestClient, consultation: Consultation, make_token: MakeToken, play_offer: str
) -> None:
    cid = consultation.id
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), play_offer)
    assert response.status == 400


async def test_missing_token_is_401_with_www_authenticate(
    client: TestClient, consultation: Consultation, publish_offer: str
) -> None:
    response = await post(client, f"/whip/{consultation.id}", None, publish_offer)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_expired_token_is_401(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    token = make_token("clinic", cid, ttl_s=-60)
    response = await post(client, f"/whip/{cid}", token, publish_offer)
    assert response.status == 401
    assert "expired" in (await response.json())["reason"]


async def test_token_of_another_consultation_is_403(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    response = await post(
        client, f"/whip/{consultation.id}", make_token("clinic", "otherroom1"), publish_offer
    )
    assert response.status == 403


async def test_observer_may_not_publish(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    response = await post(client, f"/whip/{cid}", make_token("observer", cid), publish_offer)
    assert response.status == 403


async def test_clinic_cannot_go_live_before_consent_is_recorded(
    client: TestClient,
    consultation_without_consent: Consultation,
    make_token: MakeToken,
    publish_offer: str,
) -> None:
    cid = consultation_without_consent.id
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), publish_offer)
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "consent-required" and "consent" in body["reason"]


async def test_unknown_consultation_is_404(
    client: TestClient, make_token: MakeToken, publish_offer: str
) -> None:
    response = await post(
        client, "/whip/nosuchroom", make_token("clinic", "nosuchroom"), publish_offer
    )
    assert response.status == 404


async def test_put_on_the_endpoint_is_405_with_allow(
    client: TestClient, consultation: Consultation
) -> None:
    response = await client.put(f"/whip/{consultation.id}")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]


async def test_endoscope_without_video_is_422(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    response = await post(
        client, f"/whip/{cid}", make_token("clinic", cid), await offer(("audio",))
    )
    assert response.status == 422
    assert "video" in (await response.json())["reason"]


async def test_viewer_without_the_consultation_codec_is_422(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    pc = new_pc()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    transceiver.setCodecPreferences(preferences("video", "H264"))
    await pc.setLocalDescription(await pc.createOffer())
    response = await post(
        client, f"/whep/{cid}", make_token("surgeon", cid), pc.localDescription.sdp
    )
    await pc.close()
    assert response.status == 422
    assert "VP8" in (await response.json())["reason"]


async def test_second_publisher_with_another_identity_is_409(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    first = await post(client, f"/whip/{cid}", make_token("clinic", cid), publish_offer)
    assert first.status == 201
    second = await post(client, f"/whip/{cid}", make_token("clinic", cid), await offer())
    assert second.status == 409
    assert (await second.json())["error"] == "feed-busy"


async def test_same_identity_publishing_again_replaces_its_old_session(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    cid = consultation.id
    token = make_token("clinic", cid)
    first = await post(client, f"/whip/{cid}", token, publish_offer)
    second = await post(client, f"/whip/{cid}", token, await offer())
    assert (first.status, second.status) == (201, 201)
    router = client.app[RELAY].find(cid)
    assert router is not None
    assert [p.id for p in router.peers.values()] == [second.headers["Location"].rsplit("/", 1)[1]]


async def test_observers_beyond_the_limit_get_503_with_retry_after_but_the_surgeon_gets_in(
    aiohttp_client, settings: Settings, play_offer: str
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(max_viewers=1)))
    consultation = await client.app[STORE].create("t", "VP8")
    token = client.app[TOKENS].issue(Grant.for_role(Role.OBSERVER, consultation.id, "o", 60))
    assert (await post(client, f"/whep/{consultation.id}", token, play_offer)).status == 201
    response = await post(
        client, f"/whep/{consultation.id}", token, await offer(direction="recvonly")
    )
    assert response.status == 503
    assert response.headers["Retry-After"]
    surgeon = client.app[TOKENS].issue(Grant.for_role(Role.SURGEON, consultation.id, "s", 60))
    response = await post(
        client, f"/whep/{consultation.id}", surgeon, await offer(direction="recvonly")
    )
    assert response.status == 201


async def test_unknown_feed_is_400(
    client: TestClient, consultation: Consultation, make_token: MakeToken, play_offer: str
) -> None:
    cid = consultation.id
    response = await post(
        client, f"/whep/{cid}?feed=ceiling-cam", make_token("surgeon", cid), play_offer
    )
    assert response.status == 400


async def test_oversized_offer_is_413(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    body = "v=0\r\n" + "a=x\r\n" * 20000
    response = await post(client, f"/whip/{cid}", make_token("clinic", cid), body)
    assert response.status == 413


# -- PATCH (trickle ICE) -------------------------------------------------------------------


@pytest.fixture
async def session(
    client: TestClient, consultation: Consultation, make_token: MakeToken, play_offer: str
) -> tuple[str, str, str]:
    """(location, etag, token) of a live WHEP session."""
    token = make_token("surgeon", consultation.id)
    response = await post(client, f"/whep/{consultation.id}", token, play_offer)
    return response.headers["Location"], response.headers["ETag"], token


FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
CANDIDATE = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"


async def test_trickled_candidates_are_accepted_with_204(
    client: TestClient, session: tuple[str, str, str]
) -> None:
    location, etag, token = session
    response = await client.patch(
        location, data=CANDIDATE, headers={**FRAG, **bearer(token), "If-Match": etag}
    )
    assert response.status == 204


async def test_patch_without_if_match_is_428_and_with_a_stale_etag_412(
    client: TestClient, session: tuple[str, str, str]
) -> None:
    location, _, token = session
    missing = await client.patch(location, data=CANDIDATE, headers={**FRAG, **bearer(token)})
    stale = await client.patch(
        location, data=CANDIDATE, headers={**FRAG, **bearer(token), "If-Match": '"nope"'}
    )
    assert (missing.status, stale.status) == (428, 412)


async def test_patch_with_the_wrong_content_type_is_415(
    client: TestClient, session: tuple[str, str, str]
) -> None:
    location, etag, token = session
    response = await client.patch(
        location, data=CANDIDATE, headers={**SDP, **bearer(token), "If-Match": etag}
    )
    assert response.status == 415


async def test_ice_restart_is_refused_with_422(
    client: TestClient, session: tuple[str, str, str]
) -> None:
    location, _, token = session
    restart = "a=ice-ufrag:newfrag\r\na=ice-pwd:newpasswordnewpassword12\r\n" + CANDIDATE
    response = await client.patch(
        location, data=restart, headers={**FRAG, **bearer(token), "If-Match": "*"}
    )
    assert response.status == 422


async def test_someone_elses_session_cannot_be_deleted(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    session: tuple[str, str, str],
) -> None:
    location, _, _ = session
    response = await client.delete(
        location, headers=bearer(make_token("observer", consultation.id))
    )
    assert response.status == 403


async def test_a_bad_request_leaves_the_server_and_other_consultations_running(
    client: TestClient, consultation: Consultation, make_token: MakeToken, publish_offer: str
) -> None:
    other = await client.app[STORE].create("other", "VP8", consent_by="Dr. B", recorded_by="x")
    for body in ("garbage", "v=0\r\n", "\x00" * 100):
        await post(client, f"/whip/{consultation.id}", make_token("clinic", consultation.id), body)
    start = time.monotonic()
    response = await post(
        client, f"/whip/{other.id}", make_token("clinic", other.id), publish_offer
    )
    assert response.status == 201 and time.monotonic() - start < 10
