"""Keep publishing through outages: ``endolink publish`` starts a fresh WHIP session whenever the
one it has is lost, and is back within about a second of the server answering again.

aiortc cannot restart ICE, so recovery is always a new ``RTCPeerConnection`` and a new WHIP POST
(the old resource is DELETEd best-effort). A session counts as lost when its connection goes
``failed``/``closed`` (the server closed it: DTLS close_notify), never connects, or when nothing at
all has come from the server for ``SILENCE_S`` — a live server sends receiver reports for our
streams about every second, so silence means it is gone (killed, restarted, network down).

While the server is unreachable it is probed about every second with jitter (no growing
back-off: the clinic is back as soon as the server is). Refusals end publishing with the server's
readable reason (401, 403, 404, 400...), except "busy" answers (409, 429, 503), which are retried
after their ``Retry-After``. A lost session's resource is the server's to free if the DELETE
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
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from aiortc.stats import RTCTransportStats
from av.frame import Frame
from av.packet import Packet

from client.whip import WhipClient, WhipError

if TYPE_CHECKING:
    Media = Frame | Packet[Any]
    "What a source track yields: a decoded frame, or an encoded packet (a live source sent as is)."

PROBE_S = 1.0
"Pause between attempts while the server is unreachable (±20 % jitter)."
SILENCE_S = 3.0
"Nothing from the server this long (it sends receiver reports about every second): lost."
CONNECT_S = 10.0
"An answered offer whose connection is not up by then is given up and retried."
RETRY_STATUSES = (409, 429, 503)
MAX_RETRY_AFTER_S = 30.0


class LiveSource:
    """Reads a source track all the time and hands its frames to the current session's track,
    keeping at most ``backlog`` of them (the oldest are dropped while no session reads)."""

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
        self._backlog = backlog
        self._queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                self._put(await self._source.recv())
        except MediaStreamError:
            self._put(None)
            self.ended.set()

    def _put(self, frame: Media | None) -> None:
        while self._queue.qsize() >= self._backlog:
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    def track(self) -> MediaStreamTrack:
        """A track for a new session: it starts from the frames still waiting (the present)."""
        return _SessionTrack(self)

    async def next_frame(self) -> Media:
        frame = await self._queue.get()
        if frame is None:
            self._put(None)  # every later session ends too
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
    unreachable = False
    while not _done(stop, sources):
        client = new_client()
        pause = PROBE_S * random.uniform(0.8, 1.2)
        try:
            pc = await _start(client, new_pc, sources)
        except WhipError as exc:
            if exc.status not in RETRY_STATUSES:
                raise
            pause = min(exc.retry_after or pause, MAX_RETRY_AFTER_S)
            _say(f"the server is busy ({exc.reason}) — trying again in {pause:.0f} s")
        except (TimeoutError, aiohttp.ClientError, OSError):
            if not unreachable:
                _say("server unreachable — trying again every second")
                unreachable = True
        else:
            unreachable = False
            if await _connected(pc, stop):
                _say(first_words if lost_at is None else _since("reconnected after", lost_at))
                lost_at = None
                await _until_lost(pc, stop, sources)
            await _end(client, pc)
            if _done(stop, sources):
                return
            _say("connection lost — reconnecting")
            lost_at = lost_at or time.monotonic()
            pause = 0.0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)


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
    return pc


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
