"""Relay-only media through a real coturn: an aiortc clinic and an aiortc surgeon that may use
TURN candidates only (``iceTransportPolicy`` relay) publish and view through the app, with the
credentials the app mints for them, over TURN/UDP and TURN/TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from client.whip import WhipError, publish_source
from relay import FeedName
from signaling.app import create_app
from signaling.auth.turn import TurnCredentials
from signaling.db.store import Consultation
from signaling.keys import RELAY, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.coturn import Coturn, coturn
from tests.peers import publisher, viewer, wait_until
from tests.signaling.test_whip import offer, post


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with coturn(tmp_path / "coturn") as server:
        yield server


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str]:
    """(local, remote) candidate types of the pair ICE nominated (aioice's connection)."""
    ice = pc.getTransceivers()[0].sender.transport.transport
    pair = ice._connection._nominated[1]
    return pair.local_candidate.type, pair.remote_candidate.type


@pytest.mark.parametrize(("transport", "relay_turn"), [("udp", True), ("tcp", False)])
async def test_relay_only_clinic_and_surgeon_exchange_video_through_coturn(
    turn: Coturn,  # first: coturn must outlive the app, whose peers free their allocations
    aiohttp_client: Any,
    settings: Settings,
    transport: str,
    relay_turn: bool,
    make_token: MakeToken,
) -> None:
    """With ``ENDOLINK_RELAY_TURN`` the relay allocates on coturn as well (behind NAT); without,
    coturn relays the clients to the relay's host candidates."""
    app = create_app(
        settings.with_overrides(
            turn_urls=turn.urls(transport), turn_secret=turn.secret, relay_turn=relay_turn
        )
    )
    client: TestClient = await aiohttp_client(app)
    consultation: Consultation = await app[STORE].create(
        title="TURN", video_codec="VP8", consent_by="Dr. A", recorded_by="admin-test"
    )
    cid = consultation.id
    clinic, surgeon = make_token("clinic", cid), make_token("surgeon", cid)
    started = time.monotonic()
    async with (
        publisher(str(client.make_url(f"/whip/{cid}")), clinic, relay_only=True) as (sending, _),
        viewer(str(client.make_url(f"/whep/{cid}")), surgeon, relay_only=True) as (
            receiving,
            _,
            received,
        ),
    ):
        assert await wait_until(lambda: len(received.counters) >= 30, timeout=20)
        assert received.first_video_at is not None
        first_frame_s = received.first_video_at - started
        steps = [b - a for a, b in zip(received.counters, received.counters[1:], strict=False)]
        assert all(step >= 1 for step in steps)
        assert selected_pair(sending)[0] == "relay"
        assert selected_pair(receiving)[0] == "relay"
    log = turn.log_text()
    assert log.count("ALLOCATE processed, success") >= 2
    # the opaque identities the app minted for; the relay's only when it is told to use TURN
    assert ":clinic-" in log and ":surgeon-" in log
    assert (":relay>" in log) == relay_turn
    print(f"TURN/{transport}: first frame {first_frame_s * 1000:.0f} ms after the first OPTIONS")


async def test_endolink_publish_relay_only_takes_turn_from_the_options_links(
    turn: Coturn, aiohttp_client: Any, settings: Settings, make_token: MakeToken
) -> None:
    """``endolink publish --relay-only``: the test pattern through coturn, ICE servers asked
    with OPTIONS before offering; without a TURN server offered it refuses to start."""
    app = create_app(settings.with_overrides(turn_urls=turn.urls("tcp"), turn_secret=turn.secret))
    client: TestClient = await aiohttp_client(app)
    consultation = await app[STORE].create(
        title="TURN", video_codec="VP8", consent_by="Dr. A", recorded_by="admin-test"
    )
    cid = consultation.id
    whip = str(client.make_url(f"/whip/{cid}"))
    publishing = asyncio.ensure_future(
        publish_source(whip, make_token("clinic", cid), "testpattern", relay_only=True)
    )
    try:
        async with viewer(str(client.make_url(f"/whep/{cid}")), make_token("surgeon", cid)) as (
            _,
            _,
            seen,
        ):
            assert await wait_until(lambda: len(seen.counters) > 15, timeout=15)
        router = app[RELAY].find(cid)
        assert router is not None and (clinic := router.feeds[FeedName.ENDOSCOPE].publisher)
        assert selected_pair(clinic.pc)[1] == "relay"  # the relay sees the clinic via coturn
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing

    plain: TestClient = await aiohttp_client(create_app(settings))
    with pytest.raises(WhipError, match="needs a TURN server"):
        await publish_source(
            str(plain.make_url(f"/whip/{cid}")),
            make_token("clinic", cid),
            "testpattern",
            relay_only=True,
        )


async def test_sessions_end_promptly_when_coturn_is_gone(
    turn: Coturn, aiohttp_client: Any, settings: Settings, make_token: MakeToken
) -> None:
    """The relay's own allocation cannot be freed any more (aioice retries for ~63 s): a DELETE
    and the app's shutdown must not wait for that."""
    app = create_app(settings.with_overrides(turn_urls=turn.urls("udp"), turn_secret=turn.secret))
    client: TestClient = await aiohttp_client(app)
    consultation = await app[STORE].create(title="TURN", video_codec="VP8")
    token = make_token("surgeon", consultation.id)
    sdp = await offer(direction="recvonly")
    response = await post(client, f"/whep/{consultation.id}", token, sdp)
    assert response.status == 201
    turn.kill()
    started = time.monotonic()
    deleted = await client.delete(response.headers["Location"], headers=bearer(token))
    assert deleted.status == 200
    assert time.monotonic() - started < 3.0


async def gathered_relay_candidates(turn: Coturn, credentials: TurnCredentials) -> list[str]:
    """Relay-only gathering with ``credentials``: the candidates aioice got from coturn."""
    (server,) = credentials.mint("clinic-0badc0de")
    pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(server.url, server.username, server.credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
    )
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
    finally:
        await pc.close()


async def test_coturn_refuses_expired_credentials_and_accepts_fresh_ones(turn: Coturn) -> None:
    (url,) = turn.urls("udp")
    expired = TurnCredentials((url,), turn.secret, 60, clock=lambda: time.time() - 120)
    assert await gathered_relay_candidates(turn, expired) == []
    assert "401" in turn.log_text()

    fresh = TurnCredentials((url,), turn.secret, 60)
    (candidate,) = await gathered_relay_candidates(turn, fresh)
    assert " typ relay " in candidate

    wrong_secret = TurnCredentials((url,), "not-" + turn.secret, 60)
    assert await gathered_relay_candidates(turn, wrong_secret) == []
