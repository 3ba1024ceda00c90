"""The media clock through the real server: an aiortc clinic publishes its stamped stream, an
aiortc surgeon plays it; the surgeon's page is told its RTP offset and the clinic's sender reports
tell the relay when each frame was captured (relay/media_clock.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
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
from tests.signaling.test_websocket import join, next_of

pytestmark = pytest.mark.timeout(90)

FRAMES = 60
"Two seconds of frames at 30 fps."
CLOCK_SLACK_MS = 2.0
"The stamp and the arrival are whole milliseconds."


def test_ntp_time_and_rtp_wrap_conversions() -> None:
    assert ntp_to_unix_ms((2_208_988_800 + 1) << 32 | (1 << 31)) == 1500.0
    assert unwrap(5, RTP_MODULO - 10) == RTP_MODULO + 5
    assert unwrap(RTP_MODULO - 10, 5) == -10
    assert unwrap(100, 90) == 100


async def _pts_of(tap: Consumer, into: list[int], decoded: list[tuple[int, int, float]]) -> None:
    """Every pts the relay forwards, and (pts, stamped capture ms, arrival ms) of the decoded
    frames."""
    decoder = av.CodecContext.create("vp8", "r")
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            packet = await tap.recv()
            arrival_ms = time.time() * 1000
            assert packet.pts is not None
            into.append(packet.pts)
            for frame in decoder.decode(av.Packet(bytes(packet))):
                assert isinstance(frame, av.VideoFrame)
                decoded[packet.pts] = (read_stamp(frame)[1], arrival_ms)


def _since(wall_ms: float, stamp_ms: int) -> float:
    """``wall_ms`` − a picture's stamp (wall-clock ms mod 2^40)."""
    delta = (int(wall_ms) - stamp_ms) & CLOCK_MASK
    return delta - (CLOCK_MASK + 1) if delta > CLOCK_MASK // 2 else delta


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
    forwarded: list[int] = []
    decoded: dict[int, tuple[int, float]] = {}
    page: list[dict[str, Any]] = []
    cid = consultation.id
    token = make_token("surgeon", cid)
    ws, _ = await join(client, cid, token)
    reading = asyncio.ensure_future(_read(ws, page))
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
                # another device (or the page's WebSocket reconnecting) is told at once
                again, _ = await join(client, cid, token)
                assert await next_of(again, "media-clock") == told[0]
                await again.close()
                sent = {(t - offset) % RTP_MODULO for t in timestamps}
                relay_pts = {pts % RTP_MODULO for pts in forwarded}
                assert sent <= relay_pts, f"{len(sent - relay_pts)} frames map to no relay pts"

                # The clinic's sender reports: when each frame was captured, on its wall clock.
                # An aiortc clinic reports the RTP time of the frame it last sent: that frame's
                # capture_ms is the report's time, after its stamp and before the relay got it.
                producer = router.feeds[FeedName.ENDOSCOPE].producers["video"]
                checked: dict[int, tuple[float, float]] = {}
                for _ in range(100):  # reports come every second or so
                    report = producer.sender_report
                    frame = decoded.get(report[0]) if report is not None else None
                    if report is not None and frame is not None:
                        capture_ms = router.capture_ms(report[0])
                        assert capture_ms == report[1]
                        checked[report[0]] = (_since(capture_ms, frame[0]), frame[1] - capture_ms)
                    if len(checked) >= 3:
                        break
                    await asyncio.sleep(0.1)
                print(f"\ncapture_ms after the stamp, before the arrival: {list(checked.values())}")
                assert len(checked) >= 3, checked
                for late, early in checked.values():
                    assert late >= -CLOCK_SLACK_MS and early >= -CLOCK_SLACK_MS, checked
            finally:
                await viewer.close()
                await pc.close()
                tap.stop()
                collecting.cancel()
    finally:
        reading.cancel()
        await ws.close()
