"""``Tracker``: where each anchored mark is in the endoscope picture now.

Why: the scope and the tissue move all the time, so a mark drawn on the inferior turbinate slides
off it within a second. The tracker follows the region under each anchored mark
(``relay/tracker_mark.py``) and gives, per analysis frame, a ``Placement``: the affine that maps
the mark as drawn to where that tissue is now, a confidence, and ``lost`` when it cannot tell —
a mark is greyed then, never shown confidently in the wrong place.

Pure and synchronous (no asyncio, no av): the caller gives small gray frames from its own thread
(the shared decoder's), with their relay pts. A lock makes ``anchor``/``forget`` safe from another
thread. About ``history_s`` of frames are kept so a mark is anchored on the frame its author was
looking at, then followed through the kept frames up to now.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relay.tracker_mark import (
    LK_LEVELS,
    Frame,
    MarkTrack,
    Matrix,
    Points,
    lk,
    orb_features,
    prepare,
)

MarkKey = tuple[str, str]
"""(author identity, mark id): mark ids are per author."""
CLOCK_RATE = 90_000
"""The relay pts clock (Hz)."""
REDETECT_EVERY = 3
"""While a mark is lost, look for it again on every n-th frame (ORB on the whole frame)."""
CHECK_EVERY = 2
"""Each followed mark is checked against its reference every n-th frame (the flow in between)."""


@dataclass(frozen=True)
class Placement:
    """Where an anchored mark is in one analysis frame."""

    matrix: tuple[float, float, float, float, float, float]
    """2×3 affine in normalised frame coordinates (0..1): x' = a·x + b·y + c,
    y' = d·x + e·y + f, mapping the mark's points as drawn to where they are in this frame."""
    confidence: float
    """0..1."""
    lost: bool
    """True: show the mark greyed at its last confident place (``matrix`` is that place)."""


class Tracker:
    """The anchored marks of one feed, followed over the analysis frames given to ``update``."""

    def __init__(self, width: int, height: int, history_s: float = 1.0) -> None:
        if width < 32 or height < 32:
            raise ValueError("the analysis frames must be at least 32×32")
        self.width, self.height = width, height
        self.history_pts = int(history_s * CLOCK_RATE)
        self._history: deque[Frame] = deque()
        self._marks: dict[MarkKey, MarkTrack] = {}
        self._pending: dict[MarkKey, Points] = {}
        self._lock = threading.Lock()
        self._count = 0
        # pixels ↔ normalised (a pixel's centre is at (x + 0.5) / width)
        self._to_norm: Matrix = np.array(
            [[1 / width, 0, 0.5 / width], [0, 1 / height, 0.5 / height], [0, 0, 1]]
        )
        self._to_px: Matrix = np.asarray(np.linalg.inv(self._to_norm), np.float64)

    @property
    def keys(self) -> frozenset[MarkKey]:
        with self._lock:
            return frozenset(self._marks) | frozenset(self._pending)

    def update(self, gray: np.ndarray, pts: int) -> dict[MarkKey, Placement]:
        """Follow every mark into this frame (uint8 gray, the analysis size); their placements."""
        if gray.dtype != np.uint8 or gray.shape != (self.height, self.width):
            raise ValueError(
                f"expected a {self.width}×{self.height} uint8 gray frame, got {gray.shape} "
                f"{gray.dtype}"
            )
        with self._lock:
            frame = prepare(np.ascontiguousarray(gray), int(pts))
            before = self._history[-1] if self._history else None
            if before is not None and frame.pts <= before.pts:
                self._history.clear()  # the clock went back: a new stream, nothing to follow from
                before = None
            self._history.append(frame)
            while frame.pts - self._history[0].pts > self.history_pts:
                self._history.popleft()
            for key, points in list(self._pending.items()):
                self._keep(key, MarkTrack(frame, points))
                del self._pending[key]
            self._count += 1
            if before is not None and self._marks:
                self._step(list(self._marks.values()), before, frame)
            return {key: self._placement(mark) for key, mark in self._marks.items()}

    def anchor(self, key: MarkKey, points: Sequence[tuple[float, float]], pts: int | None) -> None:
        """Track the region under ``points`` (normalised, as drawn on the frame with ``pts``;
        None: the latest), caught up through the kept frames to now. That catch-up is CV work
        (a few ms per kept frame): call it off the event loop. Anchoring a key again replaces
        it; before any frame, the mark is anchored on the first one. A region with nothing to
        hold on to (too few corners: a flat, featureless picture) is not anchored at all: the
        mark has no placement and stays where it was drawn, in its colour — greying it would say
        it lost a place it never had."""
        px = self._points(points)
        with self._lock:
            self._marks.pop(key, None)
            self._pending.pop(key, None)
            if not self._history:
                self._pending[key] = px  # anchored on the first frame to come
                return
            start = len(self._history) - 1
            if pts is not None:
                older = [i for i, f in enumerate(self._history) if f.pts <= pts]
                start = older[-1] if older else 0
            frames = list(self._history)[start:]
            mark = MarkTrack(frames[0], px)
            if not self._keep(key, mark):
                return
            for before, now in zip(frames, frames[1:], strict=False):
                self._step([mark], before, now)

    def _keep(self, key: MarkKey, mark: MarkTrack) -> bool:
        """Follow ``mark`` if its region has enough to hold on to (see ``anchor``)."""
        if mark.lost:
            return False
        self._marks[key] = mark
        return True

    def forget(self, key: MarkKey) -> None:
        with self._lock:
            self._marks.pop(key, None)
            self._pending.pop(key, None)

    def _points(self, points: Sequence[tuple[float, float]]) -> Points:
        """Normalised points → analysis pixels; ValueError for anything else."""
        try:
            array = np.array(points, np.float64).reshape(-1, 2)
        except (TypeError, ValueError) as error:
            raise ValueError("points must be (x, y) pairs") from error
        if len(array) == 0 or not np.isfinite(array).all():
            raise ValueError("a mark needs at least one finite point")
        if (array < -0.5).any() or (array > 1.5).any():
            raise ValueError("points must be normalised frame coordinates (0..1)")
        homogeneous = np.hstack([array, np.ones((len(array), 1))])
        return np.asarray((self._to_px @ homogeneous.T)[:2].T, np.float32)

    def _step(self, marks: list[MarkTrack], before: Frame, now: Frame) -> None:
        """One frame for these marks: one forward–backward flow for all the followed ones,
        re-detection for the lost ones."""
        corners = [m.corners(before) for m in marks]
        everything = np.concatenate(corners)
        moved, good = everything, np.zeros(len(everything), bool)
        if len(everything):
            moved, good = lk(before.gray, now.gray, everything, LK_LEVELS)
        start = 0
        for i, (mark, own) in enumerate(zip(marks, corners, strict=True)):
            end = start + len(own)
            # each mark checks its place every CHECK_EVERY frames, in turn
            check = (self._count + i) % CHECK_EVERY == 0
            mark.follow(now, moved[start:end], good[start:end], check, self._count)
            start = end
        for found in marks:
            if found.refound is not None:
                for other in marks:
                    other.guess_from(found)
                found.refound = None
        lost = [m for m in marks if m.adrift]
        if lost and self._count % REDETECT_EVERY == 0:
            features = orb_features(now)
            for mark in lost:
                mark.redetect(now, features)

    def _placement(self, mark: MarkTrack) -> Placement:
        shown = self._to_norm @ mark.shown @ self._to_px
        a, b, c, d, e, f = (float(v) for v in shown[:2].ravel())
        confidence = 0.0 if math.isnan(mark.confidence) else mark.confidence
        return Placement((a, b, c, d, e, f), round(min(1.0, max(0.0, confidence)), 3), mark.lost)
