"""aiortc peers that talk to the server exactly like a browser would: WHIP to publish, WHEP to
play. Used by the integration tests (one process, real peer connections over loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCCertificate, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack, VideoStreamTrack

from bench.common import frame_hash, post_sdp
from bench.udpproxy import ImpairmentProxy
from client.endoscopy import SyntheticEndoscopy
from client.testpattern import TestPatternTrack, read_stamp, stamp, stamp_age_ms
from client.whip import WhipClient
from relay.dtls import use_certificate
from relay.forwarding import tap_receiver
from relay.rendition import plane_array

SAMPLE_RATE = 48000


class ToneTrack(MediaStreamTrack):
    """A 20 ms-framed sine tone: audio whose arrival can be checked by its energy."""

    kind = "audio"

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self._hz = hz
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        n = int(AUDIO_PTIME * SAMPLE_RATE)
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._samples / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(n) + self._samples) / SAMPLE_RATE
        pcm = (np.sin(2 * math.pi * self._hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._samples += n
        return frame


def endoscopy_picture(sequence: SyntheticEndoscopy, index: int) -> av.VideoFrame:
    """Frame ``index`` of the synthetic endoscopy sequence as a clinic sends it (yuv420p), its
    index stamped in the top rows (``read_stamp``: the truth of every frame a viewer decodes)."""
    frame = av.VideoFrame.from_ndarray(sequence.frame(index).bgr, format="bgr24")
    frame = frame.reformat(format="yuv420p")
    stamp(plane_array(frame.planes[0]), index, int(time.time() * 1000))
    return frame


class EndoscopyTrack(VideoStreamTrack):
    """The synthetic endoscopy sequence in real time (its last frame held at the end); frames are
    made in a thread, so the event loop only hands them over."""

    def __init__(self, sequence: SyntheticEndoscopy) -> None:
        super().__init__()
        self.sequence = sequence
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        index = min(self.index, self.sequence.count - 1)
        self.index += 1
        frame = await asyncio.to_thread(endoscopy_picture, self.sequence, index)
        frame.pts, frame.time_base = pts, time_base
        return frame


@dataclass
class Received:
    """What a viewer decoded: stamps of video frames and audio energy."""

    counters: list[int] = field(default_factory=list)
    ages_ms: list[int] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    first_video_at: float | None = None
    audio_frames: int = 0
    audio_peak: int = 0
    video_event: asyncio.Event = field(default_factory=asyncio.Event)
    audio_event: asyncio.Event = field(default_factory=asyncio.Event)
    on_video: list[Callable[[av.VideoFrame], None]] = field(default_factory=list)
    "Called with every decoded video frame, for tests that look at the pixels."


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class ImpairedWhipClient(WhipClient):
    """WHIP/WHEP through a ``bench.udpproxy.ImpairmentProxy``: the offer and the answer have their
    host candidate pointed at the proxy, so every packet of this peer crosses it."""

    def __init__(self, endpoint: str, token: str, proxy: ImpairmentProxy) -> None:
        super().__init__(endpoint, token)
        self.proxy = proxy

    async def connect(self, pc: RTCPeerConnection) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        offer = self.proxy.offer(pc.localDescription.sdp)
        answer, self.location = await post_sdp(self.endpoint, self.token, offer)
        answer = self.proxy.answer(answer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


def whip_client(endpoint: str, token: str, proxy: ImpairmentProxy | None) -> WhipClient:
    return (
        WhipClient(endpoint, token) if proxy is None else ImpairedWhipClient(endpoint, token, proxy)
    )


async def configured_pc(
    client: WhipClient, relay_only: bool, certificate: RTCCertificate | None = None
) -> RTCPeerConnection:
    """Relay-only peers take the endpoint's ICE servers (OPTIONS, like ``endolink publish``);
    the others gather host candidates only, on loopback. ``certificate``: the peer's DTLS
    certificate in place of aiortc's own (an ECDSA P-256 one)."""
    pc = RTCPeerConnection(await client.configuration(relay_only)) if relay_only else new_pc()
    if certificate is not None:
        use_certificate(pc, certificate)
    return pc


@contextlib.asynccontextmanager
async def publisher(
    endpoint: str,
    token: str,
    video: bool = True,
    audio: bool = True,
    relay_only: bool = False,
    proxy: ImpairmentProxy | None = None,
    certificate: RTCCertificate | None = None,
    size: tuple[int, int] = (1280, 720),
    video_track: MediaStreamTrack | None = None,
) -> AsyncIterator[tuple[RTCPeerConnection, WhipClient]]:
    """``video_track``: sent instead of the stamped test pattern of ``size``."""
    client = whip_client(endpoint, token, proxy)
    pc = await configured_pc(client, relay_only, certificate)
    if video:
        track = TestPatternTrack(*size) if video_track is None else video_track
        pc.addTransceiver(track, direction="sendonly")
    if audio:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    try:
        await client.connect(pc)
        yield pc, client
    finally:
        await client.close()
        await pc.close()


@contextlib.asynccontextmanager
async def viewer(
    endpoint: str,
    token: str,
    kinds: tuple[str, ...] = ("video", "audio"),
    relay_only: bool = False,
    proxy: ImpairmentProxy | None = None,
    certificate: RTCCertificate | None = None,
) -> AsyncIterator[tuple[RTCPeerConnection, WhipClient, Received]]:
    client = whip_client(endpoint, token, proxy)
    pc = await configured_pc(client, relay_only, certificate)
    received = Received()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(_consume(track, received)))

    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    try:
        await client.connect(pc)
        yield pc, client, received
    finally:
        await client.close()
        await pc.close()
        for task in tasks:
            task.cancel()


@dataclass
class Encoded:
    """What an encoded viewer received: a hash of every video frame, as sent (never decoded)."""

    hashes: list[int] = field(default_factory=list)
    discontinuities: int = 0


@contextlib.asynccontextmanager
async def encoded_viewer(
    endpoint: str, token: str
) -> AsyncIterator[tuple[RTCPeerConnection, WhipClient, Encoded]]:
    """A WHEP video viewer that hashes each encoded frame its receiver completes (the relay's
    own tap, ``relay.forwarding.tap_receiver``): two of them compare what they got bit for bit."""
    client = WhipClient(endpoint, token)
    pc = new_pc()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    received = Encoded()

    def gap() -> None:
        received.discontinuities += 1

    tap = tap_receiver(
        transceiver.receiver,
        "video",
        lambda data, *_: received.hashes.append(frame_hash(data)),
        gap,
    )
    try:
        await client.connect(pc)
        yield pc, client, received
    finally:
        tap.close()
        await client.close()
        await pc.close()


async def _consume(track: MediaStreamTrack, received: Received) -> None:
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            frame = await track.recv()
            if isinstance(frame, av.VideoFrame):
                counter, wall_ms = read_stamp(frame)
                received.counters.append(counter)
                received.ages_ms.append(stamp_age_ms(wall_ms))
                received.sizes.add((frame.width, frame.height))
                if received.first_video_at is None:
                    received.first_video_at = time.monotonic()
                received.video_event.set()
                for hook in received.on_video:
                    hook(frame)
            else:
                received.audio_frames += 1
                received.audio_peak = max(
                    received.audio_peak, int(np.abs(frame.to_ndarray()).max())
                )
                received.audio_event.set()


async def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true or ``timeout`` seconds pass (bounded, never sleeps blindly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


def socket_reader(transport: Any) -> str:
    """The name of the callback the event loop runs when ``transport``'s socket is readable."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    handle = selector.get_key(transport._sock_fd).data[0]
    return str(handle._callback.__qualname__)
