"""Consumer: one viewer's (or the recorder's) copy of a Producer's encoded frames.

A Consumer is a ``MediaStreamTrack`` whose ``recv()`` yields ``av.Packet``: aiortc's sender then
packetizes it without encoding. Its queue is bounded. A video Consumer only ever starts at a
keyframe, and never drops a single delta frame (aiortc numbers forwarded frames consecutively, so
a viewer could not see the gap and would decode garbage): on overflow it flushes, waits for the
next keyframe and asks for one.

A reader that never blocks (a viewer's send loop on a UDP pair, the recorder) has its frames
pushed instead (``deliver_to``): handed over in the Producer's call, with no queue and no task
woken per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .codecs import TemporalLayer

logger = logging.getLogger(__name__)

VIDEO_QUEUE_FRAMES = 60
AUDIO_QUEUE_FRAMES = 50


class ForwardedFrame(NamedTuple):
    """One encoded frame as fanned out: packetized once by the Producer for every viewer."""

    packet: av.Packet[Any]
    payloads: list[bytes]
    timestamp: int
    keyframe: bool
    layer: TemporalLayer | None = None
    "Its VP8 temporal layer, when the publisher labelled it (``relay.decoded`` reads it)."


class Consumer(MediaStreamTrack):
    def __init__(
        self,
        kind: str,
        request_keyframe: Callable[[], None],
        on_stop: Callable[[Consumer], None],
        label: str,
        on_push: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.label = label
        self._request_keyframe = request_keyframe
        self._on_stop = on_stop
        self._on_push = on_push
        "Told after each queued frame: lets ``relay.selector`` wait on two Consumers at once."
        size = VIDEO_QUEUE_FRAMES if kind == "video" else AUDIO_QUEUE_FRAMES
        self._queue: asyncio.Queue[ForwardedFrame | None] = asyncio.Queue(maxsize=size)
        self.current: ForwardedFrame | None = None
        self._synced = kind != "video"
        self._sink: Callable[[ForwardedFrame], None] | None = None
        self._ended = asyncio.Event()
        self.frames_forwarded = 0
        self.frames_dropped = 0

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def queued(self) -> int:
        """Frames waiting to be read (``relay.selector`` swaps to a source once it flows)."""
        return self._queue.qsize()

    def push(self, frame: ForwardedFrame) -> None:
        """Called by the Producer on the event loop for every frame; never blocks."""
        if self.readyState != "live":
            return
        if self._queue.full():
            self._overflow()
        if not self._synced:
            if not frame.keyframe:
                self.frames_dropped += 1
                self._request_keyframe()
                return
            self._synced = True
        self.frames_forwarded += 1
        if self._sink is not None:
            self._hand(self._sink, frame)
            return
        self._queue.put_nowait(frame)
        self._on_push()

    def deliver_to(self, sink: Callable[[ForwardedFrame], None]) -> None:
        """From now on hand each frame to ``sink`` as it is pushed (it becomes ``current``),
        first those queued; ``recv`` is not used any more (``ended`` waits for the stop).
        ``sink`` must not block; if it raises, the Consumer stops (as a reading task would end)."""
        self._sink = sink
        while self._sink is sink and not self._queue.empty():
            frame = self._queue.get_nowait()
            if frame is not None:
                self._hand(sink, frame)

    def _hand(self, sink: Callable[[ForwardedFrame], None], frame: ForwardedFrame) -> None:
        self.current = frame
        hand_over(sink, frame, self)

    async def ended(self) -> None:
        """Until the Consumer stops (a pushed reader's wait)."""
        await self._ended.wait()

    def desync(self) -> None:
        """The source lost data: hold everything until the next keyframe."""
        if self.kind == "video":
            self._synced = False

    def request_keyframe(self) -> None:
        """A viewer's PLI/FIR arrives here (see ``relay.forwarding.on_keyframe_request``)."""
        self._request_keyframe()

    def _overflow(self) -> None:
        if self.kind == "video":
            dropped = self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._synced = False
            self.frames_dropped += dropped
            logger.warning("Consumer(%s) fell behind: dropped %d frames", self.label, dropped)
            self._request_keyframe()
        else:
            self._queue.get_nowait()
            self.frames_dropped += 1

    def poll(self) -> ForwardedFrame | None:
        """The next queued frame without waiting (None: none queued, or stopped); it becomes
        ``current``. For a reader of several Consumers (``relay.selector``), never with ``recv``."""
        frame = None if self._queue.empty() else self._queue.get_nowait()
        if frame is not None:
            self.current = frame
        return frame

    async def recv(self) -> av.Packet[Any]:
        """The next encoded frame. ``current`` keeps its packetization for the sender."""
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        self.current = frame
        return frame.packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._sink = None
            self._ended.set()
            self._on_stop(self)
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)  # wake a pending recv()


class Pushing(Protocol):
    """A track that pushes its frames to a reader (a Consumer, a Selector)."""

    label: str

    def stop(self) -> None: ...


def hand_over(
    sink: Callable[[ForwardedFrame], None], frame: ForwardedFrame, track: Pushing
) -> bool:
    """``sink(frame)``. A reader that raises stops ``track``, as a reading task would end, named
    in one warning line (the Producer's other readers still get the frame). False then."""
    try:
        sink(frame)
    except Exception as exc:
        logger.warning(
            "%s(%s) reader failed, stopped (%s: %s)",
            type(track).__name__,
            track.label,
            type(exc).__name__,
            exc,
        )
        track.stop()
        return False
    return True
