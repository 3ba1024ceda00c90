"""Text labels for the burn-in: shaped once, cached as an alpha patch, blended per frame.

OpenCV's Hershey fonts know ASCII only, so Korean and Mongolian (Cyrillic) text came out as
``?``. Labels are shaped by Pillow's Raqm layout (HarfBuzz + FriBiDi, in the PyPI wheel) with
Noto Sans CJK from Debian's ``fonts-noto-cjk`` (Hangul, Cyrillic and Latin in one face), rendered
once per (text, size) into an 8-bit coverage patch kept in an LRU bounded in count and bytes, and
alpha-blended into a plane with numpy on every frame. Everything here runs in the burn-in and
export worker threads, never on the event loop. One lock guards the cache (a hit never waits for
a render), another FreeType (faces are not thread-safe): a miss renders outside the cache lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FONT_PATH = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
"Debian's fonts-noto-cjk (installed by scripts/bootstrap): Hangul, Cyrillic and Latin."
CAP_HEIGHT_EM = 0.733
"Noto Sans CJK's capital height as a fraction of its em: a label's cap height sets its size."
MAX_LABELS = 256
"Patches kept (most a few KiB to a few hundred KiB); the oldest unused one goes first."
MAX_CACHE_BYTES = 64 * 1024 * 1024
"And at most this much memory: 200 large characters make a patch of megabytes."
MAX_SIZE_PX = 512
"Font sizes are capped: a mark's width is bounded, but a frame could be huge."
MAX_WIDTH_PX = 4096
"A patch is cut at this width (no frame is wider): past it the text is off the picture anyway."


class FontMissing(RuntimeError):
    """The label font is not installed (run scripts/bootstrap)."""


@dataclass(frozen=True)
class Label:
    """One rendered label: coverage 0..255 and where its top-left sits relative to the anchor
    (the left end of the baseline)."""

    alpha: np.ndarray
    dx: int
    dy: int
    alpha16: np.ndarray = field(init=False, repr=False)
    "The coverage and its complement (255 − a) as uint16, made once for the per-frame blend."
    rest16: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha16", self.alpha.astype(np.uint16))
        object.__setattr__(self, "rest16", 255 - self.alpha16)

    @property
    def nbytes(self) -> int:
        return self.alpha.nbytes + self.alpha16.nbytes + self.rest16.nbytes


class LabelCache:
    """Rendered labels by (text, font size in px), least recently used dropped first."""

    def __init__(
        self,
        font_path: Path = FONT_PATH,
        capacity: int = MAX_LABELS,
        max_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self._font_path = font_path
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._labels: OrderedDict[tuple[str, int], Label] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Memory held by the cached patches."""
        return self._bytes

    def label(self, text: str, cap_height_px: float) -> Label:
        size = max(4, min(MAX_SIZE_PX, round(cap_height_px / CAP_HEIGHT_EM)))
        key = (text, size)
        with self._lock:
            found = self._labels.get(key)
            if found is not None:
                self._labels.move_to_end(key)
                return found
        with self._render_lock:
            label = _render(self._font(size), text)
        with self._lock:
            if key not in self._labels:  # another thread may have rendered it meanwhile
                self._labels[key] = label
                self._bytes += label.nbytes
            while self._labels and (
                len(self._labels) > self._capacity or self._bytes > self._max_bytes
            ):
                self._bytes -= self._labels.popitem(last=False)[1].nbytes
            return label

    def _font(self, size: int) -> ImageFont.FreeTypeFont:
        return _font(self._font_path, size)


@lru_cache(maxsize=32)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    if not path.exists():
        raise FontMissing(f"label font {path} is missing: install fonts-noto-cjk")
    layout = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(path), size, layout_engine=layout)


def _render(font: ImageFont.FreeTypeFont, text: str) -> Label:
    left, top, right, bottom = (int(v) for v in font.getbbox(text, anchor="ls"))
    if right <= left or bottom <= top:  # only spaces
        return Label(np.zeros((0, 0), np.uint8), 0, 0)
    right = min(right, left + MAX_WIDTH_PX)
    image = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(image).text((-left, -top), text, fill=255, font=font, anchor="ls")
    return Label(np.asarray(image, np.uint8), left, top)


def blend(plane: np.ndarray, label: Label, x: int, y: int, value: int | tuple[int, ...]) -> None:
    """Blend ``value`` into ``plane`` (a uint8 plane, or an image with one value per channel;
    possibly a strided view) through the label's coverage, its anchor at pixel (x, y); the parts
    outside the plane are cut off."""
    h, w = plane.shape[:2]
    ph, pw = label.alpha.shape
    top, left = y + label.dy, x + label.dx
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(h, top + ph), min(w, left + pw)
    if y0 >= y1 or x0 >= x1:
        return
    rows, cols = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
    alpha, rest = label.alpha16[rows, cols], label.rest16[rows, cols]
    region = plane[y0:y1, x0:x1]
    if region.ndim == 3:
        alpha, rest = alpha[..., None], rest[..., None]
    # region·(255−a) + value·a ≤ 255·255: exact in uint16; x/255 rounded as (x + 128)·257 >> 16.
    mixed = region * rest + np.asarray(value, np.uint16) * alpha + 128
    region[...] = ((mixed.astype(np.uint32) * 257) >> 16).astype(np.uint8)


LABELS = LabelCache()
"The process's labels, shared by the live burn-in and the export (both draw the same text)."
