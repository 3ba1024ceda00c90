"""``endolink publish`` follows its uplink: the level choice from sequences of rates (pure) and
the encoder below aiortc's floor. Behind a real capped link it is measured by ``bench.uplink``
(docs/benchmarks.md, "Uplink adaptation"): there the picture steps down, but the relay's
retransmission requests can still starve a full uplink (open)."""

from __future__ import annotations

from collections.abc import Iterator

from aiortc import RTCRtpCodecParameters

from client.testpattern import TestPatternTrack
from client.uplink import (
    DOWN_HOLD_S,
    LEVELS,
    UP_HOLD_S,
    AdaptiveEncoder,
    LevelChooser,
    scaled_size,
)

"Seconds the cap is held after the picture stepped down (frames must keep coming)."
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)


def names(chooser: LevelChooser, samples: Iterator[tuple[float, float]]) -> list[str]:
    return [chooser.update(kbps, at).name for at, kbps in samples]


def test_the_first_rate_picks_its_level_at_once() -> None:
    assert LevelChooser().update(2000, 0).name == "720p"
    assert LevelChooser().update(900, 0).name == "540p"
    assert LevelChooser().update(400, 0).name == "360p"
    assert LevelChooser().update(150, 0).name == "low"


def test_a_falling_rate_steps_down_after_a_short_hold_straight_to_the_level_that_fits() -> None:
    chooser = LevelChooser()
    chooser.update(2000, 0)
    steps = names(chooser, iter([(1, 400), (1 + DOWN_HOLD_S / 2, 420), (1 + DOWN_HOLD_S, 410)]))
    assert steps == ["720p", "720p", "360p"]


def test_a_dip_shorter_than_the_hold_changes_nothing() -> None:
    chooser = LevelChooser()
    chooser.update(1000, 0)
    assert names(chooser, iter([(1, 300), (2, 900), (3, 300), (4, 900)])) == ["540p"] * 4


def test_a_rising_rate_climbs_one_level_per_hold_and_only_with_a_margin() -> None:
    chooser = LevelChooser()
    chooser.update(200, 0)
    # Just at 360p's need: not enough margin to climb.
    assert names(chooser, iter([(t, 360) for t in range(1, 10)])) == ["low"] * 9
    steps = names(chooser, iter([(10 + t, 3000) for t in range(16)]))
    first_up = steps.index("360p")
    assert first_up == UP_HOLD_S
    assert steps[-1] == "720p"
    assert steps.count("360p") >= UP_HOLD_S and steps.count("540p") >= UP_HOLD_S


def test_a_rate_between_levels_holds_the_level_it_has() -> None:
    """Hysteresis: 1.6 Mbit/s keeps 720p, and does not climb to it from 540p."""
    up, down = LevelChooser(), LevelChooser()
    up.update(900, 0)
    down.update(2000, 0)
    samples = [(t, 1600) for t in range(1, 20)]
    assert set(names(up, iter(samples))) == {"540p"}
    assert set(names(down, iter(samples))) == {"720p"}


def test_frames_are_scaled_down_never_up_and_keep_the_aspect() -> None:
    assert scaled_size(1280, 720, LEVELS[1]) == (960, 540)
    assert scaled_size(1280, 720, LEVELS[3]) == (480, 270)
    assert scaled_size(640, 360, LEVELS[0]) == (640, 360)
    assert scaled_size(1920, 1080, LEVELS[2]) == (640, 360)


def test_the_encoder_goes_below_aiortcs_floor_and_scales_the_frame() -> None:
    """aiortc's VP8 clamps its target to 250 kbit/s; a 150 kbit/s link gets 150, at 270p."""
    encoder = AdaptiveEncoder(VP8)
    encoder.target_bitrate = 150_000
    assert encoder.target_bitrate == 150_000
    track = TestPatternTrack()
    sent = 0
    for n in range(60):
        payloads, _ = encoder.encode(track.frame(n, 0), force_keyframe=n == 0)
        sent += sum(len(p) for p in payloads)
    assert encoder.level is not None and encoder.level.name == "low"
    assert encoder._inner.codec.height == 270  # type: ignore[attr-defined]
    kbps = sent * 8 / 2 / 1000  # 60 frames at 30 fps
    assert kbps < 250, f"{kbps:.0f} kbit/s is not below aiortc's floor"


def test_small_moves_of_the_estimate_keep_the_codec_and_large_ones_renew_it() -> None:
    """A new codec is a keyframe: REMB's second-by-second moves must not make one each."""
    encoder = AdaptiveEncoder(VP8)
    track = TestPatternTrack()
    encoder.encode(track.frame(0, 0), force_keyframe=True)
    codec = encoder._inner.codec  # type: ignore[attr-defined]
    for n, rate in enumerate((1_400_000, 1_300_000, 1_600_000), start=1):
        encoder.target_bitrate = rate
        encoder.encode(track.frame(n, 0))
        assert encoder._inner.codec is codec  # type: ignore[attr-defined]
    encoder.target_bitrate = 1_000_000  # a third less
    encoder.encode(track.frame(4, 0))
    assert encoder._inner.codec is not codec  # type: ignore[attr-defined]
    assert encoder._inner.codec.bit_rate == 1_000_000  # type: ignore[attr-defined]
