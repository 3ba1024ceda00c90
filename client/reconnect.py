"""Keep publishing through outages: ``endolink publish`` starts a fresh WHIP session whenever the
one it has is lost: at once after a session that was connected, with a growing pause (1, 2, 4 ...
8 s) while the server cannot be reached or the connection never comes up.

aiortc cannot restart ICE, so recovery is always a new ``RTCPeerConnection`` and a new WHIP POST
(the old resource is DELETEd best-effort). A session counts as lost when its connection goes
``failed``/``closed`` (the server closed it: DTLS close_notify), never connects, or when nothing at
all has come from the server for ``SILENCE_S`` — a live server sends receiver reports for our
streams about every second, so silence means it is gone (killed, restarted, network down).

A session that was connected and is lost is replaced at once. Attempts that do not get that far
(the server unreachable, the offer answered but ICE or DTLS failing — which can fail at once)
wait 1, 2, 4 ... up to 8 s (±20 % jitter) between them, so a server that cannot be reached is
not hammered; 30 s connected starts the back-off at 1 s again. Refusals end publishing with the
server's readable reason (401, 403, 404, 400...), except "busy" answers (409, 429, 503), which are
retried after their ``Retry-After``. A lost session's resource is the server's to free if the DELETE
does not get through: the same clinic publishing again replaces it, and the server closes a
silent session within seconds anyway (``relay/liveness.py``).

The source is read continuously into ``LiveSource`` so that a new session starts from the present
picture — not a backlog piled up during the outage — and a real-time source keeps its pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from aiortc.stats import RTCTransportStats
from av.frame import Frame
from av.packet import Packet

from client.buffer import FrameBuffer
from client.uplink import follow_the_link
from client.whip import WhipClient, WhipError

if TYPE_CHECKING:
    Media = Frame | Packet[Any]
    "What a source track yields: a decoded frame, or an encoded packet (a live source sent as is)."

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 8.0
"""Pauses between attempts that did not connect: 1, 2, 4, 8 s (±20 % jitter). Short, as the pages'
(15 s): once the server is back the endoscope returns within a pause, and one failed offer
every 8 s costs a server nothing."""
STEADY_S = 30.0
"Connected this long, a later failure starts the back-off at its first pause again."
SILENCE_S = 3.0
"Nothing from the server this long (it sends receiver reports about every second): lost."
CONNECT_S = 10.0
"An answered offer whose connection is not up by then is given up and retried."
RETRY_STATUSES = (409, 429, 503)
MAX_RETRY_AFTER_S = 30.0


class LiveSource:
    """Reads a source track all the time and hands its frames to the current session's track,
    keeping at most ``backlog`` of them while no session reads (``FrameBuffer``'s drop rule)."""

    def __init__(
        self,
        source: MediaStreamTrack,
        backlog: int,
        negotiated: Callable[[str], str | None] = lambda codec: None,
    ) -> None:
        self.kind = source.kind
        self.negotiated = negotiated
        "Told each session's codec for this kind; returns a line for the console, if any."
        self.ended = asyncio.Event()
        self._source = source
        self._queue = FrameBuffer(backlog)
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                self._put(await self._source.recv())
        except MediaStreamError:
            self._put(None)
            self.ended.set()

    def _put(self, frame: Media | None) -> None:
        self._queue.put(frame)

    def track(self) -> MediaStreamTrack:
        """A track for a new session: it starts from the frames still waiting (the present)."""
        return _SessionTrack(self)

    async def next_frame(self) -> Media:
        frame = await self._queue.get()
        if frame is None:
            self._queue.unget(None)  # every later session ends too
            raise MediaStreamError
        return frame

    def close(self) -> None:
        self._task.cancel()
        self._source.stop()


class _SessionTrack(MediaStreamTrack):
    def __init__(self, source: LiveSource) -> None:
        super().__init__()
        self.kind = source.kind
        self._live = source

    async def recv(self) -> Media:
        return await self._live.next_frame()


async def keep_publishing(
    sources: Sequence[LiveSource],
    new_pc: Callable[[WhipClient], Awaitable[RTCPeerConnection]],
    new_client: Callable[[], WhipClient],
    stop: asyncio.Event,
    first_words: str,
) -> None:
    """Publish ``sources`` until ``stop`` is set or a source ends, starting a fresh session
    whenever one is lost. Raises ``WhipError`` for an answer retrying cannot change."""
    lost_at: float | None = None
    "When a connected session was lost (None: connected, or never yet)."
    backoff = _Backoff()
    while not _done(stop, sources):
        client = new_client()
        try:
            pc = await _start(client, new_pc, sources)
        except WhipError as exc:
            if exc.status not in RETRY_STATUSES:
                raise
            pause = min(exc.retry_after or backoff.next(), MAX_RETRY_AFTER_S)
            _say(f"the server is busy ({exc.reason}) — trying again in {pause:.0f} s")
        except (TimeoutError, aiohttp.ClientError, OSError):
            pause = backoff.next()
            _say(f"could not reach the server, trying again in {pause:.0f} s")
        else:
            up_at = None
            if await _connected(pc, stop):
                up_at = time.monotonic()
                _say(first_words if lost_at is None else _since("reconnected after", lost_at))
                lost_at = None
                await _until_lost(pc, stop, sources)
            await _end(client, pc)
            if _done(stop, sources):
                return
            if up_at is None:
                pause = backoff.next()
                _say(f"could not connect, trying again in {pause:.0f} s")
            else:
                if time.monotonic() - up_at >= STEADY_S:
                    backoff.reset()
                _say("connection lost — reconnecting")
                lost_at = time.monotonic()
                pause = 0.0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)


class _Backoff:
    """Growing pauses between attempts that did not connect (1, 2, 4, 8 s, ±20 %)."""

    def __init__(self) -> None:
        self._failures = 0

    def next(self) -> float:
        pause = min(BACKOFF_FIRST_S * 2.0 ** min(self._failures, 8), BACKOFF_MAX_S)
        self._failures += 1
        return min(pause * random.uniform(0.8, 1.2), BACKOFF_MAX_S)

    def reset(self) -> None:
        self._failures = 0


async def _start(
    client: WhipClient,
    new_pc: Callable[[WhipClient], Awaitable[RTCPeerConnection]],
    sources: Sequence[LiveSource],
) -> RTCPeerConnection:
    """A new peer connection (its ICE servers asked from the endpoint), offered and answered;
    closed again when that fails."""
    pc = await new_pc(client)
    for source in sources:
        pc.addTransceiver(source.track(), direction="sendonly")
    try:
        await client.connect(pc)
    except BaseException:
        await pc.close()
        raise
    answer = SessionDescription.parse(pc.remoteDescription.sdp)
    for source in sources:
        for media in answer.media:
            if media.kind == source.kind and media.rtp.codecs and media.port:
                line = source.negotiated(media.rtp.codecs[0].name)
                if line:
                    _say(line)
                if media.kind == "video":
                    follow_the_link(_video_sender(pc), media.rtp.codecs[0], _say)
    return pc


def _video_sender(pc: RTCPeerConnection) -> RTCRtpSender:
    return next(t.sender for t in pc.getTransceivers() if t.kind == "video")


def _done(stop: asyncio.Event, sources: Sequence[LiveSource]) -> bool:
    return stop.is_set() or any(s.ended.is_set() for s in sources)


def _say(state: str) -> None:
    """A plain state line for the person at the clinic (never a token or an address)."""
    print(state, flush=True)


def _since(words: str, since: float) -> str:
    return f"{words} {time.monotonic() - since:.1f} s"


async def _connected(pc: RTCPeerConnection, stop: asyncio.Event) -> bool:
    deadline = time.monotonic() + CONNECT_S
    while pc.connectionState != "connected" and time.monotonic() < deadline:
        if pc.connectionState in ("failed", "closed") or stop.is_set():
            return False
        await asyncio.sleep(0.05)
    return pc.connectionState == "connected"


async def _until_lost(
    pc: RTCPeerConnection, stop: asyncio.Event, sources: Sequence[LiveSource]
) -> None:
    """Return once the session is lost, ``stop`` is set or a source ended."""
    heard = await _packets_received(pc)
    heard_at = time.monotonic()
    while not _done(stop, sources):
        if pc.connectionState in ("failed", "closed"):
            return
        packets = await _packets_received(pc)
        if packets != heard:
            heard, heard_at = packets, time.monotonic()
        elif time.monotonic() - heard_at > SILENCE_S:
            return
        await asyncio.sleep(0.25)


async def _packets_received(pc: RTCPeerConnection) -> int:
    """Datagrams from the server past ICE (RTCP, DTLS): public stats, no private hooks."""
    report = await pc.getStats()
    return sum(s.packetsReceived for s in report.values() if isinstance(s, RTCTransportStats))


async def _end(client: WhipClient, pc: RTCPeerConnection) -> None:
    """DELETE the old resource (best effort, briefly: the server may be gone) and close."""
    with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(client.close(), 2.0)
    await pc.close()
