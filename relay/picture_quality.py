"""Picture quality of the live endoscope: is it sharp, well exposed, of a natural colour?

Pure measures on one small frame (``measure``) and a verdict with hysteresis over about a second
and a half (``Judge``); ``relay.picture_guard`` samples the decoded feed with them. Every measure
runs on a copy scaled to ``ANALYSIS_WIDTH`` pixels wide (a few milliseconds a sample, and the
same numbers at 360p and 1080p) and only inside the endoscope's circular field: the inscribed
circle, shrunk a little so neither the black vignette corners nor the sharp edge of the
vignette count.

Choices, and why:

* **Focus**: variance of the Laplacian, the measure ``web/js/stills.js`` scores stills with. Its
  raw value depends on the content (smooth mucosa scores low even when sharp), so it is read as a
  ratio against the feed's own recent best (a running maximum that decays with a half-life of
  ``BEST_HALF_LIFE_S``, so a new scene resets it within a minute), with an absolute floor
  ``FOCUS_FLOOR`` under the best: a feed blurred from its first frame has no sharp best to be
  compared with, and is still found blurred. A Gaussian blur of a few pixels divides the
  variance by ten or more, so the thresholds sit far from both sharp and blurred. The variance
  is taken as if the field's mean luma were 128 (it grows with the square of the gain), so a
  darker picture is not also called blurred; nor is a field too dark or too bright to judge.
* **Exposure**: the fractions of clipped highlights (luma ≥ 250) and crushed shadows (≤ 12)
  inside the field, plus the mean luma (an over- or under-exposed picture need not clip much).
  Specular highlights are normal in endoscopy, so a few per cent of clipped pixels is fine.
* **Colour cast**: grey-world would call all mucosa red; instead the mean chroma (CIE Lab a*, b*)
  of the well-exposed pixels is compared with the hue of mucosa, pink to orange-red
  (``MUCOSA_HUE_DEG``). A wrong white balance or a tinted light moves it towards green, blue,
  yellow or magenta; a nearly grey picture (chroma under ``CAST_MIN_CHROMA``) has no cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np

ANALYSIS_WIDTH = 320
FIELD_MARGIN = 0.92
"The field is the inscribed circle of the frame, this fraction of its radius."
CLIPPED_LUMA = 250
CRUSHED_LUMA = 12

MIN_GAIN_LUMA = 16.0
"A darker field is not brightened further for the focus measure (it would only amplify noise)."
FOCUS_FLOOR = 45.0
"""The least the best is taken to be (Laplacian variance at 320 px, gain-free). Sharp synthetic
mucosa scores 35-340 (smooth tissue is low), the same blurred by σ 6 px ~12 (its sensor grain):
a feed blurred from its first frame reads blurred, smooth but sharp tissue does not."""
BEST_HALF_LIFE_S = 20.0
BLURRED_BELOW = 0.3
"Focus (ratio to the best) under which the picture is blurred; it is sharp again above ``+0.1``."
POOR_FOCUS = 0.15

BRIGHT_CLIPPED = 0.2
BRIGHT_MEAN = 200.0
DARK_CRUSHED = 0.35
DARK_MEAN = 45.0
EXPOSURE_RELEASE = 0.8
"An exposure hint clears once its measure is back under this fraction of its threshold."

MUCOSA_HUE_DEG = (-20.0, 75.0)
"Hue angle of the mean (a*, b*) that tissue under white light shows: magenta-pink to orange."
CAST_MIN_CHROMA = 8.0
"Mean chroma under which a picture has no colour to be cast."

_SEVERE = "severe "
"The prefix of a hint's severe form (it makes the level poor), debounced like the hint."
ON_S = 1.0
"A hint seen this long (continuously) is shown."
OFF_S = 1.5
"A shown hint unseen this long goes."


class Hint(StrEnum):
    """What is wrong with the picture (the ``picture`` message's ``hints``), in this order."""

    BLURRED = "blurred"
    "Focus under ``BLURRED_BELOW`` (a fogged or dirty lens, the scope moving)."
    TOO_BRIGHT = "too-bright"
    "Many clipped highlights, or a washed-out mean (light too strong, tissue too close)."
    TOO_DARK = "too-dark"
    "Many crushed shadows, or a dark mean (light too weak, the scope out of the body)."
    COLOUR_CAST = "colour-cast"
    "The mean hue outside that of mucosa (white balance, a tinted light)."


class Level(StrEnum):
    """Good: no hint; fair: one mild hint; poor: several, or one far past its threshold."""

    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"


@dataclass(frozen=True)
class Measures:
    """One sample's raw measures (the field only)."""

    sharpness: float
    "Variance of the Laplacian at ``ANALYSIS_WIDTH``, as if the mean luma were 128 (gain-free)."
    clipped: float
    crushed: float
    mean_luma: float
    hue_deg: float
    chroma: float


_masks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _field(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The field (bool) and, for the Laplacian, the field shrunk by its 3×3 reach."""
    masks = _masks.get((height, width))
    if masks is None:
        disk = np.zeros((height, width), np.uint8)
        radius = int(min(height, width) / 2 * FIELD_MARGIN)
        cv2.circle(disk, (width // 2, height // 2), radius, 1, -1)
        inner = cv2.erode(disk, np.ones((5, 5), np.uint8))
        masks = _masks[(height, width)] = (disk.astype(bool), inner.astype(bool))
    return masks


def analysis_size(width: int, height: int) -> tuple[int, int]:
    """The size a frame is scaled to before ``measure`` (never up, even dimensions)."""
    scale = min(1.0, ANALYSIS_WIDTH / width)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian over the whole (small) gray frame: the snapshot scorer's."""
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def measure(bgr: np.ndarray) -> Measures:
    """The measures of one small BGR frame (already at ``analysis_size``)."""
    height, width = bgr.shape[:2]
    disk, inner = _field(height, width)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)
    luma = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    laplacian = cv2.Laplacian(luma, cv2.CV_32F)[inner]
    inside = luma[disk]
    count = max(1, inside.size)
    exposed = disk & (luma > CRUSHED_LUMA) & (luma < CLIPPED_LUMA)
    a = float(lab[..., 1][exposed].mean()) - 128.0 if exposed.any() else 0.0
    b = float(lab[..., 2][exposed].mean()) - 128.0 if exposed.any() else 0.0
    mean_luma = float(inside.mean()) if inside.size else 0.0
    gain = (128.0 / max(mean_luma, MIN_GAIN_LUMA)) ** 2
    return Measures(
        sharpness=float(laplacian.var()) * gain if laplacian.size else 0.0,
        clipped=float(np.count_nonzero(inside >= CLIPPED_LUMA)) / count,
        crushed=float(np.count_nonzero(inside <= CRUSHED_LUMA)) / count,
        mean_luma=mean_luma,
        hue_deg=math.degrees(math.atan2(b, a)),
        chroma=math.hypot(a, b),
    )


@dataclass(frozen=True)
class Verdict:
    level: Level
    hints: tuple[Hint, ...]
    focus: float
    "0..1: sharpness as a fraction of the feed's recent best (or the floor)."


GOOD = Verdict(Level.GOOD, (), 1.0)


def _cast(m: Measures) -> bool:
    low, high = MUCOSA_HUE_DEG
    return m.chroma >= CAST_MIN_CHROMA and not low <= m.hue_deg <= high


@dataclass
class Judge:
    """Turns samples into a verdict that does not flicker: a hint must be seen for ``ON_S`` to
    show and be gone for ``OFF_S`` to go, and each clears only past a margin (hysteresis)."""

    best: float = 0.0
    focus: float = 1.0
    _best_at: float | None = None
    _seen: dict[str, float] = field(default_factory=dict)
    "When each condition (a hint, or a hint's severe form) was first seen in this run of samples."
    _unseen: dict[str, float] = field(default_factory=dict)
    _shown: set[str] = field(default_factory=set)

    def add(self, m: Measures, now: float) -> Verdict:
        self._rate_focus(m.sharpness, now)
        shown = self._shown
        bright = _over(m.clipped, BRIGHT_CLIPPED, Hint.TOO_BRIGHT in shown) or _over(
            m.mean_luma, BRIGHT_MEAN, Hint.TOO_BRIGHT in shown
        )
        dark = _over(m.crushed, DARK_CRUSHED, Hint.TOO_DARK in shown) or _under(
            m.mean_luma, DARK_MEAN, Hint.TOO_DARK in shown
        )
        # A washed-out or dark field cannot be judged for focus: its exposure is the fix.
        blurred = self.focus < BLURRED_BELOW + (0.1 if Hint.BLURRED in shown else 0.0)
        present = {
            Hint.BLURRED: blurred and not (bright or dark),
            Hint.TOO_BRIGHT: bright,
            Hint.TOO_DARK: dark,
            Hint.COLOUR_CAST: _cast(m),
            _SEVERE + Hint.BLURRED: self.focus < POOR_FOCUS,
            _SEVERE + Hint.TOO_BRIGHT: m.clipped >= 2 * BRIGHT_CLIPPED,
            _SEVERE + Hint.TOO_DARK: m.mean_luma < DARK_MEAN / 2,
        }
        for condition, seen in present.items():
            if seen:
                self._unseen.pop(condition, None)
                if now - self._seen.setdefault(condition, now) >= ON_S:
                    shown.add(condition)
            else:
                self._seen.pop(condition, None)
                if condition in shown and now - self._unseen.setdefault(condition, now) >= OFF_S:
                    shown.discard(condition)
                    del self._unseen[condition]
        return self.verdict()

    def verdict(self) -> Verdict:
        hints = tuple(hint for hint in Hint if hint in self._shown)
        if not hints:
            level = Level.GOOD
        elif len(hints) > 1 or any(_SEVERE + hint in self._shown for hint in hints):
            level = Level.POOR
        else:
            level = Level.FAIR
        return Verdict(level, hints, round(self.focus, 2))

    def _rate_focus(self, value: float, now: float) -> None:
        if self._best_at is not None:
            self.best *= 0.5 ** ((now - self._best_at) / BEST_HALF_LIFE_S)
        self.best, self._best_at = max(self.best, value), now
        self.focus = min(1.0, value / max(self.best, FOCUS_FLOOR))


def _over(value: float, threshold: float, shown: bool) -> bool:
    return value >= threshold * (EXPOSURE_RELEASE if shown else 1.0)


def _under(value: float, threshold: float, shown: bool) -> bool:
    return value <= threshold / (EXPOSURE_RELEASE if shown else 1.0)
