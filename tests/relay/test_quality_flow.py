"""Automatic quality with real peer connections: a 720p stamped publisher (1.8 Mbit/s), one
viewer behind a 350 kbit/s link (``bench.udpproxy.ImpairmentProxy`` with a token-bucket cap) and
one beside it on loopback, both in automatic mode (the default).

The capped viewer is moved by its own feedback to a rung, at a keyframe, with stamped frames still
arriving, and gets a full frame rate there; the uncapped viewer stays on the original, every
frame bit-exact. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any

import aiortc.rtcrtpsender
import av
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from aiortc.mediastreams import MediaStreamError

from bench.publisher import pin_bitrate
from bench.shaper import RateLimit
from bench.udpproxy import ImpairmentProxy
from client.testpattern import read_stamp
from client.whip import WhipClient
from relay import forwarding
from relay.codecs import is_keyframe
from relay.ids import FeedName
from relay.ladder import Quality
from relay.selector import Selector
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import ImpairedWhipClient, Received, new_pc, publisher, wait_until
from tests.signaling.test_websocket import join

pytestmark = pytest.mark.timeout(180)

CAP_BPS = 350_000
MOVE_S = 10.0
"The capped viewer is on a rung within this long of its first frame (measured: see the log)."
FPS_WINDOW_S = 3.0
FPS_WINDOW_MAX_S = 20.0
RUNG_FRAMES = 60
"""The window lasts until the rung made 60 frames (3 s at 30 fps; longer, bounded, when the
loaded machine's clinic sends 4 fps): a 90 % share of a dozen frames is noise at its edges."""
ATTEMPTS = 3
"Windows tried for one without a move of the viewer (a trial up may begin in one)."
EXACT_FRAMES = 50
"The uncapped viewer's frames compared with the clinic's: a few seconds' worth, even when slow."
PUBLISHER_BPS = 1_800_000
"The clinic's 720p stream, pinned (aiortc's own VP8 target would follow REMB from 500 kbit/s)."
FRAME_SHARE = 0.9
"""On the rung the viewer gets at least 90 % of the frames the rung makes (the issue's 25 fps at
30 fps). What the rung makes of the clinic's frames is tests/relay/test_ladder_flow.py's; on a
loaded machine the test's own publisher may send fewer than 30 (the message says)."""


@pytest.fixture
def pinned_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every aiortc encoder made in this test encodes at ``PUBLISHER_BPS`` whatever REMB says
    (only the publisher encodes: the relay forwards, the viewers decode)."""
    made = aiortc.rtcrtpsender.get_encoder

    def get_encoder(codec: Any) -> Any:
        encoder = made(codec)
        pin_bitrate(encoder, PUBLISHER_BPS)
        return encoder

    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", get_encoder)


class RecoveringViewer:
    """A WHEP viewer that recovers from loss like a browser: its video receiver is the relay's
    own tap (re-NACK, give up after a deadline), and after a gap it asks for a keyframe and
    decodes from there. (aiortc's stock receiver, after the heavy loss a 1.8 Mbit/s stream meets
    on a 350 kbit/s link, waits 512 packets — many seconds at a rung's rate — before its PLI.)
    Decoding runs on the loop: a few ms a frame at most, for one test viewer."""

    def __init__(self) -> None:
        self.pc = new_pc()
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self.received = Received()
        self._decoder = av.CodecContext.create("vp8", "r")
        self._synced = False
        self._receiver = transceiver.receiver
        self._tap = forwarding.tap_receiver(
            self._receiver, "video", self._on_frame, self._on_discontinuity
        )

    def _on_frame(self, data: bytes, *_: object) -> None:
        if not self._synced:
            if not is_keyframe("VP8", data):
                return
            self._synced = True
        for frame in self._decoder.decode(av.Packet(data)):
            assert isinstance(frame, av.VideoFrame)
            counter, _ = read_stamp(frame)
            self.received.counters.append(counter)
            self.received.sizes.add((frame.width, frame.height))

    def _on_discontinuity(self) -> None:
        self._synced = False
        forwarding.send_pli(self._receiver)

    async def close(self) -> None:
        self._tap.close()
        await self.pc.close()


def _selector(client: TestClient, cid: str, session: str) -> Selector:
    router = client.app[RELAY].find(cid)
    assert router is not None
    peer = router.peers[session]
    tracks = [t.sender.track for t in peer.pc.getTransceivers() if t.kind == "video"]
    assert isinstance(tracks[0], Selector)
    return tracks[0]


async def test_a_capped_viewer_moves_to_a_rung_and_the_uncapped_one_stays_bit_exact(
    client: TestClient, consultation: Consultation, make_token: MakeToken, pinned_publisher: None
) -> None:
    cid = consultation.id
    relay = client.app[RELAY]
    capped_token = make_token("surgeon", cid)
    ws, _ = await join(client, cid, capped_token)  # the capped viewer's page
    # read all along, as a browser does: it answers the heartbeat (2 s) only while reading
    page: list[dict[str, Any]] = []
    reading = asyncio.ensure_future(_read(ws, page))
    proxy = ImpairmentProxy(down_limit=RateLimit(CAP_BPS))
    await proxy.start()
    whep = str(client.make_url(f"/whep/{cid}"))
    source: set[bytes] = set()
    exact: list[bytes] = []
    gaps: list[int] = []
    try:
        async with publisher(str(client.make_url(f"/whip/{cid}")), make_token("clinic", cid)):
            router = relay.find(cid)
            assert router is not None
            tap = router.tap(FeedName.ENDOSCOPE, "video", "test")
            collecting = asyncio.ensure_future(_collect(tap, source))
            # the uncapped viewer keeps the encoded frames it receives (no decoding)
            pc = new_pc()
            transceiver = pc.addTransceiver("video", direction="recvonly")
            forwarding.tap_receiver(
                transceiver.receiver,
                "video",
                lambda data, *_: exact.append(hashlib.sha1(data).digest()),
                lambda: gaps.append(1),
            )
            uncapped = WhipClient(whep, make_token("surgeon", cid))
            await uncapped.connect(pc)
            recovering = RecoveringViewer()
            capped = ImpairedWhipClient(whep, capped_token, proxy)
            await capped.connect(recovering.pc)
            received = recovering.received
            try:
                assert await wait_until(lambda: received.counters, timeout=20)
                first_frame = time.monotonic()
                selector = _selector(client, cid, _session(capped))
                assert await wait_until(lambda: selector.switches, timeout=MOVE_S), (
                    f"still on {selector.quality}; policy: {selector.policy.reason}"
                )
                switch = selector.switches[0]
                moved_after = switch.done_at - first_frame
                assert switch.target is not Quality.ORIGINAL
                print(
                    f"capped viewer: {switch.source} → {switch.target} ({switch.reason}) "
                    f"decided {switch.asked_at - first_frame:.2f} s after its first frame, "
                    f"swapped {1000 * (switch.done_at - switch.asked_at):.0f} ms later"
                )
                # frames keep arriving, stamped and in order, and at a full rate on the rung
                # (measured over a window in which the viewer stayed on one rung)
                original = router.feeds[FeedName.ENDOSCOPE].producers["video"]
                for _ in range(ATTEMPTS):
                    assert await wait_until(lambda: selector.pending is None, timeout=MOVE_S)
                    await asyncio.sleep(1.0)
                    moves, on = len(selector.switches), selector.quality
                    rendition = router.ladder.renditions()[(False, on)]
                    before = len(received.counters)
                    counts = original.frames, rendition.producer.frames
                    started = time.monotonic()
                    await asyncio.sleep(FPS_WINDOW_S)
                    made, since = rendition.producer, counts[1]
                    await wait_until(
                        lambda made=made, since=since: made.frames - since >= RUNG_FRAMES,
                        timeout=FPS_WINDOW_MAX_S - FPS_WINDOW_S,
                    )
                    window = time.monotonic() - started
                    if len(selector.switches) == moves and selector.pending is None:
                        break
                source_fps = (original.frames - counts[0]) / window
                rung_fps = (rendition.producer.frames - counts[1]) / window
                # the viewer decodes behind the rung: give it up to a second to catch up
                await wait_until(
                    lambda: len(received.counters) - before >= FRAME_SHARE * rung_fps * window,
                    timeout=1.0,
                )
                new = received.counters[before:]
                fps = len(new) / window
                rates = (
                    f"viewer {fps:.1f}, rung {rung_fps:.1f}, clinic {source_fps:.1f} fps over "
                    f"{window:.1f} s; "
                    f"clinic {original.keyframes} keyframes, {original.discontinuities} "
                    f"discontinuities, {original.keyframe_requests} requests; {rendition}; "
                    f"moves {[(s.target, s.reason) for s in selector.switches]}"
                )
                print(f"capped viewer on {on}: {rates}; link {proxy.stats()['down']}")
                assert len(selector.switches) == moves, f"the viewer kept moving: {rates}"
                assert new and all(b > a for a, b in zip(new, new[1:], strict=False))
                assert rung_fps > 0 and fps >= FRAME_SHARE * rung_fps, rates
                assert (640, 360) in received.sizes or (960, 540) in received.sizes
                assert moved_after < MOVE_S
                # the viewer's page is told, for this WHEP session
                assert await wait_until(lambda: _of(page, "quality"), timeout=5), page
                told = _of(page, "quality")[0]
                assert told == {
                    "type": "quality",
                    "v": 1,
                    "session": _session(capped),
                    "quality": str(switch.target),
                    "automatic": True,
                    "reason": "connection",
                }
            finally:
                await capped.close()
                await recovering.close()
            uncapped_selector = [
                p for p in router.peers.values() if p.role == "viewer"
            ]  # the capped one has left
            assert len(uncapped_selector) == 1
            stayed = _selector(client, cid, uncapped_selector[0].id)
            assert stayed.quality is Quality.ORIGINAL and not stayed.switches, (
                f"the uncapped viewer moved: {[(s.target, s.reason) for s in stayed.switches]}; "
                f"its feedback: {stayed.policy.reason}, original at {original.bitrate()} bit/s"
            )
            await uncapped.close()
            await pc.close()
            tap.stop()
            collecting.cancel()
    finally:
        proxy.close()
        reading.cancel()
        await ws.close()
    assert len(exact) >= EXACT_FRAMES, len(exact)
    assert not gaps
    assert set(exact) <= source, "the uncapped viewer received frames the clinic never sent"


def _session(client: WhipClient) -> str:
    assert client.location is not None
    return client.location.rstrip("/").rsplit("/", 1)[-1]


async def _collect(tap: forwarding.Forwarded, into: set[bytes]) -> None:
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            packet = await tap.recv()  # type: ignore[attr-defined]
            into.add(hashlib.sha1(bytes(packet)).digest())


async def _read(ws: ClientWebSocketResponse, into: list[dict[str, Any]]) -> None:
    """The page's messages, read as they come (so its heartbeat pongs go out)."""
    with contextlib.suppress(asyncio.CancelledError):
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            into.append(json.loads(msg.data))


def _of(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == kind]
