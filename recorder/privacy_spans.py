"""The spans of a recording filmed outside the body, as the privacy guard reports them.

The guard dates each change on the relay clock; the recorder turns that into the open segment's
file time (``(pts - video_pts_start) / 90000``) and, once the segment's place on the recording
clock is known (its ``offset_s``, final when it closes), into recording seconds for the manifest
(``"out_of_body": [{"start_s", "end_s"}]``, docs/recording.md). The media files are never touched:
replay and exports read the spans and hide those parts themselves (``blurred``).
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from .manifest import OutOfBodySpan


class PrivacySpans:
    """Spans of closed segments on the recording clock, the open segment's on its file clock."""

    def __init__(self, kept: list[OutOfBodySpan], end_s: float) -> None:
        """``kept``: a resumed recording's spans; one left open (the server stopped while the
        camera was out) ends where the recording so far ends."""
        self.out_of_body = False
        "The guard's latest word (a new segment starts inside a span if it is still out)."
        self._kept = [
            OutOfBodySpan(span.start_s, max(span.start_s, end_s)) if span.end_s is None else span
            for span in kept
        ]
        self._open: list[tuple[float, float | None]] = []
        "The open segment's spans in file seconds."

    def segment_started(self) -> None:
        self._open = [(0.0, None)] if self.out_of_body else []

    def note(self, out_of_body: bool, file_t: float | None) -> None:
        """A change; ``file_t``: when, in the open segment's file (None: no segment is open, or
        the feed ended — the segment's end closes the span)."""
        self.out_of_body = out_of_body
        if file_t is None:
            return
        spanning = bool(self._open) and self._open[-1][1] is None
        if out_of_body and not spanning:
            self._open.append((file_t, None))
        elif not out_of_body and spanning:
            start = self._open[-1][0]
            self._open[-1] = (start, max(start, file_t))

    def segment_ended(self, offset_s: float, duration_s: float) -> None:
        self._kept = self.spans(offset_s, duration_s)
        self._open = []

    def spans(self, offset_s: float, duration_s: float | None = None) -> list[OutOfBodySpan]:
        """Every span on the recording clock, the open segment placed at ``offset_s``; a span
        still open ends at ``duration_s`` if given (the segment closed), else stays open."""
        placed = []
        for start, end in self._open:
            if end is None and duration_s is not None:
                end = max(start, duration_s)
            placed.append(
                OutOfBodySpan(
                    round(offset_s + start, 3), None if end is None else round(offset_s + end, 3)
                )
            )
        return self._kept + placed


BLUR_CELLS = 24
"A blurred picture keeps about this many cells across: colours and movement, no face, no name."


def blurred(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` (any format) as a strongly blurred yuv420p picture of the same size: shrunk to
    ``BLUR_CELLS`` across and smoothly scaled back up, plane by plane (cheap at any size)."""
    width, height = frame.width - frame.width % 2, frame.height - frame.height % 2
    data = frame.reformat(width, height, "yuv420p").to_ndarray()
    planes = (
        data[:height],
        data[height : height + height // 4].reshape(height // 2, width // 2),
        data[height + height // 4 :].reshape(height // 2, width // 2),
    )
    out = np.empty_like(data)
    for plane, target in zip(
        planes,
        (
            out[:height],
            out[height : height + height // 4].reshape(height // 2, width // 2),
            out[height + height // 4 :].reshape(height // 2, width // 2),
        ),
        strict=True,
    ):
        h, w = plane.shape
        cells = (max(1, BLUR_CELLS * w // width), max(1, BLUR_CELLS * h // width))
        small = cv2.resize(plane, cells, interpolation=cv2.INTER_AREA)
        target[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    picture = av.VideoFrame.from_ndarray(out, format="yuv420p")
    picture.pts, picture.time_base = frame.pts, frame.time_base
    return picture


def covered(spans: list[OutOfBodySpan], t: float) -> bool:
    """Whether recording time ``t`` lies in one of ``spans``."""
    return any(span.covers(t) for span in spans)
