"""The pure parts of ``bench.ladder``: SSIM on known pictures, and fps, freezes, latency and the
quality timeline from logs of shown frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench import ladder_stats as stats
from bench.common import luma
from client.testpattern import TestPatternTrack

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def shown(start: float, count: int, fps: float = 30.0, height: int = 720, exact: bool = True):
    """``count`` frames at ``fps`` from ``start``, counters from ``start * fps``."""
    first = round(start * fps)
    return [
        (start + i / fps, first + i, 40.0 + i % 10, height * 16 // 9, height, exact)
        for i in range(count)
    ]


def test_ssim_of_two_flat_pictures_is_the_luminance_term_alone() -> None:
    a = np.full((90, 160), 100, np.uint8)
    b = np.full((90, 160), 110, np.uint8)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)
    assert stats.ssim_at_received(a, a) == pytest.approx(1.0)
    assert stats.ssim_at_received(b, a) == pytest.approx(expected, rel=1e-5)


def test_ssim_falls_as_noise_grows() -> None:
    rng = np.random.default_rng(3)
    source = luma(TestPatternTrack(640, 360).frame(5, 0))
    scores = []
    for sigma in (0, 4, 16):
        noisy = np.clip(source + rng.normal(0, sigma, source.shape), 0, 255).astype(np.uint8)
        scores.append(stats.ssim_at_received(noisy, source))
    assert scores[0] == pytest.approx(1.0)
    assert 1.0 > scores[1] > scores[2] > 0.2


def test_a_perfect_rung_is_perfect_at_its_size_but_not_as_shown() -> None:
    source = luma(TestPatternTrack(1280, 720).frame(40, 0))
    rung = cv2.resize(source, (640, 360), interpolation=cv2.INTER_AREA)
    assert stats.ssim_at_received(rung, source) == pytest.approx(1.0)
    assert 0.5 < stats.ssim_as_shown(rung, source) < 0.99
    assert stats.ssim_as_shown(source, source) == pytest.approx(1.0)


def test_samples_are_compared_with_the_source_frame_of_their_counter() -> None:
    pattern = TestPatternTrack(1280, 720)
    right = luma(pattern.frame(30, 123456)).copy()  # a different clock in the stamp rows
    small = cv2.resize(luma(pattern.frame(60, 0)), (640, 360), interpolation=cv2.INTER_AREA)
    rows = stats.ssim_vs_pattern({30: right, 60: small, 90: luma(pattern.frame(10, 0))}, 1280, 720)
    by_counter = {r[0]: r for r in rows}
    assert by_counter[30][1:] == [720, pytest.approx(1.0), pytest.approx(1.0)]
    assert by_counter[60][1:3] == [360, pytest.approx(1.0)]
    assert by_counter[90][2] < 0.9  # another frame of the drifting texture
    medians = stats.ssim_by_height(rows)
    assert list(medians) == [720, 360] and medians[360][2] == 1


def test_stamp_rows_scale_with_the_picture() -> None:
    assert stats.stamp_rows(720, 720) == 32
    assert stats.stamp_rows(360, 720) == 16
    assert stats.stamp_rows(540, 720) == 24


def test_a_steady_stream_has_its_frame_rate_and_no_freeze() -> None:
    frames = shown(0.0, 300)  # 10 s at 30 fps
    s = stats.summarise(frames, 1.0, 9.0)
    assert s["fps"] == pytest.approx(30.0, abs=0.2)
    assert s["freezes_500"] == 0 and s["longest_gap_ms"] < 40
    assert s["latency_p50"] == pytest.approx(44.5, abs=0.6)
    assert s["sizes"] == ["1280x720"] and s["bit_exact"] == 1.0
    assert s["shares"] == {"original": 1.0}


def test_a_gap_over_500_ms_is_one_freeze_and_its_length_the_longest() -> None:
    frames = shown(0.0, 90) + shown(3.7, 90)  # nothing shown from 2.967 s to 3.7 s
    s = stats.summarise(frames, 0.0, 6.0)
    assert s["freezes_500"] == 1
    assert s["longest_gap_ms"] == pytest.approx(733, abs=2)
    [[start, ms]] = s["long_freezes"]
    assert start == pytest.approx(89 / 30) and ms == pytest.approx(733, abs=2)
    assert s["fps"] == pytest.approx((90 + 70) / 6.0, abs=0.2)  # 70 of the second run by 6 s


def test_a_stream_that_stops_freezes_until_the_end_of_the_window() -> None:
    s = stats.summarise(shown(0.0, 30), 0.0, 4.0)
    assert s["freezes_500"] == 1 and s["longest_gap_ms"] == pytest.approx(3033, abs=2)
    empty = stats.summarise([], 0.0, 4.0)
    assert empty["fps"] == 0 and empty["longest_gap_ms"] == pytest.approx(4000)
    assert empty["bit_exact"] is None and empty["latency_p50"] is None


def test_repeated_counters_are_not_counted_twice_in_the_frame_rate() -> None:
    frames = shown(0.0, 60)
    frames += [(f[0] + 0.001, *f[1:]) for f in frames]
    frames.sort()
    assert stats.summarise(frames, 0.0, 2.0)["fps"] == pytest.approx(30.0, abs=0.5)


def test_the_timeline_names_each_quality_change_once() -> None:
    frames = shown(0.0, 30) + shown(1.0, 60, height=360, exact=False) + shown(3.0, 30)
    assert stats.timeline(frames, -0.5) == [[0.5, "original"], [1.5, "360p"], [3.5, "original"]]
    shares = stats.time_shares(frames, 0.0, 4.0)
    assert shares == {"360p": pytest.approx(0.5), "original": pytest.approx(0.5)}


def test_quality_follows_bit_exactness_then_height() -> None:
    assert stats.quality_of(720, True) == "original"
    assert stats.quality_of(540, False) == "540p"
    assert stats.quality_of(720, False) == "720p re-encoded"


def test_the_viewer_target_needs_both_frame_rate_and_no_long_freeze() -> None:
    assert stats.meets_viewer_target({"fps": 29.0, "freezes_500": 0})
    assert not stats.meets_viewer_target({"fps": 24.0, "freezes_500": 0})
    assert not stats.meets_viewer_target({"fps": 29.0, "freezes_500": 1})
