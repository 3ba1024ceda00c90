"""One publisher per feed, even when two real aiortc clinics post their WHIP offers at the same
moment: the busy check and the install of the new publisher are one step (``Router.publish``
holds the feed's lock across the negotiation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from client.testpattern import TestPatternTrack
from client.whip import WhipClient, WhipError
from relay import FeedName, PeerRole
from signaling.keys import RELAY, STORE
from tests.conftest import MakeToken
from tests.peers import ToneTrack, new_pc, viewer, wait_until
from tests.relay.test_forwarding_flow import url

TRIALS = 5


@contextlib.asynccontextmanager
async def clinics(
    endpoint: str, tokens: list[str]
) -> AsyncIterator[list[tuple[RTCPeerConnection, WhipClient, BaseException | None]]]:
    """Real publishers (stamped video + tone) posting their offers concurrently; each with the
    error its POST got, if any."""
    peers = []
    for token in tokens:
        pc = new_pc()
        pc.addTransceiver(TestPatternTrack(), direction="sendonly")
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        peers.append((pc, WhipClient(endpoint, token)))
    results = await asyncio.gather(
        *(whip.connect(pc) for pc, whip in peers), return_exceptions=True
    )
    try:
        yield [
            (pc, whip, result if isinstance(result, BaseException) else None)
            for (pc, whip), result in zip(peers, results, strict=True)
        ]
    finally:
        for pc, whip in peers:
            await whip.close()
            await pc.close()


def publishers(client: TestClient, cid: str) -> list[str]:
    router = client.app[RELAY].find(cid)
    assert router is not None
    return [p.identity for p in router.peers.values() if p.role is PeerRole.PUBLISHER]


async def test_two_clinic_identities_posting_at_once_get_one_201_and_one_409(
    client: TestClient, make_token: MakeToken
) -> None:
    outcomes = []
    for trial in range(TRIALS):
        cid = (await client.app[STORE].create(f"race {trial}", "VP8", "Dr. A", "x")).id
        tokens = [make_token("clinic", cid), make_token("clinic", cid)]
        async with clinics(url(client, f"/whip/{cid}"), tokens) as posted:
            errors = [error for _, _, error in posted]
            statuses = sorted(201 if e is None else getattr(e, "status", 0) for e in errors)
            outcomes.append(statuses)
            assert statuses == [201, 409], errors
            assert all(e is None or isinstance(e, WhipError) for e in errors)
            router = client.app[RELAY].find(cid)
            assert router is not None
            winner = router.feeds[FeedName.ENDOSCOPE].identity
            assert len(publishers(client, cid)) == 1 and winner is not None
            async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (
                _,
                _,
                seen,
            ):
                assert await wait_until(lambda: len(seen.counters) >= 10, timeout=10)
                steps = [b - a for a, b in zip(seen.counters, seen.counters[1:], strict=False)]
                assert all(step >= 1 for step in steps), "two sources interleaved"
            assert router.feeds[FeedName.ENDOSCOPE].identity == winner
    assert outcomes == [[201, 409]] * TRIALS


async def test_one_identity_posting_twice_at_once_keeps_exactly_one_publisher(
    client: TestClient, make_token: MakeToken
) -> None:
    for trial in range(3):
        cid = (await client.app[STORE].create(f"twice {trial}", "VP8", "Dr. A", "x")).id
        token = make_token("clinic", cid)
        async with clinics(url(client, f"/whip/{cid}"), [token, token]) as posted:
            assert [error for _, _, error in posted] == [None, None]  # the later one replaced
            assert await wait_until(lambda c=cid: len(publishers(client, c)) == 1, timeout=5)
            async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (
                _,
                _,
                seen,
            ):
                assert await wait_until(lambda: len(seen.counters) >= 10, timeout=10)
            assert len(publishers(client, cid)) == 1
