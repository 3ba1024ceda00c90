"""The server notices a vanished publisher or viewer within 5 s (aiortc alone: ~35 s), and keeps a
live one that merely sends no media: a real ``endolink publish`` and a real aiortc viewer, each in
its own process, are SIGKILLed by pid while an idle talk-back pair stays connected throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from relay import FeedName, FeedState, PeerRole, Router, forwarding
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import new_pc, viewer, wait_until
from tests.processes import Process, clean_env, publish_command, view_command

DETECTION_S = 5.0


class SilentAudio(MediaStreamTrack):
    """A microphone that never yields a frame: the connection is up, no RTP ever flows."""

    kind = "audio"

    async def recv(self) -> None:  # type: ignore[override]
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def silent_talkback(url: str, token: str) -> AsyncIterator[RTCPeerConnection]:
    from client.whip import WhipClient

    pc = new_pc()
    pc.addTransceiver(SilentAudio(), direction="sendonly")
    client = WhipClient(url, token)
    try:
        await client.connect(pc)
        yield pc
    finally:
        await client.close()
        await pc.close()


def peers_of(router: Router, role: PeerRole, feed: FeedName) -> set[str]:
    return {p.id for p in router.peers.values() if p.role is role and p.feed == feed}


async def closed_within(predicate, limit: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held (asserting it did within ``limit``)."""
    started = time.monotonic()
    assert await wait_until(predicate, limit + 1.0)
    return time.monotonic() - started


async def test_vanished_peers_are_closed_within_seconds_and_idle_ones_are_kept(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    tmp_path,  # type: ignore[no-untyped-def]
    processes: list[Process],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = consultation.id
    probed: Counter[RTCPeerConnection] = Counter()
    probe = forwarding.probe

    async def counted(pc: RTCPeerConnection) -> bool:
        probed[pc] += 1
        return await probe(pc)

    monkeypatch.setattr(forwarding, "probe", counted)
    base = str(client.make_url("")).rstrip("/")
    log = tmp_path / "clients.log"
    env = clean_env()
    publisher = Process(publish_command(f"{base}/whip/{cid}", make_token("clinic", cid)), log, env)
    processes.append(publisher)
    viewing = Process(view_command(f"{base}/whep/{cid}", make_token("observer", cid)), log, env)
    processes.append(viewing)

    talkback = f"{base}/whip/{cid}"
    listen = f"{base}/whep/{cid}?feed=talkback"
    async with (
        silent_talkback(talkback, make_token("surgeon", cid)) as quiet_pub,
        viewer(listen, make_token("clinic", cid), kinds=("audio",)) as (quiet_view, _, _),
    ):
        idle_since = time.monotonic()
        router = client.app[RELAY].find(cid)
        assert router is not None
        await asyncio.to_thread(viewing.wait_for, "frame ", 30)
        endoscope = router.feeds[FeedName.ENDOSCOPE]
        assert await wait_until(lambda: endoscope.state is FeedState.LIVE, 5)
        assert len(peers_of(router, PeerRole.VIEWER, FeedName.ENDOSCOPE)) == 1

        # a peer whose media or reports arrive is not probed; one that sends nothing at all (the
        # talk-back's listener while nobody talks: no stream, so no receiver report) twice a second
        streaming, reporting, idle = (
            next(p.pc for p in router.peers.values() if p.role is role and p.feed == feed)
            for role, feed in (
                (PeerRole.PUBLISHER, FeedName.ENDOSCOPE),
                (PeerRole.VIEWER, FeedName.ENDOSCOPE),
                (PeerRole.VIEWER, FeedName.TALKBACK),
            )
        )
        probed.clear()
        await wait_until(lambda: False, 3.0)
        counts = probed[streaming], probed[reporting], probed[idle]
        print(f"probes in 3 s: streaming publisher, reporting viewer, idle listener {counts}")
        assert counts[0] == 0 and counts[1] <= 3 and counts[2] >= 5, counts

        viewing.kill()
        viewer_s = await closed_within(
            lambda: not peers_of(router, PeerRole.VIEWER, FeedName.ENDOSCOPE), DETECTION_S
        )
        publisher.kill()
        publisher_s = await closed_within(lambda: endoscope.publisher is None, DETECTION_S)
        print(f"vanished viewer closed after {viewer_s:.2f} s, publisher after {publisher_s:.2f} s")
        assert viewer_s <= DETECTION_S and publisher_s <= DETECTION_S
        assert not peers_of(router, PeerRole.PUBLISHER, FeedName.ENDOSCOPE)

        # the idle pair: no media at all for well over the peer timeout, still connected
        await wait_until(lambda: False, max(0.0, idle_since + 10.0 - time.monotonic()))
        assert router.feeds[FeedName.TALKBACK].state is FeedState.OFFLINE
        assert len(peers_of(router, PeerRole.PUBLISHER, FeedName.TALKBACK)) == 1
        assert len(peers_of(router, PeerRole.VIEWER, FeedName.TALKBACK)) == 1
        assert quiet_pub.connectionState == quiet_view.connectionState == "connected"

        # a blocked event loop (a CPU-starved host) is no silence of the peers: what they sent
        # meanwhile is still unread in the sockets
        time.sleep(client.app[RELAY].config.peer_timeout_s + 1.0)
        await wait_until(lambda: False, 1.5)
        assert len(peers_of(router, PeerRole.PUBLISHER, FeedName.TALKBACK)) == 1
        assert len(peers_of(router, PeerRole.VIEWER, FeedName.TALKBACK)) == 1
