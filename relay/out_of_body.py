"""Out of the body: is the endoscope filming mucosa, or the room (walls, furniture, faces)?

When the scope is pulled out it films the examination room and the people in it, and those
frames would go into the recording. This module tells the two apart from colour and texture
statistics of a small frame — pure functions, no asyncio, no PyAV, deterministic — so that the
sampler (``relay/privacy.py``) can mark those spans and replay and exports can hide them.

What separates them, measured inside the central disc where the endoscope's circular field is
(the black corners of the vignette say nothing):

* **redness**: mucosa is deeply red, pink or orange — its red-difference chroma (YCrCb ``Cr``)
  is far above that of anything else in a room. Each lit pixel scores 0 at ``Cr`` 140 (a beige or
  pinkish wall) rising to 1 at 175 (mucosa); the feature is the mean. A pink wall or skin is
  pale beside mucosa and scores about a third of it;
* **hue spread**: mucosa keeps to one hue family; a room mixes several (the circular spread of
  hue over saturated pixels);
* **long straight edges**: rooms are built of them (door frames, furniture, tiles, screens);
  tissue has curved vessels and folds — Canny edges and a probabilistic Hough transform count
  lines longer than a fifth of the frame width;
* **pale skin**: a face is skin-coloured but less red than mucosa (the skin band of YCrCb,
  below mucosa's ``Cr``).

They are combined by a logistic score with fixed, hand-set weights (see ``WEIGHTS``): every
number can be read and explained, nothing is trained at run time. A frame that is nearly all
dark (the scope in its port, a covered lens) or nearly all glare says nothing: ``classify``
answers ``None`` and the state stays as it was (``Hysteresis``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_WIDTH = 192
ANALYSIS_HEIGHT = 108
"Size the sampler gives frames (16:9; other sizes work too)."

DISC_RADIUS = 0.48
"Radius of the analysed disc, as a fraction of the frame's smaller side."
DARK_V = 55
"HSV value below this is vignette or shadow, not picture."
GLARE_V, GLARE_S = 235, 40
"Specular highlights: bright and colourless."
MIN_LIT = 0.2
"Below this fraction of lit, non-glare pixels in the disc the frame says nothing."
RED_CR = (140.0, 175.0)
"YCrCb ``Cr`` where a pixel's redness score goes from 0 to 1."
SKIN_CR = (133, 160)
SKIN_CB = (77, 130)
"Skin-coloured, but less red than mucosa: a face or a hand."
HUE_SAT = 30
"Hue spread is measured over pixels at least this saturated (grey has no hue)."
LINE_MIN_FRACTION = 0.2
"A straight edge counts when it is at least this fraction of the frame width long."

WEIGHTS = {
    "bias": 2.0,
    "redness": -7.0,
    "spread": 3.0,
    "lines": 6.0,
    "pale_skin": 3.0,
}
"""Logistic weights: the log-odds that the frame is outside the body are ``bias + Σ w·feature``.
A frame of fully red mucosa with no spread and no lines scores 2 − 7 = −5 (p ≈ 0.007); a grey
wall scores 2 + 3·spread + 6·lines ≥ 2 (p ≥ 0.88); a face close up (redness ≈ 0.4, pale skin ≈
0.8) about 2 − 2.8 + 2.4 = 1.6 (p ≈ 0.83)."""
THRESHOLD = 0.5


@dataclass(frozen=True)
class Features:
    """What one frame looked like (all 0..1)."""

    lit: float
    "Fraction of the disc that is lit picture (not vignette, shadow or glare)."
    redness: float
    "Mean redness score of the lit pixels (0: no redder than a beige wall, 1: mucosa-red)."
    spread: float
    "Circular spread of hue over saturated pixels (0: one hue, 1: all hues evenly)."
    lines: float
    "Total length of long straight edges, in frame widths, capped at 1."
    pale_skin: float
    "Fraction of lit pixels that are skin-coloured but pale (a face, a hand)."


@dataclass(frozen=True)
class Verdict:
    out_of_body: bool
    probability: float
    features: Features


def classify(bgr: np.ndarray) -> Verdict | None:
    """Is this (small, BGR uint8) frame outside the body? ``None``: it cannot tell (dark)."""
    features = measure(bgr)
    if features.lit < MIN_LIT:
        return None
    named = ("redness", "spread", "lines", "pale_skin")
    logit = WEIGHTS["bias"] + sum(WEIGHTS[name] * getattr(features, name) for name in named)
    probability = 1.0 / (1.0 + math.exp(-logit))
    return Verdict(probability >= THRESHOLD, probability, features)


def measure(bgr: np.ndarray) -> Features:
    height, width = bgr.shape[:2]
    disc = np.zeros((height, width), np.uint8)
    radius = round(DISC_RADIUS * min(height, width))
    cv2.circle(disc, (width // 2, height // 2), radius, 255, -1)
    inside = disc > 0
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    glare = (val >= GLARE_V) & (sat < GLARE_S)
    lit = inside & (val >= DARK_V) & ~glare
    count = int(lit.sum())
    if count < MIN_LIT * int(inside.sum()):
        return Features(count / max(1, int(inside.sum())), 0.0, 0.0, 0.0, 0.0)
    ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    low, high = RED_CR
    redness = float(np.clip((cr[lit].astype(np.float32) - low) / (high - low), 0.0, 1.0).mean())
    skin = (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    pale_skin = float((lit & skin).sum()) / count
    return Features(
        lit=count / int(inside.sum()),
        redness=redness,
        spread=_hue_spread(hue[lit & (sat >= HUE_SAT)]),
        lines=_long_lines(bgr, width),
        pale_skin=pale_skin,
    )


def _hue_spread(hues: np.ndarray) -> float:
    """1 − the mean resultant length of the hue angles: 0 when all agree."""
    if hues.size < 16:
        return 0.0
    angles = hues.astype(np.float32) * (2.0 * math.pi / 180.0)
    resultant = math.hypot(float(np.cos(angles).mean()), float(np.sin(angles).mean()))
    return max(0.0, 1.0 - resultant)


def _long_lines(bgr: np.ndarray, width: int) -> float:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    edges = cv2.Canny(gray, 60, 150)
    min_length = LINE_MIN_FRACTION * width
    lines = cv2.HoughLinesP(
        edges, 1, math.pi / 180, threshold=30, minLineLength=min_length, maxLineGap=3
    )
    if lines is None:
        return 0.0
    segments = lines.reshape(-1, 4).astype(np.float32)
    total = float(np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]).sum())
    return min(1.0, total / (4.0 * width))


class Hysteresis:
    """Out of body after ``enter_s`` of frames outside, back in after ``leave_s`` of mucosa.

    A span starts at the last sample that still showed mucosa (the scope left somewhere between
    it and the first room frame: erring towards hiding) and ends at the first mucosa sample of
    the run that brought it back. Samples that say nothing (``None``) keep the state.
    """

    def __init__(self, enter_s: float = 0.5, leave_s: float = 1.0) -> None:
        self.enter_s = enter_s
        self.leave_s = leave_s
        self.out_of_body = False
        self._last_in: float | None = None
        self._run_start: float | None = None
        "Time of the first sample of the current run that disagrees with the state."
        self._run_mark: float | None = None
        "Where a span would start (entering) or end (leaving) if the run holds."

    def update(self, verdict: bool | None, t: float) -> float | None:
        """One sample at time ``t`` (seconds, any clock that only goes forward). Returns the time
        the state changed at (backdated as described above) when it changed, else None."""
        if verdict is None:
            return None
        if verdict == self.out_of_body:
            self._run_start = self._run_mark = None
            if not verdict:
                self._last_in = t
            return None
        if self._run_start is None:
            self._run_start = t
            self._run_mark = (self._last_in if self._last_in is not None else t) if verdict else t
        if not verdict:
            self._last_in = t
        if t - self._run_start + 1e-9 < (self.enter_s if verdict else self.leave_s):
            return None
        changed_at = self._run_mark if self._run_mark is not None else t
        self.out_of_body = verdict
        self._run_start = self._run_mark = None
        return changed_at
