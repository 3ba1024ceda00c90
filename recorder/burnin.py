"""Burn-in for the annotated export: the marks drawn once, laid over every frame that shows them.

Drawing 20 anti-aliased marks on the three planes of a 720p frame costs ~11 ms of CPU, a third of
a frame interval at 30 fps; most frames of a recording show the same marks as the frame before.
So a set of marks that stays on screen is drawn once, by ``relay/overlay.py`` (the live burn-in's
drawing, so both look the same), onto two blank pictures — one black (0), one white (255) — and
every later frame is composited with it: OpenCV's anti-aliased drawing blends each pixel as
``dst·(1−α) + colour·α``, so whatever the marks do to a pixel is ``dst·P + Q`` with ``Q`` the
black drawing and ``P = (white − black) / 255``. Compositing touches only the marks' bounding box
with saturating 8-bit OpenCV arithmetic (well under a millisecond).

The first frames of a set of marks (``DRAW_FIRST``) are drawn straight into the frame, as before:
while a pen stroke streams, the set changes every frame or two, and building a layer costs two
drawings — it pays off only for marks that stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import av
import cv2
import numpy as np

from relay.annotations import Annotation
from relay.overlay import draw_yuv420
from relay.rendition import plane_array

DRAW_FIRST = 2
"Frames of a new set of marks drawn directly before its layer is built."


@dataclass(frozen=True)
class _Layer:
    """One plane's marks: the box they touch, and ``P`` (as 0–255) and ``Q`` inside it."""

    box: tuple[slice, slice] | None
    keep: np.ndarray
    add: np.ndarray


def _layer(shape: tuple[int, int], marks: Sequence[Annotation], index: int) -> _Layer:
    planes = {}
    for background in (0, 255):
        blank = [np.zeros((1, 1), np.uint8)] * 3
        blank[index] = np.full(shape, background, np.uint8)
        draw_yuv420(blank, marks)  # each plane is drawn at its own size; the others are dummies
        planes[background] = blank[index]
    black, white = planes[0], planes[255]
    keep = cv2.subtract(white, black)  # 255 where the marks leave the pixel as it is
    x, y, w, h = cv2.boundingRect(cv2.bitwise_not(keep))
    if w == 0 or h == 0:
        return _Layer(None, keep, black)
    box = (slice(y, y + h), slice(x, x + w))
    return _Layer(box, np.ascontiguousarray(keep[box]), np.ascontiguousarray(black[box]))


class BurnIn:
    """Marks onto frames of one size (yuv420p); keeps the layers of the marks last seen."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._marks: tuple[Annotation, ...] = ()
        self._seen = 0
        "Frames in a row that showed ``_marks``."
        self._layers: list[_Layer] | None = None
        self.drawn = 0
        "Frames drawn on directly (first frames of a new set of marks): for the benchmark."

    def frame(self, source: av.VideoFrame, marks: Sequence[Annotation]) -> av.VideoFrame:
        """The frame to encode: ``source`` itself when it needs nothing (right size and format, no
        marks), else a new picture — never drawn on the decoded frame, which may be the decoder's
        reference picture or the held freeze frame."""
        fits = (source.width, source.height) == (self.width, self.height)
        if fits and source.format.name == "yuv420p":
            picture = source
        else:
            picture = source.reformat(width=self.width, height=self.height, format="yuv420p")
        key = tuple(marks)
        if not key:
            self._remember(key)
            return picture
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        planes = [plane_array(p) for p in out.planes]
        for target, plane in zip(planes, picture.planes, strict=True):
            np.copyto(target, plane_array(plane))
        self._remember(key)
        if self._seen <= DRAW_FIRST:
            draw_yuv420(planes, key)
            self.drawn += 1
            return out
        if self._layers is None:
            self._layers = [_layer(p.shape, key, i) for i, p in enumerate(planes)]
        for target, layer in zip(planes, self._layers, strict=True):
            if layer.box is not None:
                box = target[layer.box]
                box[...] = cv2.add(cv2.multiply(box, layer.keep, scale=1 / 255), layer.add)
        return out

    def _remember(self, key: tuple[Annotation, ...]) -> None:
        if key == self._marks:
            self._seen += 1
            return
        self._marks, self._seen, self._layers = key, 1, None
