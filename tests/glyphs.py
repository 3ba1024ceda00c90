"""Is a text mark really drawn in a decoded frame? Compare the painted pixels in the label's box
with the label's own glyphs and with what the old ASCII-only drawing made of it (``?`` for every
Hangul or Cyrillic letter)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from relay.annotations import TEXT_HEIGHT_WIDTHS
from relay.labels import LABELS, Label

TEXT = "내시경 Дуран"
ASCII_FALLBACK = TEXT.encode("ascii", "replace").decode()
"What cv2.putText drew of it before: ``??? ?????``."


@dataclass(frozen=True)
class GlyphMatch:
    on_glyphs: float
    """Share of the label's glyph pixels painted in the frame, within 2 px (codecs blur thin
    strokes and halve the colour resolution)."""
    off_glyphs: float
    "Share of the rest of the label's box that is painted."
    like_text: float
    "Overlap (IoU) of the painted pixels with the label's glyphs..."
    like_fallback: float
    "...and with the ``??? ?????`` rendering at the same place."


def text_mark(x: float, y: float, width: float, color: str) -> dict[str, object]:
    return {
        "id": "label",
        "tool": "text",
        "text": TEXT,
        "color": color,
        "width": width,
        "points": [[x, y]],
    }


def match(painted: np.ndarray, x: float, y: float, width: float) -> GlyphMatch:
    """``painted``: a boolean (h, w) mask of the mark's colour in a decoded frame."""
    h, w = painted.shape
    ax, ay = int(np.floor(x * w - 0.5)), int(np.floor(y * h - 0.5))
    cap = TEXT_HEIGHT_WIDTHS * width * h
    masks = [_placed(LABELS.label(t, cap), ax, ay, (h, w)) for t in (TEXT, ASCII_FALLBACK)]
    glyphs, fallback = masks
    box = _box(glyphs)
    inside = painted[box]
    near = cv2.dilate(painted.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)[box]
    return GlyphMatch(
        float(near[glyphs[box]].mean()),
        float(inside[~glyphs[box]].mean()),
        _iou(painted, glyphs),
        _iou(painted, fallback),
    )


def _placed(label: Label, ax: int, ay: int, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    alpha = label.alpha
    top, left = ay + label.dy, ax + label.dx
    mask[top : top + alpha.shape[0], left : left + alpha.shape[1]] = alpha > 128
    return mask


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
