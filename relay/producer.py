"""Producer: one kind of media (video or audio) of a Feed, fanned out as encoded frames.

A Producer outlives the publisher's peer connection: when the clinic reconnects, the new
connection is attached to the same Producer, timestamps continue where they stopped, and viewers'
senders keep running (they just wait for the new stream's keyframe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import av

from . import recovery
from .codecs import TemporalLayer, clock_rate, is_keyframe, vp8_dimensions
from .consumer import Consumer, ForwardedFrame
from .forwarding import packetizer

logger = logging.getLogger(__name__)

KEYFRAME_REQUEST_INTERVAL_S = 0.5
"""At most two keyframe requests per keyframe round trip reach the publisher, however many viewers
ask: a request waits this long after the previous one, unless a keyframe arrived in between."""
RATE_WINDOW_S = 4.0
"The bitrate is measured over the last 4 s (two keyframe intervals of a browser)."
RATE_MIN_S = 1.0
"Less than a second of frames says nothing yet about the rate."


class Producer:
    def __init__(self, kind: str, codec: str, label: str) -> None:
        self.kind = kind
        self.codec = codec
        self.label = label
        self.time_base = Fraction(1, clock_rate(kind))
        self.consumers: set[Consumer] = set()
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.discontinuities = 0
        self.keyframe_requests = 0
        "Keyframe requests (PLI) sent to the publisher, after rate limiting (``/metrics``)."
        self.last_frame_at: float | None = None
        self.dimensions: tuple[int, int] | None = None
        self.clock_origin: float | None = None
        """``time.monotonic()`` at which a frame with pts 0 would have arrived: maps the relay clock
        to arrival time (the recorder aligns tracks with it). The least ``arrival - pts`` seen
        since the publisher connection began, so a late first packet does not skew it."""
        self._send_pli: Callable[[], bool] | None = None
        self._pts_offset = 0
        self._last_pts: int | None = None
        self._rebase = False
        self._last_request_at = 0.0
        self._deferred_request: asyncio.TimerHandle | None = None
        self._packetizer = packetizer(codec)
        self._recent: deque[tuple[float, int]] = deque()
        "(arrival, size) of the frames of the last ``RATE_WINDOW_S``."
        self._recent_bytes = 0
        self._sender_report: tuple[int, float] | None = None
        "(pts, wall ms) of the publisher's latest RTCP sender report (``relay.media_clock``)."

    def bitrate(self) -> float | None:
        """Bits per second over the last ``RATE_WINDOW_S`` (None: too little seen yet). Kept by
        the Producer, so a viewer arriving now knows the stream's rate at once."""
        self._forget(time.monotonic())
        if not self._recent:
            return None
        span = self._recent[-1][0] - self._recent[0][0]
        return self._recent_bytes * 8 / span if span >= RATE_MIN_S else None

    def _count(self, size: int) -> None:
        now = time.monotonic()
        self._recent.append((now, size))
        self._recent_bytes += size
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent_bytes -= self._recent.popleft()[1]

    @property
    def last_pts(self) -> int | None:
        """pts of the latest frame, on the continuous relay clock: where the stream is now."""
        return self._last_pts

    # -- source side -------------------------------------------------------------------------

    def attach(self, send_pli: Callable[[], bool], continuous: bool = False) -> None:
        """A (new) publisher connection feeds this Producer from now on. ``continuous``: it goes
        on exactly after the last frame of the previous one (``relay.upstream``'s standby
        session taking over), so viewers keep their place instead of waiting for a keyframe."""
        self._send_pli = send_pli
        self._rebase = self._last_pts is not None
        self._sender_report = None
        self.clock_origin = None
        if not continuous:
            for consumer in self.consumers:
                consumer.desync()

    def detach(self) -> None:
        self._send_pli = None

    def on_frame(self, data: bytes, timestamp: int, layer: TemporalLayer | None = None) -> None:
        """An encoded frame from the publisher (called on the event loop by the receiver tap)."""
        keyframe = is_keyframe(self.codec, data)
        if self._rebase:
            self._rebase_after_gap(timestamp)
        pts = timestamp + self._pts_offset
        self._last_pts = pts
        self.frames += 1
        self.bytes += len(data)
        self.mark_alive()
        self._count(len(data))
        origin = time.monotonic() - pts / self.time_base.denominator
        if self.clock_origin is None or origin < self.clock_origin:
            self.clock_origin = origin
        if keyframe and self.kind == "video":
            self.keyframes += 1
            self._keyframe_arrived()
            if self.codec == "VP8":
                self.dimensions = vp8_dimensions(data) or self.dimensions
        if not self.consumers:
            return
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = self.time_base
        payloads, rtp_timestamp = self._packetizer.pack(packet)
        frame = ForwardedFrame(packet, payloads, rtp_timestamp, keyframe, layer)
        for consumer in tuple(self.consumers):
            consumer.push(frame)

    def on_sender_report(self, wall_ms: float, timestamp: int) -> None:
        """The publisher's clock read ``wall_ms`` at ``timestamp`` (its frames' clock, as in
        ``on_frame``). Ignored until a new connection's first frame set its offset."""
        if not self._rebase:
            self._sender_report = (timestamp + self._pts_offset, wall_ms)

    @property
    def sender_report(self) -> tuple[int, float] | None:
        """(pts, wall ms) of the publisher's latest RTCP sender report (None: none yet)."""
        return self._sender_report

    def capture_ms(self, pts: int) -> float | None:
        """When the publisher captured the frame of ``pts``, on its wall clock (ms since the UNIX
        epoch; None before its first sender report): its page matches its own preview frames."""
        if self._sender_report is None:
            return None
        report_pts, wall_ms = self._sender_report
        return wall_ms + (pts - report_pts) * 1000 / self.time_base.denominator

    def _rebase_after_gap(self, timestamp: int) -> None:
        """A new publisher connection restarts its timestamps at 0. Viewers keep their session,
        so continue the clock where it stopped *plus the wall-clock time that passed*: a stream
        whose timestamps lag real time makes browsers grow their jitter buffer (measured: 5 ms →
        280 ms of added delay after a clinic restart)."""
        assert self._last_pts is not None and self.last_frame_at is not None
        gap = max(time.monotonic() - self.last_frame_at, 1 / 30)
        self._pts_offset = self._last_pts + int(gap * clock_rate(self.kind)) - timestamp
        self._rebase = False

    def mark_alive(self) -> None:
        """Media arrived by another path (transcode mode): keeps the feed's liveness right."""
        self.last_frame_at = time.monotonic()

    def on_discontinuity(self) -> None:
        """The receiver dropped data: every viewer waits for the next keyframe (requested)."""
        self.discontinuities += 1
        for consumer in self.consumers:
            consumer.desync()
        self.request_keyframe()

    # -- viewer side -------------------------------------------------------------------------

    def consume(self, label: str, on_push: Callable[[], None] = lambda: None) -> Consumer:
        consumer = Consumer(self.kind, self.request_keyframe, self._release, label, on_push)
        self.consumers.add(consumer)
        if self.kind == "video":
            self.request_keyframe()
        return consumer

    def _release(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)

    def request_keyframe(self) -> None:
        """Rate-limited and coalesced: a request inside the window is deferred to its end, never
        dropped (a viewer joining 200 ms after another still needs its keyframe)."""
        if self.kind != "video" or self._deferred_request is not None:
            return
        wait = self._last_request_at + KEYFRAME_REQUEST_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._send_keyframe_request()
        else:
            loop = asyncio.get_running_loop()
            self._deferred_request = loop.call_later(wait, self._send_deferred)

    def _keyframe_arrived(self) -> None:
        """A keyframe answers every request made before it: the next request may go at once.

        The limit is there against request storms (many viewers asking for the same keyframe),
        not to space keyframes: without this, a keyframe the relay needs after giving up on a
        lost packet waited up to 0.5 s behind the request the recorder makes every 2 s.
        """
        if not recovery.current().rearm_keyframe_requests:
            return
        self._last_request_at = 0.0
        if self._deferred_request is not None:
            self._deferred_request.cancel()
            self._deferred_request = None

    def _send_deferred(self) -> None:
        self._deferred_request = None
        self._send_keyframe_request()

    def _send_keyframe_request(self) -> None:
        if self._send_pli is not None and self._send_pli():
            self._last_request_at = time.monotonic()
            self.keyframe_requests += 1
            logger.debug("Producer(%s) keyframe requested", self.label)

    def close(self) -> None:
        if self._deferred_request is not None:
            self._deferred_request.cancel()
            self._deferred_request = None
        self._send_pli = None
        for consumer in tuple(self.consumers):
            consumer.stop()
