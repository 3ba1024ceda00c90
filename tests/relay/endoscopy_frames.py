"""Endoscopy-like test frames (temporary until client/endoscopy.py lands)."""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.cache
def _tissue(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(
        rng.normal(0, 1, (height * 2, width * 2)).astype(np.float32), (0, 0), 6
    )
    noise = (noise - noise.mean()) / noise.std()
    img = np.stack([105 + 18 * noise, 95 + 20 * noise, 190 + 25 * noise], axis=-1)
    for _ in range(60):
        points = rng.integers(0, [width * 2, height * 2], (6, 2)).astype(np.int32)
        cv2.polylines(img, [points], False, (70, 40, 120), int(rng.integers(1, 4)))
    for _ in range(40):
        centre = tuple(int(v) for v in rng.integers(0, [width * 2, height * 2]))
        cv2.circle(img, centre, int(rng.integers(2, 6)), (255, 255, 255), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def endoscope_frame(index: int, width: int = 1280, height: int = 720) -> np.ndarray:
    tissue = _tissue(width, height)
    x, y = (index * 7) % width, (index * 5) % height
    view = tissue[y : y + height, x : x + width].copy()
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), int(height * 0.52), 1, -1)
    return view * mask[..., None]
