"""The media clock through the real server: an aiortc clinic publishes its stamped stream, an
aiortc surgeon plays it; the surgeon's page is told its RTP offset and the clinic's sender reports
tell the relay when each frame was captured (relay/media_clock.py)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import av
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from client.testpattern import CLOCK_MASK, read_stamp
from client.whip import WhipClient
from relay.consumer import Consumer
from relay.ids import FeedName
from relay.media_clock import RTP_MODULO, ntp_to_unix_ms, unwrap
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import new_pc, publisher, wait_until
from tests.relay.test_quality_flow import _of, _read, _session
from tests.signaling.test_websocket import join

pytestmark = pytest.mark.timeout(90)

FRAMES = 60
"Two seconds of frames at 30 fps."
CAPTURE_SLACK_MS = 150.0
"""An aiortc clinic reports the time it *sent* a frame (after encoding it, tens of ms on a loaded
machine); the stamp in the picture is when it was made."""


def test_ntp_time_and_rtp_wrap_conversions() -> None:
    assert ntp_to_unix_ms((2_208_988_800 + 1) << 32 | (1 << 31)) == 1500.0
    assert unwrap(5, RTP_MODULO - 10) == RTP_MODULO + 5
    assert unwrap(RTP_MODULO - 10, 5) == -10
    assert unwrap(100, 90) == 100


async def _pts_of(tap: Consumer, into: list[int], decoded: list[tuple[int, int]]) -> None:
    """Every pts the relay forwards, and (pts, stamped capture ms) of the decoded frames."""
    decoder = av.CodecContext.create("vp8", "r")
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            packet = await tap.recv()
            assert packet.pts is not None
            into.append(packet.pts)
            for frame in decoder.decode(av.Packet(bytes(packet))):
                assert isinstance(frame, av.VideoFrame)
                decoded.append((packet.pts, read_stamp(frame)[1]))


def _record_rtp(pc: RTCPeerConnection, into: list[int]) -> None:
    """Keep the RTP timestamp of every video packet the viewer's receiver gets."""
    receiver = pc.getTransceivers()[0].receiver
    handle: Callable[[RtpPacket, int], Awaitable[None]] = receiver._handle_rtp_packet

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        into.append(packet.timestamp)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


async def test_a_viewer_is_told_its_rtp_offset_and_every_frame_it_gets_maps_to_a_relay_pts(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    token = make_token("surgeon", cid)
    ws, _ = await join(client, cid, token)
    page: list[dict[str, Any]] = []
    reading = asyncio.ensure_future(_read(ws, page))
    forwarded: list[int] = []
    decoded: list[tuple[int, int]] = []
    try:
        async with publisher(str(client.make_url(f"/whip/{cid}")), make_token("clinic", cid)):
            router = client.app[RELAY].find(cid)
            assert router is not None
            tap = router.tap(FeedName.ENDOSCOPE, "video", "test")
            collecting = asyncio.ensure_future(_pts_of(tap, forwarded, decoded))
            pc = new_pc()
            pc.addTransceiver("video", direction="recvonly")
            timestamps: list[int] = []
            _record_rtp(pc, timestamps)
            viewer = WhipClient(str(client.make_url(f"/whep/{cid}")), token)
            try:
                await viewer.connect(pc)
                assert await wait_until(lambda: len(set(timestamps)) >= FRAMES, timeout=20)
                assert await wait_until(lambda: _of(page, "media-clock"), timeout=5), page
                told = _of(page, "media-clock")
                assert told[0]["session"] == _session(viewer)
                assert set(told[0]) == {"type", "v", "session", "rtp_offset"}
                assert len(told) == 1, "the offset of a viewer on the original never changes"
                offset = told[0]["rtp_offset"]
                sent = {(t - offset) % RTP_MODULO for t in timestamps}
                relay_pts = {pts % RTP_MODULO for pts in forwarded}
                assert sent <= relay_pts, f"{len(sent - relay_pts)} frames map to no relay pts"

                # the clinic's sender reports: when each frame was captured, on its wall clock
                assert await wait_until(lambda: len(decoded) >= FRAMES, timeout=10)
                assert await wait_until(lambda: router.capture_ms(0) is not None, timeout=5)
                late = []
                for pts, stamp_ms in decoded[-FRAMES:]:
                    capture_ms = router.capture_ms(pts)
                    assert capture_ms is not None
                    late.append((int(capture_ms) - stamp_ms) & CLOCK_MASK)
                late = [d - (CLOCK_MASK + 1) if d > CLOCK_MASK // 2 else d for d in late]
                print(f"\ncapture_ms − stamp: median {statistics.median(late):.0f} ms")
                assert 0 <= statistics.median(late) < CAPTURE_SLACK_MS, late
            finally:
                await viewer.close()
                await pc.close()
                tap.stop()
                collecting.cancel()
    finally:
        reading.cancel()
        await ws.close()
