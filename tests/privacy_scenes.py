"""Synthetic scenes for the privacy guard's tests: varied rooms (wall colours — pinkish ones too —
furniture, door frames, a face) and mucosa views, deterministic from a seed.

No real room photographs are available offline: these are drawn to be hard in the ways that
matter (pink walls, skin-coloured faces filling much of the picture, dim rooms), not to be pretty.
"""

from __future__ import annotations

import cv2
import numpy as np

WALLS_BGR = [
    (200, 205, 210),  # off-white
    (150, 160, 170),  # grey
    (170, 200, 160),  # pale green (theatre)
    (200, 170, 140),  # pale blue
    (185, 190, 230),  # pinkish
    (165, 170, 225),  # salmon pink
    (140, 180, 210),  # beige
    (90, 95, 100),  # dim grey room
]


def room(seed: int, width: int = 192, height: int = 108, face: bool = True) -> np.ndarray:
    """An examination room as a scope held in the air would see it (BGR uint8)."""
    rng = np.random.default_rng(seed)
    wall = np.array(WALLS_BGR[seed % len(WALLS_BGR)], np.float32)
    picture = np.empty((height, width, 3), np.float32)
    ramp = np.linspace(0.85, 1.1, width, dtype=np.float32)[None, :, None]
    picture[:] = wall * ramp
    floor = int(height * rng.uniform(0.6, 0.8))
    picture[floor:] = np.array([60, 80, 100], np.float32) * rng.uniform(0.7, 1.3)
    for _ in range(int(rng.integers(2, 5))):  # cabinets, a screen, a door frame
        x0, y0 = int(rng.integers(0, width - 30)), int(rng.integers(0, floor - 10))
        x1 = min(width - 1, x0 + int(rng.integers(20, 70)))
        y1 = min(height - 1, y0 + int(rng.integers(25, 80)))
        color = tuple(float(c) for c in rng.integers(30, 230, 3))
        cv2.rectangle(picture, (x0, y0), (x1, y1), color, -1)
        cv2.rectangle(picture, (x0, y0), (x1, y1), tuple(0.6 * c for c in color), 2)
    if face:
        cx, cy = int(rng.integers(width // 3, 2 * width // 3)), int(rng.integers(30, height - 30))
        axes = (int(rng.integers(14, 30)), int(rng.integers(20, 38)))
        skin = [(120, 150, 200), (100, 140, 195), (80, 110, 160), (150, 175, 225)][seed % 4]
        cv2.ellipse(picture, (cx, cy), axes, 0, 0, 360, skin, -1)
        hair = (axes[0], axes[1] // 2)
        cv2.ellipse(picture, (cx, cy - axes[1]), hair, 0, 180, 360, (40, 40, 50), -1)
    noise = rng.normal(0, 4, picture.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(picture, (3, 3), 0) + noise, 0, 255).astype(np.uint8)


def close_face(seed: int, width: int = 192, height: int = 108) -> np.ndarray:
    """A face filling most of the picture: skin everywhere, few straight edges."""
    rng = np.random.default_rng(seed)
    picture = np.full((height, width, 3), WALLS_BGR[seed % len(WALLS_BGR)], np.float32)
    skin = [(120, 150, 200), (100, 140, 195), (80, 110, 160), (150, 175, 225)][seed % 4]
    cv2.ellipse(picture, (width // 2, height // 2 + 10), (60, 70), 0, 0, 360, skin, -1)
    for dx in (-22, 22):  # eyes
        cv2.ellipse(picture, (width // 2 + dx, height // 2), (9, 5), 0, 0, 360, (50, 50, 60), -1)
    noise = rng.normal(0, 5, picture.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(picture, (5, 5), 0) + noise, 0, 255).astype(np.uint8)


def mucosa(seed: int, width: int = 192, height: int = 108) -> np.ndarray:
    """A view of mucosa: red-pink texture, vessels, speculars, a circular vignette."""
    rng = np.random.default_rng(seed)
    base = np.array([rng.uniform(60, 110), rng.uniform(70, 120), rng.uniform(170, 230)], np.float32)
    low = cv2.resize(rng.normal(0, 1, (6, 10)).astype(np.float32), (width, height))
    picture = base[None, None, :] * (1.0 + 0.18 * low[..., None])
    for _ in range(8):  # vessels: dark red curves
        points = np.cumsum(rng.normal(0, 8, (12, 2)), axis=0) + rng.uniform(0, width, 2)
        cv2.polylines(picture, [points.astype(np.int32)], False, (40, 30, 140), 1, cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 6))):  # specular highlights
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(picture, center, int(rng.integers(1, 5)), (250, 250, 250), -1)
    vignette = np.zeros((height, width), np.float32)
    cv2.circle(vignette, (width // 2, height // 2), int(0.55 * height), 1.0, -1)
    vignette = cv2.GaussianBlur(vignette, (15, 15), 0)
    noise = rng.normal(0, 3, picture.shape).astype(np.float32)
    return np.clip((picture + noise) * vignette[..., None], 0, 255).astype(np.uint8)
