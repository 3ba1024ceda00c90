"""Benchmark publisher process: WHIP-publishes a stamped 720p30 TestPatternTrack with aiortc's
own encoder, records every encoded frame it produced (hash, frame counter, stamp, size), and
answers one DIRECT offer (no server in between) carrying the very same encoded frames, so the
harness can subtract what a direct connection costs from what the relay path costs.

    python -m bench.publisher --whip URL --token T [--codec VP8] [--also WHIP TOKEN ...]
                              [--loss 0.01 --rtt-ms 150 | --impairment bursty10 --rtt-ms 150]
                              [--up-kbps 1200]

stdout: ``{"event": "ready", "control": URL}`` once frames flow, then one JSON line per command.
stdin commands: ``report`` (everything recorded so far), ``quit``.
Control HTTP on 127.0.0.1: ``POST /direct`` (SDP offer → answer), ``GET /frames``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import threading
import time
from fractions import Fraction
from typing import Any

import aiortc.rtcrtpsender
import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from client.testpattern import TestPatternTrack
from relay import forwarding
from relay.codecs import is_keyframe, preferences

from .common import (
    LOOPBACK,
    annexb,
    delete_session,
    emit,
    frame_hash,
    loopback_only,
    post_sdp,
    proc_sample,
    stdin_lines,
)
from .shaper import RateLimit
from .udpproxy import ImpairmentProxy, add_impairment_args, impairment_from_args

logger = logging.getLogger("bench.publisher")

VIDEO_TIME_BASE = Fraction(1, 90_000)
DIRECT_KEYFRAME_INTERVAL_S = 0.5


class StampedPattern(TestPatternTrack):
    """TestPatternTrack that remembers the wall-clock stamp it drew into each frame."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__(width, height, fps)
        self.stamps: dict[int, int] = {}

    def frame(self, counter: int, wall_ms: int) -> av.VideoFrame:
        self.stamps[counter] = wall_ms
        return super().frame(counter, wall_ms)


class EncodedLog:
    """Every frame the publisher's encoder produced, appended from the encoder thread."""

    def __init__(self, codec: str, fps: int, pattern: StampedPattern) -> None:
        self.codec = codec
        self.fps = fps
        self.pattern = pattern
        self.frames: list[tuple[int, int, int, int, bool, float, float]] = []
        "(hash, counter, stamp_ms, size, keyframe, t_encoded, encode_ms)"
        self.lock = threading.Lock()
        self.listeners: list[Any] = []
        self.encoders: list[Any] = []

    def record(self, data: bytes, frame: av.VideoFrame, timestamp: int, encode_ms: float) -> None:
        counter = round(frame.pts * frame.time_base * self.fps)
        keyframe = is_keyframe(self.codec, data)
        entry = (
            frame_hash(data),
            counter,
            self.pattern.stamps.pop(counter, 0),
            len(data),
            keyframe,
            time.time(),
            encode_ms,
        )
        with self.lock:
            self.frames.append(entry)
        for listener in self.listeners:
            listener(data, timestamp, keyframe)


def instrument_encoders(log: EncodedLog, bitrate: int) -> None:
    """Wrap every encoder aiortc creates in this process so its output is recorded (and, with
    ``bitrate``, pinned: REMB from the server then no longer moves it)."""
    original_get_encoder = aiortc.rtcrtpsender.get_encoder

    def get_encoder(codec: Any) -> Any:
        encoder = original_get_encoder(codec)
        if bitrate:
            pin_bitrate(encoder, bitrate)
        _wrap_encode(encoder, log)
        log.encoders.append(encoder)
        return encoder

    aiortc.rtcrtpsender.get_encoder = get_encoder


def pin_bitrate(encoder: Any, bitrate: int) -> None:
    """Make an aiortc encoder encode at ``bitrate`` whatever REMB says (its target setter is
    ignored)."""
    cls = type(encoder)
    setattr(encoder, f"_{cls.__name__}__target_bitrate", bitrate)
    encoder.__class__ = type(
        f"Pinned{cls.__name__}",
        (cls,),
        {"target_bitrate": property(lambda self: bitrate, lambda self, value: None)},
    )


def _wrap_encode(encoder: Any, log: EncodedLog) -> None:
    """Capture the encoder's bitstream where aiortc hands it to its packetizer."""
    original_packetize = encoder._packetize
    original_encode = encoder.encode
    captured: dict[str, bytes] = {}
    h264 = log.codec == "H264"

    def packetize(*args: Any) -> list[bytes]:
        if h264:
            nals = list(args[0])
            captured["data"] = annexb(nals)
            return original_packetize(nals)
        captured["data"] = args[0]
        return original_packetize(*args)

    def encode(frame: av.VideoFrame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        start = time.perf_counter()
        captured.clear()
        payloads, timestamp = original_encode(frame, force_keyframe)
        data = captured.pop("data", b"")
        if data:
            log.record(data, frame, timestamp, (time.perf_counter() - start) * 1000)
        return payloads, timestamp

    encoder._packetize = packetize
    encoder.encode = encode


class DirectTrack(MediaStreamTrack):
    """The publisher's own encoded frames, re-sent as ``av.Packet``s on a direct connection
    (aiortc packs them without encoding again). Starts at a keyframe, like the relay."""

    kind = "video"

    def __init__(self, request_keyframe: Any) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(maxsize=60)
        self._synced = False
        self._request_keyframe = request_keyframe
        self._last_request = 0.0
        self.keyframe_requests = 0

    def push(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        if self.readyState != "live":
            return
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
            self._synced = False
        if not self._synced:
            if not keyframe:
                self.request_keyframe()
                return
            self._synced = True
        packet = av.Packet(data)
        packet.pts = packet.dts = timestamp
        packet.time_base = VIDEO_TIME_BASE
        self._queue.put_nowait(packet)

    def request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_request >= DIRECT_KEYFRAME_INTERVAL_S:
            self._last_request = now
            self.keyframe_requests += 1
            self._request_keyframe()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


class Publisher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pattern = StampedPattern(args.width, args.height, args.fps)
        self.log = EncodedLog(args.codec, args.fps, self.pattern)
        instrument_encoders(self.log, args.bitrate)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.sender: RTCRtpSender | None = None
        self.location: str | None = None
        self.keyframe_requests: list[float] = []
        self.direct: list[tuple[RTCPeerConnection, DirectTrack]] = []
        self.again: list[tuple[RTCPeerConnection, DirectTrack, str | None, str]] = []
        "``--also`` sessions: connection, track, WHIP resource, token."
        self.proxy: ImpairmentProxy | None = None
        self.runner: web.AppRunner | None = None
        self.control_url = ""
        self.connected = asyncio.Event()
        self.started_at = time.time()

    async def start(self) -> None:
        transceiver = self.pc.addTransceiver(self.pattern, direction="sendonly")
        transceiver.setCodecPreferences(preferences("video", self.args.codec))
        self.sender = transceiver.sender
        original = self.sender._send_keyframe

        def counting_send_keyframe() -> None:  # the server's (forwarded) keyframe requests
            self.keyframe_requests.append(time.time())
            original()

        self._force_keyframe = original
        self.sender._send_keyframe = counting_send_keyframe  # type: ignore[method-assign]

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            logger.info("publisher connection %s", self.pc.connectionState)
            if self.pc.connectionState == "connected":
                self.connected.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        impairment = impairment_from_args(self.args)
        if impairment.active or self.args.up_kbps:
            limit = RateLimit(self.args.up_kbps * 1000) if self.args.up_kbps else None
            self.proxy = ImpairmentProxy(impairment, up_limit=limit)
            await self.proxy.start()
            offer = self.proxy.offer(offer)
        answer, self.location = await self._post_offer(offer)
        if self.proxy is not None:
            answer = self.proxy.answer(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        forwarding.keep_consent(self.pc)  # a late answer from a busy server is consent too
        await asyncio.wait_for(self.connected.wait(), timeout=20)
        if self.proxy is not None:
            self.proxy.impair = True
        await self._serve_control()
        deadline = time.monotonic() + 10
        while not self.log.frames and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.log.frames:
            raise RuntimeError("the encoder produced no frame within 10 s")
        for whip, token in self.args.also:
            await self._publish_again(whip, token)

    async def _post_offer(self, offer: str) -> tuple[str, str | None]:
        """WHIP POST, retried while the server is still starting (connection refused)."""
        import aiohttp

        deadline = time.monotonic() + 30
        while True:
            try:
                return await post_sdp(self.args.whip, self.args.token, offer)
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _serve_control(self) -> None:
        app = web.Application()
        app.router.add_post("/direct", self._direct)
        app.router.add_get("/frames", self._frames)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.control_url = f"http://{LOOPBACK}:{port}"

    def _packet_connection(self) -> tuple[RTCPeerConnection, DirectTrack]:
        """A connection that sends this publisher's encoded frames again, without encoding; a
        keyframe request on it reaches the one encoder."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = DirectTrack(self._force_keyframe)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(preferences("video", self.args.codec))
        transceiver.sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        self.log.listeners.append(
            lambda data, ts, key: loop.call_soon_threadsafe(track.push, data, ts, key)
        )
        return pc, track

    async def _direct(self, request: web.Request) -> web.Response:
        """A probe's offer for a direct connection: same encoded frames, no server."""
        offer = await request.text()
        pc, track = self._packet_connection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.direct.append((pc, track))
        answer = pc.localDescription.sdp
        return web.Response(status=201, text=answer, content_type="application/sdp")

    async def _publish_again(self, whip: str, token: str) -> None:
        """``--also``: one more WHIP session (another consultation) carrying the same encoded
        frames, so N publishers cost one encoder, not N (a load run measures the server)."""
        pc, track = self._packet_connection()
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        answer, location = await post_sdp(whip, token, pc.localDescription.sdp)
        self.again.append((pc, track, location, token))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        forwarding.keep_consent(pc)
        await asyncio.wait_for(connected.wait(), timeout=20)

    async def _frames(self, request: web.Request) -> web.Response:
        with self.log.lock:
            frames = list(self.log.frames)
        return web.json_response({"frames": frames})

    def report(self) -> dict[str, Any]:
        with self.log.lock:
            frames = list(self.log.frames)
        encoder = self.log.encoders[0] if self.log.encoders else None
        return {
            "event": "report",
            "codec": self.args.codec,
            "frames": frames,
            "keyframe_requests": self.keyframe_requests,
            "direct_keyframe_requests": sum(t.keyframe_requests for _, t in self.direct),
            "target_bitrate": getattr(encoder, "target_bitrate", None),
            "bitrate_pinned": bool(self.args.bitrate),
            "proxy": self.proxy.stats() if self.proxy else None,
            "connection": self.pc.connectionState,
            "connections_also": [pc.connectionState for pc, *_ in self.again],
            "process": proc_sample(os.getpid()),
        }

    async def close(self) -> None:
        for pc, track in self.direct:
            track.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)
        for pc, track, location, token in self.again:
            track.stop()
            await delete_session(location, token)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)
        await delete_session(self.location, self.args.token)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.proxy is not None:
            self.proxy.close()


async def main(args: argparse.Namespace) -> None:
    loopback_only()
    publisher = Publisher(args)
    try:
        await publisher.start()
        emit({"event": "ready", "control": publisher.control_url})
        async for command in stdin_lines():
            if command == "report":
                emit(publisher.report())
            elif command == "quit":
                break
    finally:
        await publisher.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher")
    parser.add_argument("--whip", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument(
        "--bitrate", type=int, default=1_500_000, help="pin the encoder (0: follow REMB)"
    )
    parser.add_argument(
        "--also",
        nargs=2,
        action="append",
        default=[],
        metavar=("WHIP", "TOKEN"),
        help="publish the same encoded frames on one more WHIP session (repeatable)",
    )
    parser.add_argument("--up-kbps", type=float, default=0.0, help="uplink cap (0: none)")
    add_impairment_args(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="publisher %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
