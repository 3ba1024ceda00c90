"""``endolink publish`` follows its uplink: the level choice from sequences of rates (pure), the
encoder below aiortc's floor, and end to end the stamped test pattern published through a
capped link — the viewer's picture steps down under a 400 kbit/s cap and back up once it is
lifted, frames arriving throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCRtpCodecParameters

from bench.shaper import RateLimit
from bench.udpproxy import ImpairmentProxy
from client.reconnect import LiveSource, keep_publishing
from client.testpattern import TestPatternTrack
from client.uplink import (
    DOWN_HOLD_S,
    LEVELS,
    UP_HOLD_S,
    AdaptiveEncoder,
    LevelChooser,
    scaled_size,
)
from client.whip import VIDEO_BACKLOG
from relay import FeedName, FeedState
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken
from tests.peers import ImpairedWhipClient, new_pc, viewer, wait_until
from tests.relay.test_forwarding_flow import url

HELD_S = 4.0
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


pytestmark = pytest.mark.timeout(90)


async def test_the_published_picture_steps_down_under_a_capped_uplink_and_back_up(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    proxy = ImpairmentProxy()
    await proxy.start()
    source = LiveSource(TestPatternTrack(), VIDEO_BACKLOG)
    stop = asyncio.Event()

    async def pc_for(_: object) -> object:
        return new_pc()

    endpoint, token = url(client, f"/whip/{cid}"), make_token("clinic", cid)
    publishing = asyncio.ensure_future(
        keep_publishing(
            [source],
            pc_for,  # type: ignore[arg-type]
            lambda: ImpairedWhipClient(endpoint, token, proxy),
            stop,
            "publishing",
        )
    )
    heights: list[tuple[float, int]] = []
    try:
        relay = client.app[RELAY]
        assert await wait_until(lambda: _live(relay.find(cid)), 15)
        async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid), ("video",)) as (
            _,
            _,
            received,
        ):
            received.on_video.append(lambda f: heights.append((time.monotonic(), f.height)))
            # Uncapped, it starts at 720p.
            assert await wait_until(lambda: heights and heights[-1][1] >= 540, 10), heights[-1:]
            proxy.cap(up=RateLimit(400_000))
            capped_at = time.monotonic()
            assert await wait_until(lambda: heights[-1][1] <= 360, 12), heights[-1]
            down_s = heights[-1][0] - capped_at
            settled_at = time.monotonic()
            await asyncio.sleep(HELD_S)  # still capped: the smaller picture keeps moving
            held = sum(1 for at, _ in heights if at >= settled_at)
            capped = heights[-1][1]
            proxy.cap(up=None)
            lifted_at = time.monotonic()
            # aiortc's estimate climbs 8 % a second (docs/benchmarks.md, "Uplink adaptation"):
            # a step up, not the whole way back to 720p, fits in a test.
            assert await wait_until(lambda: heights[-1][1] > capped, 25), heights[-1]
            up_s = heights[-1][0] - lifted_at
            print(f"down {down_s:.1f} s after the cap, up {up_s:.1f} s after lifting it")
            assert held >= 10 * HELD_S, f"{held} frames in {HELD_S} s at the capped level"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(publishing, 5)
        source.close()
        proxy.close()


def _live(router: object) -> bool:
    feed = getattr(router, "feeds", {}).get(FeedName.ENDOSCOPE)
    return feed is not None and feed.state is FeedState.LIVE


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
