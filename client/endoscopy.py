"""A deterministic synthetic endoscopy sequence with the ground truth of every frame.

Why: tracked ("anchored") marks, the picture-quality guard and the privacy guard are measured
against known motion, so a test can say "this mark is 3 px from where the tissue really is". A
recorded clip has no such truth.

The picture: a pink/red mucosa texture (folds, vessels and grain at several scales) seen through
a round endoscope vignette; the view drifts, rotates and zooms smoothly and the tissue deforms
mildly; specular highlights (tied to the light, not to the tissue) flicker; blur bursts; a few
seconds with the scope pulled out (dark, blurred frames) and optional room frames (walls,
furniture, skin-tone faces) over ``room_spans``. All of it is a function of (seed, frame index):
``frame(i)`` is random access, two instances with the same arguments give identical frames.

Ground truth: ``warp`` maps frame 0's pixel coordinates to frame *i*'s (the rigid view motion);
``true_point`` adds the deformation exactly (a point of frame 0 → where that bit of tissue is in
frame *i*, or None when it is not visible).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OUT_OF_VIEW_S: tuple[tuple[float, float], ...] = ((7.0, 9.0),)
"""The scope is pulled out (dark, blurred frames) over these spans of the sequence."""
BLUR_S: tuple[tuple[float, float], ...] = ((2.4, 2.8), (5.3, 5.6), (10.2, 10.5))
"""Blur bursts (the scope moved fast or the lens fogged)."""
VIGNETTE_RADIUS = 0.36
"""Radius of the endoscope's round picture, as a fraction of the width."""
_DEFORM = 0.008
"""Largest deformation displacement, as a fraction of the width."""
_TEXTURE_SCALE = 1.9
"""Side of the square reference texture, as a multiple of the frame width."""


@dataclass(frozen=True)
class SyntheticFrame:
    """One frame and its truth."""

    index: int
    bgr: np.ndarray
    warp: np.ndarray
    """3×3: frame 0's pixel coordinates → this frame's (the rigid part of the motion)."""
    in_view: bool
    """False while the scope is out (dark frames or room frames)."""
    out_of_body: bool
    """True for room frames (the privacy guard's truth)."""
    blurred: bool
    """True inside a blur burst."""


class SyntheticEndoscopy:
    """The sequence: ``frames()`` in order, ``frame(i)`` at random, ``true_point`` the truth."""

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        seconds: float = 12.0,
        seed: int = 1,
        room_spans: Sequence[tuple[float, float]] = (),
    ) -> None:
        if width < 64 or height < 64 or fps <= 0 or seconds <= 0:
            raise ValueError("the sequence needs at least 64×64 pixels, fps > 0 and seconds > 0")
        self.width, self.height, self.fps, self.seconds = width, height, fps, seconds
        self.seed = seed
        self.room_spans = tuple(room_spans)
        self.count = int(round(seconds * fps))
        rng = np.random.default_rng(seed)
        self._phases = rng.uniform(0, 2 * math.pi, 12)
        self._texture = _mucosa(width, seed)
        self._room = _room(width, height, seed)
        self._vignette = _vignette(width, height)
        self._grid = _grid(width, height)
        self._highlights = _highlights(width, height, seed)

    # -- truth ---------------------------------------------------------------------------

    def _pose(self, t: float) -> tuple[float, float, float, float]:
        """(tx, ty, rotation, log zoom) of the view at ``t`` seconds, all 0 at t = 0."""
        p, w = self._phases, self.width

        def wave(parts: Sequence[tuple[float, float, int]]) -> float:
            return sum(
                a * (math.sin(2 * math.pi * t / period + p[i]) - math.sin(p[i]))
                for a, period, i in parts
            )

        tx = w * (wave([(0.06, 7.3, 0), (0.035, 3.1, 1)]) + 0.006 * t)
        ty = w * wave([(0.05, 5.7, 2), (0.025, 2.3, 3)])
        rotation = wave([(0.25, 9.0, 4), (0.07, 2.9, 5)])
        zoom = wave([(0.14, 6.1, 6), (0.04, 1.7, 7)])
        return tx, ty, rotation, zoom

    def warp(self, index: int) -> np.ndarray:
        """3×3 float64: frame 0's pixel coordinates → frame ``index``'s (rigid view motion)."""
        tx, ty, rotation, zoom = self._pose(index / self.fps)
        s = math.exp(zoom)
        c, n = s * math.cos(rotation), s * math.sin(rotation)
        cx, cy = self.width / 2, self.height / 2
        # about the frame's centre: x' = centre + sR(x + t - centre)
        return np.array(
            [
                [c, -n, cx + c * (tx - cx) - n * (ty - cy)],
                [n, c, cy + n * (tx - cx) + c * (ty - cy)],
                [0.0, 0.0, 1.0],
            ]
        )

    def _deformation(self, index: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """Displacement (dx, dy) at frame pixels (x, y): the picture at p shows the rigidly
        warped tissue at p + d(p). Zero at frame 0; smooth and small (≤ ``_DEFORM`` × width)."""
        t, p, w = index / self.fps, self._phases, self.width
        amp = np.float32(_DEFORM * w * 0.5 * (1 - math.cos(2 * math.pi * t / 4.3)))
        k = 2 * math.pi / (0.9 * w)
        dx = amp * np.multiply.outer(np.sin(k * y + t + p[8]), np.sin(k * x + p[9]))
        dy = amp * np.multiply.outer(np.sin(k * y + p[10]), np.sin(k * x - 0.7 * t + p[11]))
        return dx, dy

    def _span(self, index: int, spans: Sequence[tuple[float, float]]) -> bool:
        t = index / self.fps
        return any(start <= t < end for start, end in spans)

    def in_view(self, index: int) -> bool:
        return not (self._span(index, OUT_OF_VIEW_S) or self._span(index, self.room_spans))

    def true_point(self, index: int, x: float, y: float) -> tuple[float, float] | None:
        """Where the tissue at (x, y) of frame 0 is in frame ``index`` (pixels), or None when it
        is not visible there (scope out, outside the frame or the round picture)."""
        if not self.in_view(index):
            return None
        u = self.warp(index) @ np.array([x, y, 1.0])
        # solve p + d(p) = u by fixed point: d is smooth and small (contraction), 12 steps
        # converge far below 1e-6 px
        p = u[:2].copy()
        for _ in range(12):
            dx, dy = self._deformation(index, np.array([p[0]]), np.array([p[1]]))
            p = u[:2] - np.array([dx[0, 0], dy[0, 0]])
        px, py = float(p[0]), float(p[1])
        r = VIGNETTE_RADIUS * self.width * 0.97
        if not (0 <= px < self.width and 0 <= py < self.height):
            return None
        if math.hypot(px - self.width / 2, py - self.height / 2) > r:
            return None
        return px, py

    # -- pictures ------------------------------------------------------------------------

    def frames(self) -> Iterator[SyntheticFrame]:
        for index in range(self.count):
            yield self.frame(index)

    def frame(self, index: int) -> SyntheticFrame:
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} is outside the sequence (0..{self.count - 1})")
        warp = self.warp(index)
        out_of_body = self._span(index, self.room_spans)
        pulled_out = self._span(index, OUT_OF_VIEW_S)
        blurred = self._span(index, BLUR_S)
        rng = np.random.default_rng((self.seed, index))
        if out_of_body:
            bgr = self._room_frame(index)
        else:
            bgr = self._tissue(index, warp)
            if pulled_out:
                small = cv2.resize(
                    bgr, (self.width // 16, self.height // 16), interpolation=cv2.INTER_AREA
                )
                small = cv2.GaussianBlur(small, (0, 0), 0.03 * self.width / 16)
                bgr = cv2.resize(cv2.convertScaleAbs(small, alpha=0.22), (self.width, self.height))
            else:
                self._add_highlights(bgr, index, rng)
        if blurred and not out_of_body:
            bgr = cv2.GaussianBlur(bgr, (0, 0), self._blur_sigma(index))
        noise = rng.integers(0, 6, (self.height // 4, self.width // 4), dtype=np.uint8)
        bgr = cv2.add(
            bgr, cv2.cvtColor(cv2.resize(noise, (self.width, self.height)), cv2.COLOR_GRAY2BGR)
        )
        bgr = cv2.multiply(bgr, self._vignette, scale=1 / 255)
        return SyntheticFrame(index, bgr, warp, self.in_view(index), out_of_body, blurred)

    def _tissue(self, index: int, warp: np.ndarray) -> np.ndarray:
        """The texture seen through the view at ``index``, deformed (one remap)."""
        side = self._texture.shape[0]
        to_ref = np.array([[1.0, 0, -(side - self.width) / 2], [0, 1, -(side - self.height) / 2]])
        to_frame = warp @ np.vstack([to_ref, [0, 0, 1]])
        inverse = cv2.invertAffineTransform(to_frame[:2])
        if index == 0:
            return cv2.warpAffine(
                self._texture,
                to_frame[:2],
                (self.width, self.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
        dx, dy = self._deformation(
            index, np.arange(self.width, dtype=np.float32), np.arange(self.height, dtype=np.float32)
        )
        field = np.empty_like(self._grid)
        np.add(self._grid[..., 0], dx, out=field[..., 0])
        np.add(self._grid[..., 1], dy, out=field[..., 1])
        # fixed-point maps: the remap itself runs about twice as fast
        maps = np.asarray(cv2.transform(field, inverse), np.float32)
        fixed, fraction = cv2.convertMaps(maps[..., 0], maps[..., 1], cv2.CV_16SC2)
        tissue = cv2.remap(
            self._texture, fixed, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        return np.asarray(tissue, np.uint8)

    def _blur_sigma(self, index: int) -> float:
        t = index / self.fps
        for start, end in BLUR_S:
            if start <= t < end:
                rise = 1 - abs(2 * (t - start) / (end - start) - 1)
                return 0.002 * self.width + 0.006 * self.width * rise
        return 0.0

    def _add_highlights(self, bgr: np.ndarray, index: int, rng: np.random.Generator) -> None:
        """Specular flecks: they follow the light (the scope), jitter and flicker."""
        t = index / self.fps
        for i, (x, y, sprite) in enumerate(self._highlights):
            if rng.random() < 0.3:
                continue
            jitter = 0.015 * self.width
            cx = int(x + jitter * math.sin(3.1 * t + i))
            cy = int(y + jitter * math.cos(2.3 * t + 2 * i))
            h, w = sprite.shape[:2]
            x0, y0 = cx - w // 2, cy - h // 2
            if x0 < 0 or y0 < 0 or x0 + w > self.width or y0 + h > self.height:
                continue
            roi = bgr[y0 : y0 + h, x0 : x0 + w]
            cv2.scaleAdd(sprite, float(rng.uniform(0.4, 1.0)), roi, roi)

    def _room_frame(self, index: int) -> np.ndarray:
        """The room, filmed by a scope held in a hand: slow pan and a little blur."""
        t = index / self.fps
        side_x = self._room.shape[1] - self.width
        side_y = self._room.shape[0] - self.height
        x = int(side_x * (0.5 + 0.4 * math.sin(0.5 * t)))
        y = int(side_y * (0.5 + 0.4 * math.cos(0.37 * t)))
        return np.ascontiguousarray(self._room[y : y + self.height, x : x + self.width])

    def write_y4m(self, path: Path, width: int | None = None, height: int | None = None) -> None:
        """The sequence as a YUV4MPEG2 (4:2:0) file: Chromium's fake camera plays it."""
        width, height = width or self.width, height or self.height
        if width % 2 or height % 2:
            raise ValueError("y4m 4:2:0 needs an even width and height")
        with path.open("wb") as out:
            out.write(f"YUV4MPEG2 W{width} H{height} F{self.fps}:1 Ip A1:1 C420jpeg\n".encode())
            for frame in self.frames():
                bgr = frame.bgr
                if (width, height) != (self.width, self.height):
                    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
                out.write(b"FRAME\n")
                out.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())


def _noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: ``cells`` random values across, cubic-resized to ``side``."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC), -1, 1)


@functools.lru_cache(maxsize=4)
def _mucosa(width: int, seed: int) -> np.ndarray:
    """The reference texture (square, ``_TEXTURE_SCALE`` × width): folds, blotches, grain and
    a tree of vessels, pink/red."""
    side = int(_TEXTURE_SCALE * width)
    rng = np.random.default_rng((seed, 1))
    folds = _noise(rng, side, 6)
    blotch = _noise(rng, side, 24)
    grain = _noise(rng, side, max(side // 6, 8))
    fine = _noise(rng, side, max(side // 2, 8))
    pits = _noise(rng, side, max(side // 12, 8))
    shade = 0.55 + 0.2 * folds + 0.16 * blotch + 0.14 * pits + 0.1 * grain + 0.05 * fine
    vessels = np.zeros((side, side), np.float32)
    for _ in range(int(110 * side / 1000)):
        x, y = rng.uniform(0, side, 2)
        angle = rng.uniform(0, 2 * math.pi)
        thick = rng.uniform(0.0015, 0.005) * width
        points = []
        for _ in range(int(rng.integers(15, 40))):
            points.append((x, y))
            angle += rng.normal(0, 0.35)
            step = 0.012 * width
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        poly = np.array(points, np.int32).reshape(-1, 1, 2)
        strength = float(rng.uniform(0.3, 1.0))
        cv2.polylines(vessels, [poly], False, strength, max(1, int(thick)), cv2.LINE_AA)
    veins = cv2.GaussianBlur(vessels, (0, 0), 0.0012 * width + 0.3)
    b = 75 + 60 * shade - 40 * veins
    g = 62 + 75 * shade - 55 * veins
    r = 160 + 95 * shade - 40 * veins
    return np.clip(np.dstack([b, g, r]), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _room(width: int, height: int, seed: int) -> np.ndarray:
    """An examination room, larger than a frame: walls, floor, a door and a cabinet (straight
    edges), a bright window, two faces (skin tones)."""
    rng = np.random.default_rng((seed, 2))
    w, h = int(width * 1.6), int(height * 1.6)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    room = (np.array([200, 210, 215], np.float32) - 40 * ramp) * np.ones((h, w, 3), np.float32)
    room[int(0.72 * h) :] = (90, 110, 130)  # floor
    cv2.rectangle(
        room, (int(0.1 * w), int(0.2 * h)), (int(0.28 * w), int(0.72 * h)), (60, 80, 110), -1
    )
    cv2.rectangle(
        room, (int(0.6 * w), int(0.45 * h)), (int(0.9 * w), int(0.72 * h)), (70, 70, 75), -1
    )
    for i in range(4):
        y = int((0.48 + 0.06 * i) * h)
        cv2.line(room, (int(0.6 * w), y), (int(0.9 * w), y), (30, 30, 35), max(1, width // 400))
    cv2.rectangle(
        room, (int(0.35 * w), int(0.1 * h)), (int(0.55 * w), int(0.4 * h)), (250, 250, 245), -1
    )
    for cx in (0.42, 0.7):
        centre = (int(cx * w + rng.uniform(-20, 20)), int(0.38 * h))
        axes = (int(0.045 * w), int(0.065 * w))
        cv2.ellipse(room, centre, axes, 0, 0, 360, (120, 150, 205), -1)  # skin
        cv2.ellipse(
            room, (centre[0], centre[1] - axes[1] // 2), axes, 0, 180, 360, (40, 45, 50), -1
        )
        cv2.rectangle(
            room,
            (centre[0] - axes[0] * 2, centre[1] + axes[1]),
            (centre[0] + axes[0] * 2, int(0.72 * h)),
            (190, 160, 120),
            -1,
        )
    room += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    blurred = cv2.GaussianBlur(np.clip(room, 0, 255).astype(np.uint8), (0, 0), 0.0015 * width)
    return np.asarray(blurred, np.uint8)


@functools.lru_cache(maxsize=4)
def _vignette(width: int, height: int) -> np.ndarray:
    """The round endoscope picture (soft edge, light falling off outwards), ×255, 3 channels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot(x - width / 2, y - height / 2) / (VIGNETTE_RADIUS * width)
    edge = np.clip((1 - r) / 0.02, 0, 1)
    light = 1 - 0.45 * np.clip(r, 0, 1) ** 2
    mask = (255 * edge * light).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(mask[..., None], 3, 2))


@functools.lru_cache(maxsize=4)
def _grid(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.dstack([x, y])


@functools.lru_cache(maxsize=4)
def _highlights(width: int, height: int, seed: int) -> list[tuple[float, float, np.ndarray]]:
    """A handful of elongated white flecks near the middle (where the light hits)."""
    rng = np.random.default_rng((seed, 3))
    flecks = []
    for _ in range(7):
        size = int(rng.uniform(0.015, 0.045) * width) | 1
        sprite = np.zeros((size, size), np.float32)
        axes = (size // 2 - 1, max(1, int(size * rng.uniform(0.1, 0.3))))
        cv2.ellipse(sprite, (size // 2, size // 2), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        soft = cv2.GaussianBlur(sprite, (0, 0), size / 10)
        x = width / 2 + rng.normal(0, 0.12) * width
        y = height / 2 + rng.normal(0, 0.12) * height
        flecks.append((x, y, np.repeat((255 * soft)[..., None], 3, 2).astype(np.uint8)))
    return flecks
