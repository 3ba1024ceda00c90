"""Consent freshness (RFC 7675) counts late answers: a far end whose STUN answers come 1 s late
(its event loop lagging on a busy clinic PC) stays connected, while one that sends media but no
longer answers at all is closed once consent expires, and one that goes silent is closed by
Liveness. Real peer connections through a user-space UDP proxy (``bench.udpproxy``) that holds
back or drops only the client's STUN answers; the consent cadence is shortened, aioice's and
ours alike (0.5 s checks; 3 s expiry, like aioice's 6 misses, instead of 30 s) so the test takes
seconds, not minutes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import aioice.ice
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from bench.udpproxy import ImpairmentProxy
from relay import FeedName, PeerRole, Router, forwarding
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import new_pc, publisher, wait_until, whip_client
from tests.relay.test_liveness import DETECTION_S, SilentAudio, closed_within, peers_of

EXPIRY_S = 3.0
LATE_S = 1.0


@pytest.fixture(autouse=True)
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)  # aioice's own, for comparison
    monkeypatch.setattr(forwarding, "CONSENT_INTERVAL_S", 0.5)
    monkeypatch.setattr(forwarding, "CONSENT_EXPIRY_S", EXPIRY_S)


@contextlib.asynccontextmanager
async def proxied_talkback(url: str, token: str) -> AsyncIterator[ImpairmentProxy]:
    """A talk-back publisher that never sends a packet of media, through the proxy."""
    proxy = ImpairmentProxy()
    await proxy.start()
    pc: RTCPeerConnection = new_pc()
    pc.addTransceiver(SilentAudio(), direction="sendonly")
    client = whip_client(url, token, proxy)
    try:
        await client.connect(pc)
        assert await wait_until(lambda: pc.connectionState == "connected", 10)
        yield proxy
    finally:
        await client.close()
        await pc.close()
        proxy.close()


def router_of(client: TestClient, cid: str) -> Router:
    router = client.app[RELAY].find(cid)
    assert router is not None
    return router


async def test_late_answers_are_consent_and_silence_still_closes(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    url = str(client.make_url(f"/whip/{cid}"))
    async with proxied_talkback(url, make_token("surgeon", cid)) as proxy:
        router = router_of(client, cid)
        assert await wait_until(lambda: peers_of(router, PeerRole.PUBLISHER, FeedName.TALKBACK), 5)
        proxy.late_answers_s = LATE_S
        # aioice's check at the same cadence: every check misses (its wait is 0.5 s) → closed
        # after 6 misses in a row (~3 s); here each check waits long enough for the late answer
        stay_s = 3 * EXPIRY_S
        started = time.monotonic()
        assert not await wait_until(
            lambda: not peers_of(router, PeerRole.PUBLISHER, FeedName.TALKBACK), stay_s
        ), f"closed after {time.monotonic() - started:.1f} s although it answered, late"
        assert proxy.up.forwarded > 0

        proxy.late_answers_s = math.inf  # no answer at all, and no media: a vanished far end
        closed_s = await closed_within(
            lambda: not peers_of(router, PeerRole.PUBLISHER, FeedName.TALKBACK), DETECTION_S
        )
        print(f"kept {stay_s:g} s with answers {LATE_S:g} s late; closed {closed_s:.2f} s after")


async def test_media_without_consent_is_closed_when_consent_expires(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    """RFC 7675's purpose: stop sending to a far end that no longer answers, even though its
    media (which Liveness hears) keeps arriving."""
    cid = consultation.id
    proxy = ImpairmentProxy()
    await proxy.start()
    try:
        url = str(client.make_url(f"/whip/{cid}"))
        async with publisher(url, make_token("clinic", cid), proxy=proxy) as (pc, _):
            router = router_of(client, cid)
            endoscope = router.feeds[FeedName.ENDOSCOPE]
            assert await wait_until(lambda: endoscope.publisher is not None, 10)
            proxy.late_answers_s = math.inf
            sent_before = proxy.up.forwarded
            # expiry + one check interval (≤ 0.6 s) + the last check's wait (3.5 s) + slack
            limit = EXPIRY_S + 0.6 + 3.5 + 1.0
            closed_s = await closed_within(lambda: endoscope.publisher is None, limit)
            assert closed_s > EXPIRY_S - 0.5, "closed before consent could have expired"
            assert proxy.up.forwarded - sent_before > 50, "the publisher's media kept flowing"
            print(f"media without consent closed after {closed_s:.2f} s")
            await asyncio.sleep(0)
    finally:
        proxy.close()
