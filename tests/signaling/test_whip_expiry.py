"""Media ends with its token: a WHEP viewer or a WHIP publisher whose token expires is closed at
that moment (the relay gets ``Grant.expires_at`` as a number), with real peer connections."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from relay import FeedName, FeedState, OfflineReason
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url

TTL_S = 3


async def test_a_viewer_stops_receiving_when_its_token_expires(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        short = make_token("surgeon", cid, ttl_s=TTL_S)
        expires_at = time.time() + TTL_S  # the token's exp is whole seconds: at most this
        async with viewer(url(client, f"/whep/{cid}"), short) as (pc, whip, seen):
            assert whip.location is not None
            sid = whip.location.rsplit("/", 1)[1]
            router = client.app[RELAY].find(cid)
            assert router is not None
            assert await wait_until(lambda: len(seen.counters) >= 5, timeout=TTL_S)
            assert await wait_until(lambda: router.peer(sid) is None, timeout=TTL_S + 2)
            assert time.time() <= expires_at + 1.0
            assert await wait_until(lambda: pc.connectionState == "closed", timeout=5)
            stopped_at = len(seen.counters)
            await wait_until(lambda: False, timeout=1.0)
            assert len(seen.counters) <= stopped_at + 1  # at most one frame still in flight
            assert router.feeds[FeedName.ENDOSCOPE].state is FeedState.LIVE  # others go on


async def test_a_publisher_whose_token_expires_ends_its_feed(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid, ttl_s=TTL_S)),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen),
    ):
        router = client.app[RELAY].find(cid)
        assert router is not None
        feed = router.feeds[FeedName.ENDOSCOPE]
        assert await wait_until(lambda: len(seen.counters) >= 5, timeout=TTL_S)
        assert await wait_until(lambda: feed.publisher is None, timeout=TTL_S + 2)
        assert (feed.state, feed.reason) == (FeedState.OFFLINE, OfflineReason.ENDED)
