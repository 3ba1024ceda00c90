"""A synthetic, endoscope-like video source whose frames carry a machine-readable stamp.

Used by ``endolink publish testpattern`` (to try the system without a scope), by the tests and by
the benchmarks: the far side decodes the frame counter and the sender's wall-clock time from the
picture itself, so "frames really arrived, in order, with this latency" is measured, not assumed.

The picture: a reddish mucosa-like texture drifting in a circle under a round vignette (what an
endoscope shows), with a row of 64 black/white blocks along the top edge:
bits 0–23 frame counter, bits 24–63 wall-clock milliseconds (mod 2**40).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc.mediastreams import VIDEO_CLOCK_RATE, MediaStreamTrack

STAMP_BITS = 64
COUNTER_BITS = 24
CLOCK_MASK = (1 << 40) - 1
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class TestPatternTrack(MediaStreamTrack):
    """``recv()`` paces frames at ``fps`` in real time; each frame is a fresh ``VideoFrame``,
    drawn on a worker thread."""

    kind = "video"
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int = 1280, height: int = 720, fps: int = 30) -> None:
        super().__init__()
        if width % STAMP_BITS or width % 2 or height % 2:
            raise ValueError("width must be a multiple of 64 and height even")
        self.width, self.height, self.fps = width, height, fps
        self.counter = 0
        self._start: float | None = None
        self._y, self._u, self._v = _texture(width, height)
        self._vignette = _vignette(width, height)

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.counter / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # Drawn off the event loop (~10 ms at 720p): on a loaded machine, drawing on it slowed
        # everything else the loop runs — in tests, the relay itself — and the frame rate.
        frame = await asyncio.to_thread(self.frame, self.counter, int(time.time() * 1000))
        frame.pts = int(self.counter * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = TIME_BASE
        self.counter += 1
        return frame

    def frame(self, counter: int, wall_ms: int) -> av.VideoFrame:
        w, h = self.width, self.height
        angle = counter * 2 * math.pi / 240
        dx = int((math.cos(angle) + 1) * w / 8)
        dy = int((math.sin(angle) + 1) * h / 8)
        y = (self._y[dy : dy + h, dx : dx + w] * self._vignette).astype(np.uint8)
        u = self._u[dy // 2 : dy // 2 + h // 2, dx // 2 : dx // 2 + w // 2]
        v = self._v[dy // 2 : dy // 2 + h // 2, dx // 2 : dx // 2 + w // 2]
        stamp(y, counter, wall_ms)
        frame = av.VideoFrame.from_ndarray(
            np.concatenate([y, u, v], axis=None).reshape(-1, w), format="yuv420p"
        )
        frame.pict_type = av.video.frame.PictureType.NONE
        return frame


def stamp(luma: np.ndarray, counter: int, wall_ms: int) -> None:
    """Draw the 64-block stamp into the top rows of a luma plane (in place)."""
    block = luma.shape[1] // STAMP_BITS
    value = (counter & ((1 << COUNTER_BITS) - 1)) | ((wall_ms & CLOCK_MASK) << COUNTER_BITS)
    for bit in range(STAMP_BITS):
        luma[:block, bit * block : (bit + 1) * block] = 235 if value >> bit & 1 else 16


def read_stamp(frame: av.VideoFrame) -> tuple[int, int]:
    """(counter, wall-clock ms mod 2**40) read back from a decoded frame of any size."""
    luma = frame.to_ndarray(format="gray")
    block = luma.shape[1] / STAMP_BITS
    row = int(block / 2)
    value = 0
    for bit in range(STAMP_BITS):
        x = int((bit + 0.5) * block)
        if luma[row, x] > 128:
            value |= 1 << bit
    return value & ((1 << COUNTER_BITS) - 1), value >> COUNTER_BITS


def stamp_age_ms(wall_ms: int, now_ms: int | None = None) -> int:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return (now - wall_ms) & CLOCK_MASK


def _texture(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth noise at a few scales: vessels and folds at full resolution (1.25× the frame so it
    can drift), in Y/U/V planes with a reddish, mucosa-like chroma."""
    rng = np.random.default_rng(7)
    th, tw = height * 5 // 4 + 2, width * 5 // 4 + 2
    luma = np.zeros((th, tw), np.float32)
    for scale, weight in ((64, 60.0), (16, 30.0), (4, 18.0)):
        small = rng.random((th // scale + 2, tw // scale + 2)).astype(np.float32)
        luma += weight * np.kron(small, np.ones((scale, scale), np.float32))[:th, :tw]
    luma = 60 + luma
    y = luma.astype(np.float32)
    u = np.full((th // 2, tw // 2), 110, np.uint8)
    v = (150 + (luma[::2, ::2] - luma.mean()) / 4).clip(0, 255).astype(np.uint8)
    return y, u, v


def _vignette(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot((xx - width / 2) / (height / 2), (yy - height / 2) / (height / 2))
    vignette: np.ndarray = np.clip(1.3 - r * 0.9, 0.0, 1.0).astype(np.float32)
    return vignette
