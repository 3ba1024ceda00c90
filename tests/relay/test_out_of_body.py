"""The out-of-body classifier and its hysteresis on synthetic rooms, faces and mucosa."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from client.endoscopy import SyntheticEndoscopy
from relay.out_of_body import ANALYSIS_HEIGHT, ANALYSIS_WIDTH, Hysteresis, classify
from tests.privacy_scenes import close_face, mucosa, room

SAMPLES = 200


def _flagged(frames: list[np.ndarray]) -> float:
    verdicts = [classify(frame) for frame in frames]
    return sum(1 for v in verdicts if v is not None and v.out_of_body) / len(frames)


def test_rooms_of_every_wall_colour_are_outside_the_body() -> None:
    """Off-white, grey, green, blue, pinkish and salmon walls, beige, a dim room; furniture and
    a face in each."""
    assert _flagged([room(seed) for seed in range(SAMPLES)]) >= 0.97


def test_a_face_filling_the_picture_is_outside_the_body() -> None:
    assert _flagged([close_face(seed) for seed in range(SAMPLES)]) >= 0.97


def test_mucosa_is_inside_the_body() -> None:
    """Pale, skin-coloured mucosa is the hard case: a few per cent at most, for single frames
    (the hysteresis needs half a second of them)."""
    assert _flagged([mucosa(seed) for seed in range(SAMPLES)]) <= 0.03


def test_a_dark_frame_says_nothing() -> None:
    assert classify(np.zeros((108, 192, 3), np.uint8)) is None
    assert classify(np.full((108, 192, 3), 12, np.uint8)) is None


def test_every_feature_is_a_readable_fraction() -> None:
    verdict = classify(room(3))
    assert verdict is not None
    for value in vars(verdict.features).values():
        assert 0.0 <= value <= 1.0
    assert 0.0 <= verdict.probability <= 1.0


def test_classifying_a_small_frame_takes_milliseconds() -> None:
    frame = mucosa(5)
    started = time.process_time()
    for _ in range(50):
        classify(frame)
    per_frame_ms = (time.process_time() - started) / 50 * 1000
    assert per_frame_ms < 20  # ~2 ms measured; twice a second that is 0.4 % of a core


def _spans(
    truth: list[tuple[float, float]], seconds: float, rate_hz: float = 2.0
) -> list[list[float]]:
    """Sample a sequence at ``rate_hz`` (mucosa, rooms during ``truth``) through the hysteresis."""
    hysteresis, found = Hysteresis(), []
    for k in range(int(seconds * rate_hz)):
        t = k / rate_hz
        outside = any(start <= t < end for start, end in truth)
        frame = room(k) if outside else mucosa(k)
        verdict = classify(frame)
        changed = hysteresis.update(None if verdict is None else verdict.out_of_body, t)
        if changed is None:
            continue
        if hysteresis.out_of_body:
            found.append([changed, seconds])
        else:
            found[-1][1] = changed
    return found


def test_room_spans_are_found_within_a_second_and_none_inside_the_mucosa() -> None:
    truth = [(4.0, 7.0), (12.0, 15.5), (20.0, 21.0)]
    found = _spans(truth, 26.0)
    assert len(found) == len(truth), found
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - true_start) <= 1.0
        assert abs(end - true_end) <= 1.0
        assert start <= true_start  # backdated: the scope left after the last mucosa sample


def test_a_single_odd_frame_does_not_start_a_span() -> None:
    hysteresis = Hysteresis()
    samples = [False, False, True, False, False, None, True, None, False]
    assert all(hysteresis.update(v, k * 0.5) is None for k, v in enumerate(samples))
    assert not hysteresis.out_of_body


def test_leaving_takes_a_second_of_mucosa() -> None:
    hysteresis = Hysteresis()
    assert hysteresis.update(True, 0.0) is None
    assert hysteresis.update(True, 0.5) == 0.0
    assert hysteresis.update(False, 1.0) is None
    assert hysteresis.update(False, 1.5) is None
    assert hysteresis.update(False, 2.0) == 1.0
    assert not hysteresis.out_of_body


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_synthetic_endoscopy_sequence_s_room_spans_are_found(seed: int) -> None:
    """``client/endoscopy.py`` with room frames inserted (its dark "pulled out" seconds 7–9 are
    not out of the body: they must not start a span), sampled at 2 Hz like the guard."""
    truth = [(3.0, 5.0), (12.0, 14.5)]
    sequence = SyntheticEndoscopy(width=640, height=360, seconds=18.0, seed=seed, room_spans=truth)
    hysteresis, found = Hysteresis(), []
    wrong = 0
    for index in range(0, sequence.count, sequence.fps // 2):
        frame = sequence.frame(index)
        small = cv2.resize(
            frame.bgr, (ANALYSIS_WIDTH, ANALYSIS_HEIGHT), interpolation=cv2.INTER_AREA
        )
        verdict = classify(small)
        wrong += verdict is not None and verdict.out_of_body != frame.out_of_body
        t = index / sequence.fps
        changed = hysteresis.update(None if verdict is None else verdict.out_of_body, t)
        if changed is not None and hysteresis.out_of_body:
            found.append([changed, sequence.seconds])
        elif changed is not None:
            found[-1][1] = changed
    assert wrong == 0
    assert len(found) == len(truth), found
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert true_start - 1.0 <= start <= true_start
        assert abs(end - true_end) <= 1.0
