"""Burn annotations into a video frame with OpenCV (anti-aliased, sized to the frame).

Pure functions that draw in place, for the burn-in worker thread (OpenCV releases the GIL).
``draw_yuv420`` draws straight into the planes of a YUV 4:2:0 picture — luma at full size, both
chroma planes at half size — so the rendition never converts a frame to BGR and back.

Geometry is normalised (0..1 of the frame) and every size follows the frame height, so a mark
looks the same at 360p and 1080p and matches what the pages draw on their canvases:

* line width: ``width`` × frame height;
* arrow head: 4 line widths long, at least 2 % of the frame height;
* circle/rect: the ellipse/rectangle inscribed in the two corner points;
* anchored marks (``placed``): through their latest placement (``relay.tracker``), lines keeping
  their width as the pages draw them; a box or circle becomes the outline the affine makes of it;
  a mark whose place the tracker lost is drawn grey at its last confident place;
* text: Noto Sans CJK shaped by Raqm (Hangul, Cyrillic, Latin; ``relay/labels.py``), cap height
  ``size`` × frame height (6 line widths for a label without a size), anchored at the left end of
  its baseline; each label is rendered once per size and blended from a cache on later frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from .annotations import Annotation, MarkKey, Tool
from .labels import LABELS, blend
from .tracker import Placement

SHIFT = 4
"Fractional bits of the coordinates handed to OpenCV: sub-pixel precise anti-aliased edges."
SCALE = 1 << SHIFT
ARROW_HEAD_WIDTHS = 4.0
ARROW_HEAD_MIN = 0.02
AA_EXTRA_PX = 1.4
"OpenCV draws an anti-aliased line of thickness t about 2·ceil(t/2) + 1.4 px wide (measured)."
CHROMA_EXTRA_PX = 1.0
"Chroma lines are this much wider (chroma px): the colour covers the luma line, edges and all."

LOST_COLOR = "#9e9e9e"
"An anchored mark whose tissue the tracker lost (the pages' grey)."
ELLIPSE_SEGMENTS = 72
"A placed circle's outline: straight segments of 5° (smooth at any size a mark is drawn)."

Color = int | tuple[int, int, int]


def placed(
    annotations: Sequence[Annotation], placements: Mapping[MarkKey, Placement]
) -> list[Annotation]:
    """The marks as this frame shows them: each anchored one with a placement moved through its
    matrix (grey if lost), the others as drawn."""
    return [
        _placed(a, placements[a.key]) if a.mark.anchored and a.key in placements else a
        for a in annotations
    ]


def _placed(annotation: Annotation, placement: Placement) -> Annotation:
    mark = annotation.mark
    points = np.asarray(mark.points, np.float64)
    tool = mark.tool
    if tool is Tool.RECT:
        (x0, y0), (x1, y1) = points
        points = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
        tool = Tool.PEN
    elif tool is Tool.CIRCLE:
        centre, radii = points.mean(axis=0), np.abs(points[1] - points[0]) / 2
        angles = np.linspace(0, 2 * np.pi, ELLIPSE_SEGMENTS + 1)
        points = centre + radii * np.column_stack([np.cos(angles), np.sin(angles)])
        tool = Tool.PEN
    a, b, c, d, e, f = placement.matrix
    moved = points @ np.array([[a, d], [b, e]]) + (c, f)
    color = LOST_COLOR if placement.lost else mark.color
    shape = replace(mark, tool=tool, points=tuple(map(tuple, moved.tolist())), color=color)
    return replace(annotation, mark=shape)


def draw_bgr(image: np.ndarray, annotations: Sequence[Annotation]) -> None:
    """Draw onto an ``(h, w, 3)`` BGR image."""
    _draw_plane(image, annotations, bgr)


def draw_yuv420(planes: Sequence[np.ndarray], annotations: Sequence[Annotation]) -> None:
    """Draw onto the Y, U and V planes (2-D arrays, possibly strided views) of a 4:2:0 picture.
    Lines on the half-size chroma planes are one chroma pixel wider: a thin line there is mostly
    anti-aliased edge, and its colour would fade to grey under the luma line (a 360p rung)."""
    for index, plane in enumerate(planes):
        _draw_plane(plane, annotations, _yuv_component(index), CHROMA_EXTRA_PX if index else 0.0)


@lru_cache(maxsize=256)
def bgr(color: str) -> tuple[int, int, int]:
    value = int(color[1:], 16)
    return value & 0xFF, value >> 8 & 0xFF, value >> 16


@lru_cache(maxsize=256)
def _yuv_component(index: int) -> Callable[[str], int]:
    """The colour of a mark on plane ``index`` (0 Y, 1 U, 2 V)."""
    return lambda color: yuv(color)[index]


def yuv(color: str) -> tuple[int, int, int]:
    """BT.601 limited range, what WebRTC decoders and PyAV assume for yuv420p."""
    b, g, r = (c / 255 for c in bgr(color))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def _draw_plane(
    plane: np.ndarray,
    annotations: Sequence[Annotation],
    color_of: Callable[[str], Color],
    extra_px: float = 0.0,
) -> None:
    h, w = plane.shape[:2]
    for annotation in annotations:
        mark = annotation.mark
        color = color_of(mark.color)
        width_px = mark.width * h + extra_px
        thickness = _thickness(width_px)
        # Pixel centres sit at +0.5: normalised x = 0 is the frame's left edge, as on a canvas.
        scaled = (np.asarray(mark.points, np.float64) * (w, h) - 0.5) * SCALE
        points = np.round(scaled).astype(np.int32)
        if mark.tool is Tool.PEN:
            _pen(plane, points, color, thickness, width_px)
        elif mark.tool is Tool.ARROW:
            head_px = max(ARROW_HEAD_WIDTHS * width_px, ARROW_HEAD_MIN * h)
            _arrow(plane, points, color, thickness, head_px)
        elif mark.tool is Tool.CIRCLE:
            _ellipse(plane, points, color, thickness)
        elif mark.tool is Tool.RECT:
            corner, opposite = (tuple(int(c) for c in p) for p in points)
            cv2.rectangle(plane, corner, opposite, color, thickness, cv2.LINE_AA, SHIFT)
        else:
            _text(plane, points[0], mark.text or "", color, mark.cap_height * h)


def _thickness(width_px: float) -> int:
    """The OpenCV thickness whose anti-aliased line comes closest to ``width_px``."""
    return max(1, 2 * round((width_px - AA_EXTRA_PX) / 2))


def _pen(
    plane: np.ndarray, points: np.ndarray, color: Color, thickness: int, width_px: float
) -> None:
    if len(points) == 1:  # a tap: a dot as wide as the line
        x, y = (int(c) for c in points[0])
        radius = max(SCALE // 2, round(width_px * SCALE / 2))
        cv2.circle(plane, (x, y), radius, color, -1, cv2.LINE_AA, SHIFT)
    else:
        cv2.polylines(plane, [points], False, color, thickness, cv2.LINE_AA, SHIFT)


def _arrow(
    plane: np.ndarray, points: np.ndarray, color: Color, thickness: int, head_px: float
) -> None:
    tail, head = (tuple(int(c) for c in p) for p in points)
    length = float(np.hypot(*(points[1] - points[0]))) / SCALE
    tip = min(0.5, head_px / length) if length else 0.0
    cv2.arrowedLine(plane, tail, head, color, thickness, cv2.LINE_AA, SHIFT, tip)


def _ellipse(plane: np.ndarray, points: np.ndarray, color: Color, thickness: int) -> None:
    centre = tuple(int(c) for c in (points[0] + points[1]) // 2)
    axes = tuple(int(c) for c in np.abs(points[1] - points[0]) // 2)
    cv2.ellipse(plane, centre, axes, 0, 0, 360, color, thickness, cv2.LINE_AA, SHIFT)


def _text(plane: np.ndarray, anchor: np.ndarray, text: str, color: Color, cap_px: float) -> None:
    label = LABELS.label(text, cap_px)
    blend(plane, label, int(anchor[0]) >> SHIFT, int(anchor[1]) >> SHIFT, color)
