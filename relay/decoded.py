"""DecodedFeed: the endoscope ORIGINAL decoded once per consultation, for the computer-vision
samplers (anchored marks, the picture-quality guard, the privacy guard).

Decoding costs a core's fraction per consultation, so it runs only while someone samples it: the
first ``sample()`` starts a worker — a Consumer of the endoscope Producer → a bounded hand-off →
ONE decode thread (``thread_count`` 1, its CPU counted in ``cpu_s``) — and the last
``Sampling.stop()`` stops it (the thread ends by itself; ``close()`` joins it off the loop). The
hand-off is the Rendition's (``hand_over``): when the thread cannot decode at the source rate, the
backlog is dropped and decoding restarts at the next (requested) keyframe.

Not every frame is decoded (``relay.decode_policy``): frames nothing depends on, unless a
sampler is due at their pts, and the higher temporal layers of a layered clinic (VP8 L1T3),
unless a sampler wants more than the base layer's 7.5 frames a second.

Samplers are called IN THE DECODE THREAD with the decoded frame and its pts (90 kHz relay clock),
each at most every ``every_s`` of media time, and only with fresh frames (``fresh``): a thread that
catches up decodes the backlog without analysing it. A sampler must be short (downscale first);
its exceptions are logged once a minute and never end the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import av
from aiortc.mediastreams import MediaStreamError

from .codecs import VIDEO_CLOCK_RATE, TemporalLayer, is_keyframe
from .consumer import Consumer
from .decode_policy import DecodePolicy
from .producer import Producer

logger = logging.getLogger(__name__)

INBOX_FRAMES = 30
"Packets handed to a decode thread and not yet decoded (1 s at 30 fps) before it is resynced."
STALE_S = 0.1
"A frame this old with a newer one waiting is skipped (three frame intervals at 30 fps)."
SHOW_EVERY_S = 0.2
"However stale, a frame is shown when none was for this long (5 fps floor)."
JITTER = 0.2
"A sampler's interval may come this fraction early: capture timestamps jitter by a few ms."
ERROR_LOG_INTERVAL_S = 60.0
JOIN_TIMEOUT_S = 5.0
DECODERS = {"VP8": "vp8", "H264": "h264"}


class Handed(NamedTuple):
    """A packet handed to a decode thread."""

    packet: av.Packet[Any]
    arrived: float
    "``time.monotonic()`` when it was handed over."
    keyframe: bool
    "As the Producer found it (``ForwardedFrame.keyframe``)."
    layer: TemporalLayer | None


Inbox = queue.Queue["Handed | None"]
OnFrame = Callable[[av.VideoFrame, int], None]


def fresh(age_s: float, since_shown_s: float, newer_waiting: bool) -> bool:
    """Use a decoded frame that waited ``age_s``? Not when it is stale (older than ``STALE_S``
    with a newer one waiting), unless nothing was used for ``SHOW_EVERY_S``."""
    return not newer_waiting or age_s < STALE_S or since_shown_s >= SHOW_EVERY_S


def new_decoder(codec: str) -> av.VideoCodecContext:
    """A decoder on the calling thread only (``thread_count`` 1: its CPU is the caller's)."""
    decoder = av.CodecContext.create(DECODERS[codec], "r")
    if not isinstance(decoder, av.VideoCodecContext):
        raise TypeError(f"{DECODERS[codec]} is not a video decoder")
    decoder.thread_count = 1
    return decoder


async def hand_over(
    source: Consumer, inbox: Inbox, codec: str, label: str, on_resync: Callable[[], None]
) -> None:
    """Move ``source``'s packets into a worker's bounded ``inbox`` with their arrival time, until
    the source ends. A full inbox (the worker cannot even decode at the source rate) is dropped,
    a keyframe requested, and packets skipped until it comes (``on_resync`` is told)."""
    waiting_for_keyframe = False
    with contextlib.suppress(MediaStreamError):
        while True:
            packet = await source.recv()
            if waiting_for_keyframe:
                if not is_keyframe(codec, bytes(packet)):
                    continue
                waiting_for_keyframe = False
            try:
                current = source.current
                assert current is not None  # recv() set it
                inbox.put_nowait(Handed(packet, time.monotonic(), current.keyframe, current.layer))
            except queue.Full:
                drain(inbox)
                on_resync()
                waiting_for_keyframe = True
                source.request_keyframe()
                logger.warning("%s fell behind: resyncing", label)


def decode(
    decoder: av.VideoCodecContext,
    packet: av.Packet[Any],
    label: str,
    request_keyframe: Callable[[], None],
) -> list[av.VideoFrame]:
    """The frames of one packet; an undecodable one is logged and a keyframe requested
    (``request_keyframe`` is called in the decode thread: make it thread-safe)."""
    try:
        frames = decoder.decode(packet)
    except av.FFmpegError as exc:
        logger.info("%s undecodable frame: %s", label, exc)
        request_keyframe()
        return []
    return [f for f in frames if isinstance(f, av.VideoFrame)]


def drain(inbox: Inbox) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            inbox.get_nowait()


class Sampling:
    """One sampler of a DecodedFeed; ``stop()`` (on the event loop) ends it."""

    def __init__(self, feed: DecodedFeed, every_s: float, on_frame: OnFrame, label: str) -> None:
        self.label = label
        self.every_s = max(0.0, every_s)
        self.every = self.every_s * VIDEO_CLOCK_RATE * (1 - JITTER)
        "Least pts distance between two calls."
        self.on_frame = on_frame
        self.calls = 0
        self.errors = 0
        self.last_pts: int | None = None
        self._feed = feed
        self._logged_at = -ERROR_LOG_INTERVAL_S

    def stop(self) -> None:
        self._feed._stop_sampling(self)

    def due(self, pts: int) -> bool:
        """Would a frame at ``pts`` be passed to the sampler (its interval has passed)?"""
        return self.last_pts is None or not 0 <= pts - self.last_pts < self.every

    def offer(self, frame: av.VideoFrame, pts: int) -> None:
        """In the decode thread: call the sampler if its interval has passed."""
        if not self.due(pts):
            return
        self.last_pts = pts
        self.calls += 1
        try:
            self.on_frame(frame, pts)
        except Exception:
            self.errors += 1
            now = time.monotonic()
            if now - self._logged_at >= ERROR_LOG_INTERVAL_S:
                self._logged_at = now
                logger.exception("Sampling(%s) failed (%d times so far)", self.label, self.errors)


class _Worker:
    """One run of the decode thread, from the first sampler to the last."""

    def __init__(self, feed: DecodedFeed, source: Producer) -> None:
        self.feed = feed
        self.codec = source.codec
        self.loop = asyncio.get_running_loop()
        self.inbox: Inbox = queue.Queue(INBOX_FRAMES)
        self.source = source.consume(f"{feed.label} source")
        self.thread = threading.Thread(target=self._work, name=f"decoded {feed.label}", daemon=True)
        self.thread.start()
        self.pump = asyncio.ensure_future(
            hand_over(self.source, self.inbox, self.codec, repr(feed), self._resynced)
        )

    def _resynced(self) -> None:
        self.feed.resyncs += 1

    def stop(self) -> None:
        """Ends the pump and tells the thread to end (it does once the packet at hand is done)."""
        self.source.stop()
        self.pump.cancel()
        drain(self.inbox)
        self.inbox.put_nowait(None)

    def _work(self) -> None:
        decoder = new_decoder(self.codec)
        policy = DecodePolicy(self.codec, self._request_keyframe, self.feed.label)
        used_at = 0.0
        while (item := self.inbox.get()) is not None:
            packet, arrived, keyframe, layer = item
            started = time.thread_time()
            pts = packet.pts or 0
            if not policy.wanted(bytes(packet), pts, keyframe, layer, self.feed.samplings):
                self.feed.frames_not_decoded += 1
                self.feed.cpu_s += time.thread_time() - started
                continue
            frames = decode(decoder, packet, repr(self.feed), self._request_keyframe)
            self.feed.frames_decoded += len(frames)
            for frame in frames:
                now = time.monotonic()
                if not fresh(now - arrived, now - used_at, not self.inbox.empty()):
                    self.feed.frames_skipped += 1
                    continue
                used_at = now
                for sampling in self.feed.samplings:
                    sampling.offer(frame, frame.pts or 0)
            self.feed.cpu_s += time.thread_time() - started

    def _request_keyframe(self) -> None:
        self.loop.call_soon_threadsafe(self.source.request_keyframe)


class DecodedFeed:
    """The endoscope original, decoded while at least one sampler is on (see the module)."""

    def __init__(self, source: Producer, label: str) -> None:
        self._source = source
        self.label = label
        self.samplings: tuple[Sampling, ...] = ()
        "Read by the decode thread: replaced, never mutated."
        self.frames_decoded = 0
        self.frames_skipped = 0
        self.frames_not_decoded = 0
        "Frames the decode thread left undecoded (``relay.decode_policy``)."
        self.resyncs = 0
        self.cpu_s = 0.0
        "CPU time of the decode thread(s) with their samplers: decoding and analysis."
        self.closed = False
        self._worker: _Worker | None = None
        self._stopping: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"DecodedFeed({self.label})"

    @property
    def running(self) -> bool:
        return self._worker is not None

    def sample(self, every_s: float, on_frame: OnFrame, label: str) -> Sampling:
        """Call ``on_frame(frame, pts)`` in the decode thread at most every ``every_s`` (0: every
        fresh frame) until the returned Sampling is stopped. Call on the event loop."""
        sampling = Sampling(self, every_s, on_frame, label)
        if self.closed:
            return sampling  # the consultation is over: nothing will come
        self.samplings = (*self.samplings, sampling)
        if self._worker is None:
            self._worker = _Worker(self, self._source)
            logger.info("%s started for %s", self, label)
        return sampling

    def _stop_sampling(self, sampling: Sampling) -> None:
        if sampling not in self.samplings:
            return
        self.samplings = tuple(s for s in self.samplings if s is not sampling)
        if not self.samplings and self._worker is not None:
            self._stop_worker()

    def _stop_worker(self) -> None:
        assert self._worker is not None
        self._worker.stop()
        self._stopping = [t for t in self._stopping if t.is_alive()] + [self._worker.thread]
        self._worker = None
        logger.info(
            "%s stopped: %d decoded, %d not decoded, %d stale skipped, %d resyncs, %.1f s CPU",
            self,
            self.frames_decoded,
            self.frames_not_decoded,
            self.frames_skipped,
            self.resyncs,
            self.cpu_s,
        )

    async def close(self) -> None:
        """The Router closes: every sampler ends, the decode threads are joined off the loop."""
        self.closed = True
        self.samplings = ()
        if self._worker is not None:
            self._stop_worker()
        for thread in self._stopping:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("%s decode thread did not stop in time", self)
        self._stopping = []
