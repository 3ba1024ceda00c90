"""One decoding WHEP viewer behind its own (optionally capped) downlink, for ``bench.ladder``.

    python -m bench.ladder_viewer --whep URL?quality=auto --ws WS_URL --token T
                                  --publisher CONTROL_URL
                                  [--down-kbps 700] [--codec VP8] [--name capped700]

The viewer reaches the server through a ``bench.udpproxy.ImpairmentProxy`` whose server→viewer
direction is a token bucket of ``--down-kbps`` (none: the proxy only relays). Like a browser it
decodes every frame on its event loop, NACKs a loss again once per (default) RTT like
libwebrtc (``BROWSER_NACK``), shows nothing after a loss it gave up on until a keyframe, and lets
aiortc's own receiver send REMB and receiver reports (the relay's per-viewer feedback).

Per shown frame it logs the arrival time, the stamp read from the picture (frame counter and the
publisher's wall-clock ms: latency on one host clock), the picture size and the hash of the
encoded frame (bit-exact against what the publisher's encoder produced), and the ``quality``
messages the relay sends about its session over the consultation's WebSocket; it keeps the luma of
one frame in ``SAMPLE_EVERY`` for SSIM against the regenerated source, computed at report time
in a worker thread.

stdout: ``{"event": "ready", ...}`` once a frame was shown; one JSON line per command.
stdin commands: ``report T0 T1`` (the window's statistics), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from relay.codecs import is_keyframe, preferences
from relay.forwarding import send_pli, tap_receiver
from relay.recovery import PROFILES, Tuning

from . import ladder_stats
from .common import (
    CLOCK_MASK,
    delete_session,
    emit,
    frame_hash,
    loopback_only,
    luma,
    proc_sample,
    read_stamp_luma,
    stdin_lines,
)
from .shaper import RateLimit
from .udpproxy import ImpairmentProxy

logger = logging.getLogger("bench.ladder_viewer")

SAMPLE_EVERY = 10
"Keep the luma of every frame whose counter is a multiple of this (3 per second at 30 fps)."
MAX_SAMPLES = 150
MAX_PLAUSIBLE_AGE_MS = 60_000
PLI_INTERVAL_S = 0.5
QUALITY_HEADER = "EndoLink-Quality"
BROWSER_NACK = Tuning(
    renack_interval_s=0.1, give_up_s=1.0, drop_stale=True, discount_lag=True, history=512
)
"""How a browser's receiver repairs a loss (libwebrtc's NackRequester): a missing packet is
NACKed again once an RTT has passed — 100 ms, its default while a receive-only stream has no RTT
measurement — up to 10 times, then the frame is dropped and a keyframe asked for. ``relay``
(``--nack relay``) is the relay's own receive side instead: every 40 ms, for a publisher's hop."""
NACK = {"browser": BROWSER_NACK, "relay": PROFILES["tuned"]}


def nack_new_losses_only(receiver: Any) -> None:
    """aiortc's receiver NACKs *every* packet still missing whenever a new gap appears; on a
    congested link gaps appear every few packets, so each loss is NACKed (and retransmitted)
    many times over, and the retransmissions fill the link. A browser NACKs a loss when it
    appears and then once per RTT (``BROWSER_NACK``): here only the new gap is NACKed at once."""
    generator = receiver._RTCRtpReceiver__nack_generator
    add = generator.add

    def add_new_only(packet: Any) -> bool:
        before = set(generator.missing)
        if add(packet):
            new = sorted(generator.missing - before)
            if new:
                asyncio.ensure_future(receiver._send_rtcp_nack(packet.ssrc, new))
        return False  # aiortc itself sends nothing

    generator.add = add_new_only


class Viewer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        limit = RateLimit(args.down_kbps * 1000, args.queue_ms / 1000) if args.down_kbps else None
        self.proxy = ImpairmentProxy(down_limit=limit)
        self.decoder = av.CodecContext.create("libvpx" if args.codec == "VP8" else "h264", "r")
        self.decoder.thread_count = 1
        self.receiver: Any = None
        self.tap: Any = None
        self.location: str | None = None
        self.quality_header: str | None = None
        self.quality_events: list[list[Any]] = []
        "The server's ``quality`` messages about this session: [arrival, message]."
        self.ws_errors: list[str] = []
        self._listening: asyncio.Task[None] | None = None
        self.answer_at = 0.0
        self.synced = False
        self.last_pli = 0.0
        self.frames: list[tuple[float, int, float, int, int, int]] = []
        "Shown frames: (arrival, counter, latency ms, width, height, hash of the encoded frame)."
        self.samples: dict[int, np.ndarray] = {}
        self.encoded: list[tuple[float, int, bool]] = []
        "Every complete encoded frame received: (arrival, bytes, keyframe)."
        self.discontinuities: list[float] = []
        self.skipped = 0
        self.decode_errors = 0
        self.stamp_errors = 0

    async def connect(self) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(preferences("video", self.args.codec))
        self.receiver = transceiver.receiver
        self.tap = tap_receiver(self.receiver, "video", self.on_frame, self.on_discontinuity)
        self.tap.recovery.tuning = NACK[self.args.nack]
        if self.args.nack == "browser":
            nack_new_losses_only(self.receiver)
        await self.proxy.start()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.proxy.offer(self.pc.localDescription.sdp)
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.args.token}"}
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(self.args.whep, data=offer, headers=headers) as response:
                answer = await response.text()
                if response.status != 201:
                    raise RuntimeError(f"WHEP: HTTP {response.status}: {answer[:200]}")
                self.quality_header = response.headers.get(QUALITY_HEADER)
                location = response.headers.get("Location")
                self.location = urljoin(self.args.whep, location) if location else None
        self.answer_at = time.time()
        self._listening = asyncio.ensure_future(self._listen())
        answer = self.proxy.answer(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _listen(self) -> None:
        """The consultation's WebSocket: the relay says there when it moves this session."""
        headers = {"Authorization": f"Bearer {self.args.token}"}
        session = (self.location or "").rstrip("/").rsplit("/", 1)[-1]
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(self.args.ws, headers=headers, heartbeat=20) as ws:
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        body = message.json()
                        if body.get("type") == "quality" and body.get("session") == session:
                            self.quality_events.append([time.time(), body])
        except (aiohttp.ClientError, ValueError) as exc:
            self.ws_errors.append(f"{type(exc).__name__}: {exc}")

    def on_frame(self, data: bytes, timestamp: int, *_: object) -> None:
        keyframe = is_keyframe(self.args.codec, data)
        self.encoded.append((time.time(), len(data), keyframe))
        if not self.synced:
            if not keyframe:
                self.skipped += 1
                return
            self.synced = True
        try:
            pictures = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            self.decode_errors += 1
            return
        for picture in pictures:
            self._show(picture, frame_hash(data))

    def _show(self, picture: av.VideoFrame, digest: int) -> None:
        y = luma(picture)
        counter, wall_ms = read_stamp_luma(y)
        now = time.time()
        age_ms = ((int(now * 1000) - wall_ms) & CLOCK_MASK) + (now * 1000) % 1
        if age_ms > MAX_PLAUSIBLE_AGE_MS:  # not a stamp of this run: a damaged picture
            self.stamp_errors += 1
            return
        self.frames.append((now, counter, age_ms, picture.width, picture.height, digest))
        if counter % SAMPLE_EVERY == 0 and len(self.samples) < MAX_SAMPLES:
            self.samples[counter] = y.copy()

    def on_discontinuity(self) -> None:
        """Lost for good: like a browser, ask for a keyframe and show nothing until it comes."""
        self.discontinuities.append(time.time())
        self.synced = False
        now = time.monotonic()
        if now - self.last_pli >= PLI_INTERVAL_S:
            self.last_pli = now
            send_pli(self.receiver)

    async def report(self, t0: float, t1: float) -> dict[str, Any]:
        published = await self._published()
        shown = {f[1] for f in self.frames if t0 <= f[0] <= t1}
        samples = {c: y for c, y in self.samples.items() if c in shown}
        ssim = await asyncio.to_thread(
            ladder_stats.ssim_vs_pattern, samples, self.args.width, self.args.height
        )
        return {
            "event": "report",
            "name": self.args.name,
            "down_kbps": self.args.down_kbps,
            "quality_header": self.quality_header,
            "session": (self.location or "").rstrip("/").rsplit("/", 1)[-1],
            "quality_events": self.quality_events,
            "ws_errors": self.ws_errors,
            "answer_at": self.answer_at,
            "frames": [[*f[:5], f[5] in published] for f in self.frames],
            "ssim": ssim,
            "encoded": [e for e in self.encoded if t0 <= e[0] <= t1],
            "discontinuities": self.discontinuities,
            "skipped_until_keyframe": self.skipped,
            "decode_errors": self.decode_errors,
            "stamp_errors": self.stamp_errors,
            "proxy": self.proxy.stats(),
            "process": proc_sample(os.getpid()),
        }

    async def _published(self) -> set[int]:
        """Hashes of every frame the publisher's encoder produced (bit-exactness)."""
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"{self.args.publisher}/frames") as response:
                body = await response.json()
        return {entry[0] for entry in body["frames"]}

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
        if self.tap is not None:
            self.tap.close()
        await delete_session(self.location, self.args.token)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)
        self.proxy.close()


async def main(args: argparse.Namespace) -> None:
    loopback_only()
    viewer = Viewer(args)
    try:
        await viewer.connect()
        deadline = time.monotonic() + args.ready_timeout
        while not viewer.frames and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        emit({"event": "ready", "receiving": bool(viewer.frames), "quality": viewer.quality_header})
        async for command in stdin_lines():
            words = command.split()
            if words[0] == "report":
                emit(await viewer.report(float(words[1]), float(words[2])))
            elif words[0] == "quit":
                break
    finally:
        await asyncio.wait_for(viewer.close(), 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ladder_viewer")
    parser.add_argument("--whep", required=True, help="WHEP URL, with ?quality= if wanted")
    parser.add_argument("--token", required=True)
    parser.add_argument("--publisher", required=True, help="publisher control URL")
    parser.add_argument("--ws", required=True, help="the consultation's WebSocket URL")
    parser.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    parser.add_argument("--down-kbps", type=float, default=0.0, help="downlink cap (0: none)")
    parser.add_argument("--queue-ms", type=float, default=250.0, help="the cap's queue")
    parser.add_argument("--nack", choices=sorted(NACK), default="browser")
    parser.add_argument("--name", default="viewer")
    parser.add_argument("--width", type=int, default=1280, help="the source's size")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="viewer %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
