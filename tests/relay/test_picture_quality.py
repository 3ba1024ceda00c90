"""Picture-quality measures and verdicts on synthetic endoscopy frames: a sharp, well-lit frame
is not flagged; a blurred, an over-exposed, a dark and a tinted one each get their hint, and only
after the hint has been seen for ``ON_S`` (no flicker)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from client.endoscopy import OUT_OF_VIEW_S, SyntheticEndoscopy
from relay.picture_quality import (
    OFF_S,
    ON_S,
    Hint,
    Judge,
    Level,
    Verdict,
    analysis_size,
    measure,
)

SEQUENCE = SyntheticEndoscopy(seconds=7.0)
SHARP = [i for i in range(0, 200, 10) if not SEQUENCE.frame(i).blurred]


def endoscope_frame(n: int) -> np.ndarray:
    """The ``n``-th sharp, in-view frame of the synthetic sequence."""
    return SEQUENCE.frame(SHARP[n % len(SHARP)]).bgr


Transform = Callable[[np.ndarray], np.ndarray]


def small(bgr: np.ndarray) -> np.ndarray:
    width, height = analysis_size(bgr.shape[1], bgr.shape[0])
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def judged(frames: list[np.ndarray], seconds: float = 3.0, rate: float = 3.0) -> Verdict:
    """The verdict after ``seconds`` of samples cycling through ``frames``, after 3 s sharp."""
    judge = Judge()
    now = 0.0
    sharp = [small(endoscope_frame(i)) for i in range(3)]
    for i in range(int(3 * rate)):
        judge.add(measure(sharp[i % 3]), now)
        now += 1 / rate
    verdict = judge.verdict()
    measured = [measure(small(frame)) for frame in frames]
    for i in range(int(seconds * rate)):
        verdict = judge.add(measured[i % len(measured)], now)
        now += 1 / rate
    return verdict


def tint(bgr: np.ndarray, delta: tuple[int, int, int]) -> np.ndarray:
    return np.clip(bgr.astype(np.int16) + np.array(delta, np.int16), 0, 255).astype(np.uint8)


def test_sharp_frames_are_good() -> None:
    verdict = judged([endoscope_frame(i) for i in range(10, 16)])
    assert verdict.level is Level.GOOD and verdict.hints == ()
    assert verdict.focus > 0.5


CASES: dict[str, tuple[Transform, Hint]] = {
    "blurred": (lambda f: cv2.GaussianBlur(f, (0, 0), 4), Hint.BLURRED),
    "over-exposed": (lambda f: cv2.convertScaleAbs(f, alpha=2.0, beta=40), Hint.TOO_BRIGHT),
    "dark": (lambda f: cv2.convertScaleAbs(f, alpha=0.2), Hint.TOO_DARK),
    "green": (lambda f: tint(f, (0, 60, -40)), Hint.COLOUR_CAST),
    "blue": (lambda f: tint(f, (70, 10, -60)), Hint.COLOUR_CAST),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_picture_gets_its_hint(case: str) -> None:
    transform, hint = CASES[case]
    verdict = judged([transform(endoscope_frame(i)) for i in range(10, 16)])
    assert verdict.hints == (hint,)
    assert verdict.level in (Level.FAIR, Level.POOR)


def test_a_feed_blurred_from_its_first_frame_is_blurred() -> None:
    judge = Judge()
    blurred = measure(small(cv2.GaussianBlur(endoscope_frame(0), (0, 0), 6)))
    verdict = judge.verdict()
    for i in range(9):
        verdict = judge.add(blurred, i / 3)
    assert verdict.hints == (Hint.BLURRED,)


def test_a_moment_of_blur_is_not_flagged_and_a_hint_goes_after_the_picture_recovers() -> None:
    judge = Judge()
    sharp = measure(small(endoscope_frame(0)))
    blurred = measure(small(cv2.GaussianBlur(endoscope_frame(0), (0, 0), 4)))
    for i in range(6):
        judge.add(sharp, i / 3)
    assert judge.add(blurred, 2.0).hints == ()
    assert judge.add(blurred, 2.0 + ON_S / 2).hints == ()
    assert judge.add(sharp, 2.0 + ON_S).hints == ()
    for i in range(6):
        judge.add(blurred, 3.0 + i / 3)
    assert judge.verdict().hints == (Hint.BLURRED,)
    assert judge.add(sharp, 5.0).hints == (Hint.BLURRED,)  # held for OFF_S
    assert judge.add(sharp, 7.0).hints == ()


def test_the_vignette_corners_do_not_count_as_dark() -> None:
    m = measure(small(endoscope_frame(0)))
    assert m.crushed < 0.05


def test_on_the_synthetic_sequence_only_the_scope_out_is_flagged() -> None:
    """Its blur bursts last under ``ON_S`` (a moment of blur is no reason to bother the clinic);
    its out-of-view span (7-9 s: dark, defocused) reads too dark, from ``ON_S`` into it until
    ``OFF_S`` after it."""
    judge = Judge()
    flagged: dict[Hint, list[float]] = {hint: [] for hint in Hint}
    sequence = SyntheticEndoscopy()
    for index in range(0, sequence.count, 10):  # 3 samples a second
        at = index / sequence.fps
        for hint in judge.add(measure(small(sequence.frame(index).bgr)), at).hints:
            flagged[hint].append(at)
    (start, end), *_ = OUT_OF_VIEW_S
    assert flagged[Hint.TOO_DARK]
    assert start + ON_S - 0.01 <= min(flagged[Hint.TOO_DARK]) <= start + ON_S + 0.4
    assert end <= max(flagged[Hint.TOO_DARK]) <= end + OFF_S + 0.4
    assert not flagged[Hint.BLURRED] and not flagged[Hint.TOO_BRIGHT]
    assert not flagged[Hint.COLOUR_CAST]
