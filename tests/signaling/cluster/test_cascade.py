"""Cascade between regions: the clinic publishes to the Ulaanbaatar node, residents watch through
the Seoul node, which pulls ONE stream from Ulaanbaatar and forwards it untouched to its own
viewers. Two real nodes in this process, one real redis-server, real peer connections; every
wait bounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
"Frames both encoded viewers must have in common (2 s at 30 fps; longer when the box is slow)."


def endoscope_viewers(router: Router | None) -> list[str]:
    """Identities of the endoscope feed's viewer sessions on a node."""
    if router is None:
        return []
    return [
        p.identity
        for p in router.peers.values()
        if p.role is PeerRole.VIEWER and p.feed == FeedName.ENDOSCOPE
    ]


def common_run(origin: Encoded, cascaded: Encoded) -> int:
    """How many frames in a row the cascaded viewer got exactly as the origin's viewer did, from
    the first frame of the cascaded viewer's on (0 if that frame never reached the origin's)."""
    if not cascaded.hashes or cascaded.hashes[0] not in origin.hashes:
        return 0
    start = origin.hashes.index(cascaded.hashes[0])
    run = 0
    for a, b in zip(origin.hashes[start:], cascaded.hashes, strict=False):
        if a != b:
            break
        run += 1
    return run


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
        async with (
            publisher(f"{ub.url}/whip/{cid}", clinic) as (clinic_pc, _),
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

            # Bit-exact: Seoul's viewer gets, frame for frame, what a viewer on Ulaanbaatar gets.
            assert await wait_until(
                lambda: common_run(at_ub, at_seoul) >= EXACT_FRAMES, timeout=20
            ), (common_run(at_ub, at_seoul), len(at_ub.hashes), len(at_seoul.hashes))
            assert not at_seoul.discontinuities

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
            quiet_since = time.monotonic()  # joins asked for keyframes: let those be answered
            await wait_until(lambda: time.monotonic() - quiet_since > 1.5, timeout=2)
            asked.clear()
            ub_keyframes, seoul_keyframes = ub_video.keyframes, seoul_video.keyframes
            assert send_pli(two_pc.getTransceivers()[0].receiver)
            assert await wait_until(lambda: asked, timeout=5), (
                "the request never reached the clinic"
            )
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
        async with (
            publisher(f"{ub.url}/whip/{cid}", ub.token("clinic", cid), audio=False),
            encoded_viewer(f"{ub.url}/whep/{cid}", ub.token("surgeon", cid)) as (_, _, at_ub),
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
            assert upstream is not None
            assert await wait_until(lambda: upstream.sessions >= 2, timeout=15)
            renewed_at = len(at_seoul.hashes)
            assert await wait_until(lambda: len(at_seoul.hashes) >= renewed_at + 30, timeout=10)
            assert renewed_at >= 10, "the viewer saw too little before the renewal"
            assert await wait_until(
                lambda: common_run(at_ub, at_seoul) >= renewed_at + 30, timeout=5
            ), (common_run(at_ub, at_seoul), renewed_at, len(at_seoul.hashes))
            assert all(b > a for a, b in zip(seen.counters, seen.counters[1:], strict=False))
            assert [e.state for e in events if e.cid == cid] == [FeedState.LIVE]
            ub_router = ub.client.app[RELAY].find(cid)
            assert await wait_until(
                lambda: endoscope_viewers(ub_router).count("node:seoul") == 1, timeout=5
            )
