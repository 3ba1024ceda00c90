"""Cascade between regions: the clinic publishes to the Ulaanbaatar node, residents watch through
the Seoul node, which pulls ONE stream from Ulaanbaatar and forwards it untouched to its own
viewers. Two real nodes in this process, one real redis-server, real peer connections; every
wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc.mediastreams import MediaStreamError

from bench.common import frame_hash
from client.testpattern import TestPatternTrack
from relay import (
    ConsultationId,
    FeedEvent,
    FeedName,
    FeedState,
    OfflineReason,
    PeerRole,
    Router,
)
from relay.forwarding import send_pli
from relay.upstream import LINGER_S
from signaling.keys import CASCADES, RELAY, STORE
from tests.peers import Encoded, encoded_viewer, publisher, viewer, wait_until
from tests.redis_server import RedisServer
from tests.signaling.cluster.nodes import Node, node

pytestmark = pytest.mark.timeout(120)

EXACT_FRAMES = 60
"Frames compared bit for bit (2 s at 30 fps; longer when the box is slow)."


def endoscope_viewers(router: Router | None) -> list[str]:
    """Identities of the endoscope feed's viewer sessions on a node."""
    if router is None:
        return []
    return [
        p.identity
        for p in router.peers.values()
        if p.role is PeerRole.VIEWER and p.feed == FeedName.ENDOSCOPE
    ]


def in_order_within(frames: list[int], origin: list[int]) -> bool:
    """Every frame of ``frames`` is one of ``origin``'s, byte for byte, in the same order and
    none twice (a viewer may miss frames to loss, never get one the origin did not send)."""
    where = {digest: i for i, digest in enumerate(origin)}
    at = [where.get(digest) for digest in frames]
    return all(i is not None for i in at) and all(
        b > a for a, b in zip(at, at[1:], strict=False) if a is not None and b is not None
    )


def common(one: Encoded, other: Encoded) -> list[int]:
    """The frames both viewers received, in ``one``'s order."""
    seen = set(other.hashes)
    return [digest for digest in one.hashes if digest in seen]


@contextlib.asynccontextmanager
async def forwarded(router: Router | None, into: list[int]) -> AsyncIterator[None]:
    """Hashes of the endoscope frames ``router`` forwards, read from a Consumer of its own (no
    network in between): what every viewer of that node should receive, byte for byte."""
    assert router is not None
    tap = router.tap(FeedName.ENDOSCOPE, "video", "test")

    async def collect() -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                into.append(frame_hash(bytes(await tap.recv())))

    collecting = asyncio.ensure_future(collect())
    try:
        yield
    finally:
        tap.stop()
        collecting.cancel()


async def create(ub: Node, cascade: bool = False) -> ConsultationId:
    """A consultation made on (and placed by region at) the Ulaanbaatar node."""
    body = {"title": "Case review", "consent_by": "Dr. Bat", "region": "ulaanbaatar"}
    created = await ub.client.post(
        "/api/consultations",
        json={**body, "cascade": cascade},
        headers={"Authorization": f"Bearer {ub.token('admin', '*')}"},
    )
    assert created.status == 201, await created.text()
    answer = await created.json()
    assert answer["node"] == "ulaanbaatar"
    cid = ConsultationId(answer["id"])
    # The recorder asks for a keyframe every 2 s: it would hide whether a viewer's ask worked.
    await ub.client.app[STORE].set_recording_enabled(cid, False)
    return cid


async def test_seoul_viewers_get_bit_exact_frames_while_seoul_pulls_one_stream_from_ulaanbaatar(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        node(tmp_path, "seoul", redis_server.url, "seoul") as seoul,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        await seoul.beat()
        cid = await create(ub)
        clinic = ub.token("clinic", cid)
        # A page on Seoul plays the original from Seoul, sends everything else to the owner.
        session = await seoul.client.get(
            "/api/session", headers={"Authorization": f"Bearer {seoul.token('surgeon', cid)}"}
        )
        body = await session.json()
        assert body["media_url"] == ub.url and body["view_url"] is None
        origin: list[int] = []
        async with (
            publisher(f"{ub.url}/whip/{cid}", clinic) as (clinic_pc, _),
            forwarded(ub.client.app[RELAY].find(cid), origin),
            encoded_viewer(f"{ub.url}/whep/{cid}", ub.token("surgeon", cid)) as (_, _, at_ub),
            viewer(f"{seoul.url}/whep/{cid}", seoul.token("observer", cid)) as (_, first_whep, one),
            viewer(f"{seoul.url}/whep/{cid}", seoul.token("observer", cid)) as (two_pc, _, two),
            encoded_viewer(f"{seoul.url}/whep/{cid}", seoul.token("observer", cid)) as (
                _,
                whep,
                at_seoul,
            ),
        ):
            # Served by Seoul itself (201 there, no redirect), without Seoul's records.
            for client in (first_whep, whep):
                assert client.location is not None
                assert client.location.startswith(f"{seoul.url}/whep/{cid}/sessions/")
            assert await seoul.client.app[STORE].get(cid) is None
            sender = clinic_pc.getTransceivers()[0].sender
            pattern = sender.track
            assert isinstance(pattern, TestPatternTrack)
            assert await wait_until(lambda: len(one.counters) >= 30, timeout=20)
            assert await wait_until(lambda: len(two.counters) >= 30, timeout=10)
            for seen in (one, two):
                assert all(b > a for a, b in zip(seen.counters, seen.counters[1:], strict=False))
                assert max(seen.counters) <= pattern.counter
                assert seen.sizes == {(1280, 720)}
            assert await wait_until(lambda: one.audio_frames > 25 and two.audio_frames > 25, 10)
            assert one.audio_peak > 1000  # the clinic's tone, not silence

            # Ulaanbaatar has one session for Seoul, whatever Seoul's viewer count (3 here).
            ub_router = ub.client.app[RELAY].find(cid)
            seoul_router = seoul.client.app[RELAY].find(cid)
            on_ub = endoscope_viewers(ub_router)
            assert on_ub.count("node:seoul") == 1 and len(on_ub) == 2, on_ub  # + the direct one
            assert len(endoscope_viewers(seoul_router)) == 3
            upstream = seoul.client.app[CASCADES].find(cid)
            assert upstream is not None and upstream.sessions == 1

            # Bit-exact: every frame Seoul's viewer gets is one Ulaanbaatar forwards, in order;
            # and it gets, frame for frame, what a viewer on Ulaanbaatar gets.
            assert await wait_until(
                lambda: len(common(at_seoul, at_ub)) >= EXACT_FRAMES, timeout=20
            ), (len(common(at_seoul, at_ub)), len(at_ub.hashes), len(at_seoul.hashes))
            assert in_order_within(at_seoul.hashes, origin)
            assert in_order_within(common(at_seoul, at_ub), at_ub.hashes)

            # A Seoul viewer's keyframe request reaches the clinic, whose encoder makes one.
            asked: list[float] = []
            original = sender._send_keyframe

            def counting_send_keyframe() -> None:
                asked.append(time.monotonic())
                original()

            sender._send_keyframe = counting_send_keyframe  # type: ignore[method-assign]
            assert ub_router is not None and seoul_router is not None
            ub_video = ub_router.feeds[FeedName.ENDOSCOPE].producers["video"]
            seoul_video = seoul_router.feeds[FeedName.ENDOSCOPE].producers["video"]
            ub_keyframes, seoul_keyframes = ub_video.keyframes, seoul_video.keyframes
            receiver = two_pc.getTransceivers()[0].receiver
            # A keyframe already on its way answers a request (each Producer coalesces them),
            # so the viewer asks again until one gets through: a few tries, each bounded.
            for _ in range(8):
                assert send_pli(receiver)
                if await wait_until(lambda: asked, timeout=0.7):
                    break
            assert asked, "the viewer's keyframe request never reached the clinic"
            assert await wait_until(lambda: seoul_video.keyframes > seoul_keyframes, timeout=5)
            assert ub_video.keyframes > ub_keyframes

        # Every viewer of Seoul gone: after the linger, the upstream session on Ulaanbaatar ends.
        assert await wait_until(
            lambda: "node:seoul" not in endoscope_viewers(ub.client.app[RELAY].find(cid)),
            timeout=LINGER_S + 10,
        )
        assert seoul.client.app[CASCADES].find(cid) is None
        # Seoul does not keep the Router (it would renew the consultation's lease for it).
        assert await wait_until(lambda: seoul.client.app[RELAY].find(cid) is None, timeout=5)
        assert ub.client.app[RELAY].find(cid) is not None  # the owner's, with its clinic gone


async def test_a_consultation_configured_for_cascade_is_served_by_the_next_node_which_reconnects(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """No region on the second node, so only the consultation's own switch turns cascade on.
    When the owner ends the upstream session, the feed goes offline there ("lost") and comes
    back on a new session while the viewer stays."""
    async with (
        node(tmp_path, "annex", redis_server.url) as annex,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        await annex.beat()
        cid = await create(ub, cascade=True)
        events: list[FeedEvent] = []
        relay = annex.client.app[RELAY]
        told = relay.on_feed_event

        def on_feed_event(event: FeedEvent) -> None:
            events.append(event)
            told(event)

        relay.on_feed_event = on_feed_event
        async with (
            publisher(f"{ub.url}/whip/{cid}", ub.token("clinic", cid), audio=False),
            viewer(f"{annex.url}/whep/{cid}", annex.token("surgeon", cid), ("video",)) as (
                _,
                whep,
                seen,
            ),
        ):
            assert whep.location is not None and whep.location.startswith(annex.url)
            assert await wait_until(lambda: len(seen.counters) >= 10, timeout=20)
            upstream = annex.client.app[CASCADES].find(cid)
            assert upstream is not None and upstream.sessions == 1
            ub_router = ub.client.app[RELAY].find(cid)
            assert ub_router is not None
            (session,) = [p.id for p in ub_router.peers.values() if p.identity == "node:annex"]

            await ub_router.close_peer(session)  # as when the owner ends it (its token expired)
            lost_at = max(seen.counters)
            assert await wait_until(lambda: upstream.sessions == 2, timeout=10)
            assert await wait_until(lambda: max(seen.counters) > lost_at + 10, timeout=20)
            assert all(b > a for a, b in zip(seen.counters, seen.counters[1:], strict=False))

            def states() -> list[tuple[FeedState, OfflineReason | None]]:
                return [(e.state, e.reason) for e in events if e.cid == cid]

            assert (FeedState.OFFLINE, OfflineReason.LOST) in states(), states()
            # live again at the feed watchdog's next look (every 0.5 s)
            assert await wait_until(lambda: states()[-1] == (FeedState.LIVE, None), 5), states()
            assert endoscope_viewers(ub_router) == ["node:annex"]  # the old session is gone


async def test_a_renewed_upstream_session_takes_over_without_a_gap_or_a_repeated_frame(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The owner ends a node's session when its token does: Seoul negotiates the next one
    beforehand (here after 2 s), and it takes over at a keyframe, frame-exact."""
    async with (
        node(tmp_path, "seoul", redis_server.url, "seoul") as seoul,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        await seoul.beat()
        seoul.client.app[CASCADES].renew_after_s = 2.0
        cid = await create(ub)
        events: list[FeedEvent] = []
        relay = seoul.client.app[RELAY]
        relay.on_feed_event = events.append  # a cascaded feed tells no page: nothing is lost
        origin: list[int] = []
        async with (
            publisher(f"{ub.url}/whip/{cid}", ub.token("clinic", cid), audio=False),
            forwarded(ub.client.app[RELAY].find(cid), origin),
            viewer(f"{seoul.url}/whep/{cid}", seoul.token("observer", cid), ("video",)) as (
                _,
                _,
                seen,
            ),
            encoded_viewer(f"{seoul.url}/whep/{cid}", seoul.token("observer", cid)) as (
                _,
                _,
                at_seoul,
            ),
        ):
            upstream = seoul.client.app[CASCADES].find(cid)
            assert upstream is not None and upstream.peer is not None
            first = upstream.peer
            assert await wait_until(lambda: upstream.peer not in (first, None), timeout=15)
            renewed_at = len(at_seoul.hashes)  # the second session feeds the Router now
            assert renewed_at >= 10, "the viewer saw too little before the renewal"
            assert await wait_until(lambda: len(at_seoul.hashes) >= renewed_at + 30, timeout=10)
            # Across the take-over: byte for byte what Ulaanbaatar forwards, in order, none twice.
            assert in_order_within(at_seoul.hashes, origin)
            assert all(b > a for a, b in zip(seen.counters, seen.counters[1:], strict=False))
            assert [e.state for e in events if e.cid == cid] == [FeedState.LIVE]
            ub_router = ub.client.app[RELAY].find(cid)
            assert await wait_until(
                lambda: endoscope_viewers(ub_router).count("node:seoul") == 1, timeout=5
            )
