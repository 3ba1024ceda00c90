"""Anchoring: marks drawn "on the tissue" follow it — the live half of ``relay.tracker``.

Per Router, and only while the board holds a visible anchored mark: the shared decoder
(``Router.decoded``) hands every fresh endoscope frame to the decode thread, which keeps as few as
give ``MIN_RATE_HZ`` (``Stride``), downscales them to gray at the tracker's analysis size
(``ANALYSIS_WIDTH``), brings the Tracker in step with the board — a new anchored mark is anchored
on the frame its author was looking at (``frame_pts``), one whose points changed (a pen stroke
growing) is anchored again, one gone (removed, undone, cleared, archived, faded) is forgotten — and
runs it. Each analysed frame's placements go to the board (the burned-in rendition draws through
them, ``AnnotationBoard.placed_at``) and, at most ``MAX_RATE_HZ`` times a second, to the event loop
as a ``Placements`` (the app sends it to every connection of the consultation and logs it). When
the last anchored mark goes, sampling stops and one empty ``Placements`` says so. Nothing here runs
on the event loop but the bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import av

from .annotations import AnnotationBoard, MarkKey, Point
from .codecs import VIDEO_CLOCK_RATE
from .decoded import JITTER, DecodedFeed, Sampling
from .ids import ConsultationId
from .tracker import Placement, Tracker

logger = logging.getLogger(__name__)

ANALYSIS_WIDTH = 320
"""Width of the gray frames the tracker analyses (the height follows the picture's aspect): the
tracker's default analysis size, 320×180 for 16:9 (docs/benchmarks.md, tracking accuracy)."""
MIN_RATE_HZ = 15
"""Frames analysed per second at least: the fewest that keep this rate, counted in frames of the
source — every other frame at 30 fps (15 Hz), every 4th at 60 fps, every frame at 25 fps (a PAL
tower: every other would give 12.5 Hz). Analysing all 30 halves the lost-track rate (a mark is
found again sooner) for twice the CPU, over the 15 % of a core a consultation may take for
tracking (docs/benchmarks.md, tracking accuracy)."""
MAX_RATE_HZ = 30
"Placements sent per second at most."
REANCHOR_EVERY_S = 0.3
"""A mark whose points change (a pen stroke streaming as it is drawn) is anchored again at most
this often (media time), and once more when it stops changing: anchoring catches up through up
to a second of kept frames, too much to repeat for every update of a stroke (measured: the
annotation latency's p95 doubled, bench.stroke_latency)."""


@dataclass(frozen=True)
class Placements:
    """Where the anchored marks are on the analysed endoscope frame of ``pts`` (90 kHz relay
    clock); ``capture_ms``: that frame's capture time on the clinic's clock (None: not known
    yet). No marks: none is anchored any more."""

    cid: ConsultationId
    pts: int
    capture_ms: float | None
    marks: Mapping[MarkKey, Placement]

    def marks_json(self) -> list[dict[str, Any]]:
        """The ``marks`` of the ``placements`` message and log entry (plain JSON numbers: the
        tracker's may be numpy scalars)."""
        return [
            {
                "author": author,
                "id": mark_id,
                "m": [round(float(v), 6) for v in p.matrix],
                "confidence": round(float(p.confidence), 3),
                "lost": bool(p.lost),
            }
            for (author, mark_id), p in self.marks.items()
        ]


class Stride:
    """Which frames the tracker analyses: every n-th frame of the source, n the largest that keeps
    ``MIN_RATE_HZ`` at the source's frame rate (the median interval of its recent frames' pts)."""

    def __init__(self) -> None:
        self.analysed_pts: int | None = None
        self.frame_pts: int | None = None
        self.intervals: deque[int] = deque(maxlen=15)

    def due(self, pts: int) -> bool:
        """Whether to analyse the frame of ``pts``: the n-th since the last one analysed, or the
        first after a gap that long (a lost frame). A clock going back (a new stream) starts
        over."""
        if self.frame_pts is not None:
            if pts > self.frame_pts:
                self.intervals.append(pts - self.frame_pts)
            else:
                self.intervals.clear()
                self.analysed_pts = None
        self.frame_pts = pts
        if self.analysed_pts is not None and self.intervals:
            interval = statistics.median(self.intervals)
            n = max(1, int(VIDEO_CLOCK_RATE / MIN_RATE_HZ / interval + 0.05))
            if pts - self.analysed_pts < (n - 0.5) * interval:
                return False
        self.analysed_pts = pts
        return True


class _Follower:
    """One run of the tracking, from the first anchored mark to the last: its Tracker lives in
    the decode thread (``on_frame``); the loop only ever sets ``stopped``."""

    def __init__(self, anchoring: Anchoring) -> None:
        self.anchoring = anchoring
        self.board = anchoring.board
        self.loop = asyncio.get_running_loop()
        self.stopped = False
        self.tracker: Tracker | None = None
        self.anchored: dict[MarkKey, tuple[tuple[Point, ...], int, int]] = {}
        """The marks the tracker follows: the points it anchored, the pts it did so at, and how far
        (pts) the author's picture was behind the relay when the mark came."""
        self.sent_pts: int | None = None
        self.emptied = False
        self.stride = Stride()

    def on_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """In the decode thread: one fresh frame analysed."""
        if self.stopped:
            return
        marks = {a.key: a for a in self.board.anchored(time.time())}
        if not marks:
            if not self.emptied:  # the last one faded: the loop stops the sampling
                self.emptied = True
                self.loop.call_soon_threadsafe(self.anchoring.follow)
            return
        if not self.stride.due(pts):
            return
        width = ANALYSIS_WIDTH
        height = max(32, round(width * frame.height / frame.width / 2) * 2)
        if self.tracker is None or (self.tracker.width, self.tracker.height) != (width, height):
            self.tracker, self.anchored = Tracker(width, height), {}
        gray = frame.reformat(width=width, height=height, format="gray").to_ndarray()
        for key in self.anchored.keys() - marks.keys():
            self.tracker.forget(key)
            del self.anchored[key]
        found = self.tracker.update(gray, pts)
        for key, annotation in marks.items():
            points, anchored = annotation.mark.points, self.anchored.get(key)
            if anchored is None:
                # how far behind the relay its author's picture was: later points of the same
                # stroke were drawn on the picture that far behind (the first frame is soon gone)
                shown = annotation.frame_pts
                lag = 0 if shown is None else max(0, pts - shown)
                self.tracker.anchor(key, points, shown)
                self.anchored[key] = points, pts, lag
            elif anchored[0] != points and pts - anchored[1] >= REANCHOR_EVERY_S * VIDEO_CLOCK_RATE:
                # on the frame its author saw as these points were drawn; not known: as far
                # behind now as the author's picture was when the mark came
                shown = annotation.frame_pts
                self.tracker.anchor(key, points, pts - anchored[2] if shown is None else shown)
                self.anchored[key] = points, pts, anchored[2]
        placements = {key: p for key, p in found.items() if key in marks}
        if not placements:
            return
        self.board.place(pts, placements)
        interval = VIDEO_CLOCK_RATE / MAX_RATE_HZ * (1 - JITTER)
        if self.sent_pts is None or not 0 <= pts - self.sent_pts < interval:
            self.sent_pts = pts
            self.loop.call_soon_threadsafe(self.anchoring.deliver, self, pts, placements)


class Anchoring:
    """The anchored marks of one Router's board, followed on its endoscope video (see the
    module). The Relay sets ``on_placements`` and ``enabled`` (``ENDOLINK_TRACKING``)."""

    def __init__(
        self,
        board: AnnotationBoard,
        decoded: DecodedFeed,
        capture_ms: Callable[[int], float | None],
        cid: ConsultationId,
        label: str,
    ) -> None:
        self.board = board
        self.cid = cid
        self.label = label
        self.enabled = True
        self.on_placements: Callable[[Placements], None] = lambda placements: None
        self.sent = 0
        "Placements handed to ``on_placements`` (empty ones included)."
        self._decoded = decoded
        self._capture_ms = capture_ms
        self._sampling: Sampling | None = None
        self._follower: _Follower | None = None
        self._last_pts: int | None = None
        "pts of the latest non-empty Placements sent: the empty one carries it too."
        self._closed = False
        board.on_change.append(self.follow)

    @property
    def active(self) -> bool:
        return self._sampling is not None

    def follow(self) -> None:
        """On the loop, after the board changed: sample while a visible anchored mark exists."""
        if not self.enabled or self._closed:
            return
        wanted = bool(self.board.anchored(time.time()))
        if wanted and self._sampling is None:
            self._follower = _Follower(self)
            self._sampling = self._decoded.sample(
                0.0, self._follower.on_frame, f"{self.label} anchoring"
            )
            logger.info("Anchoring(%s) tracking started", self.label)
        elif not wanted and self._sampling is not None:
            self._stop()
            if self._last_pts is not None:
                self._send(Placements(self.cid, self._last_pts, None, {}))
                self._last_pts = None

    def deliver(
        self, follower: _Follower, pts: int, placements: Mapping[MarkKey, Placement]
    ) -> None:
        """On the loop: one analysed frame's placements, unless the run that made them ended."""
        if follower is not self._follower or self._closed:
            return
        self._last_pts = pts
        self._send(Placements(self.cid, pts, self._capture_ms(pts), placements))

    def _send(self, placements: Placements) -> None:
        self.sent += 1
        try:
            self.on_placements(placements)
        except Exception:  # the app's fan-out must never stop the tracking
            logger.exception("Anchoring(%s) placements not delivered", self.label)

    def _stop(self) -> None:
        assert self._sampling is not None and self._follower is not None
        self._follower.stopped = True
        self._sampling.stop()
        self._sampling = self._follower = None
        self.board.place(0, {})
        logger.info("Anchoring(%s) tracking stopped", self.label)

    def close(self) -> None:
        """The Router closes: no more tracking, nothing more sent (nobody is left to tell)."""
        self._closed = True
        if self._sampling is not None:
            self._stop()
        if self.follow in self.board.on_change:
            self.board.on_change.remove(self.follow)
