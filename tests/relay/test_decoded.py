"""The shared decoder on its own: encoded test-pattern frames into the endoscope Producer (the
producer seam, as tests/relay/test_rendition.py), decoded frames out to samplers at their rates."""

from __future__ import annotations

import asyncio
import threading

import av
import pytest

from client.testpattern import read_stamp
from relay.codecs import VIDEO_CLOCK_RATE
from relay.decoded import DecodedFeed
from relay.producer import Producer
from tests.peers import wait_until
from tests.relay.test_rendition import HEIGHT, WIDTH, Clinic
from tests.relay.test_vp8_header import CHROMIUM_L1T3, read_ivf


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("decoded ")]


async def test_samplers_get_decoded_frames_at_their_rates_and_stop_cleanly() -> None:
    clinic = Clinic("VP8")
    feed = DecodedFeed(clinic.producer, "test")
    every: list[tuple[int, int, int]] = []
    third: list[int] = []

    def on_every(frame: av.VideoFrame, pts: int) -> None:
        small = frame.reformat(width=WIDTH // 2, height=HEIGHT // 2, format="gray")
        every.append((pts, read_stamp(frame)[0], small.width))

    def on_third(frame: av.VideoFrame, pts: int) -> None:
        third.append(pts)

    assert not feed.running and not decode_threads(), "nothing decodes before a sampler"
    first = feed.sample(0, on_every, "every frame")
    second = feed.sample(0.1, on_third, "every 0.1 s")
    assert feed.running and len(decode_threads()) == 1, "one thread, however many samplers"
    try:
        await clinic.send(30)
        await asyncio.sleep(0.3)
        assert len(every) >= 25
        assert all(pts == stamp * 3000 for pts, stamp, _ in every), "the frame's own pts"
        assert every[-1][1] == 29 and every[-1][2] == WIDTH // 2
        gaps = [b - a for a, b in zip(third, third[1:], strict=False)]
        assert 8 <= len(third) <= 11 and min(gaps) >= 0.1 * VIDEO_CLOCK_RATE * 0.8, third
        first.stop()
        await clinic.send(3)
        await asyncio.sleep(0.1)
        assert every[-1][1] <= 30, "a stopped sampler is called no more"
        assert feed.running, "the other sampler still samples"
        second.stop()
        await asyncio.sleep(0.1)
        assert not feed.running and not decode_threads(), "the last one stops the thread"
        assert clinic.producer.consumers == set(), "and its Consumer"
        assert feed.frames_decoded >= 30 and feed.cpu_s > 0
        # A new sampler starts a new thread, from the next keyframe (one is requested).
        again: list[int] = []
        third_sampling = feed.sample(0, lambda f, pts: again.append(pts), "again")
        await clinic.send(10)
        await asyncio.sleep(0.2)
        assert again and again[0] >= 33 * 3000
        third_sampling.stop()
    finally:
        await feed.close()
    assert not decode_threads()
    assert feed.sample(0, on_every, "late").calls == 0, "a closed feed starts nothing"
    assert not decode_threads()


async def test_a_failing_sampler_never_ends_the_thread() -> None:
    clinic = Clinic("VP8")
    feed = DecodedFeed(clinic.producer, "test")
    seen: list[int] = []

    def broken(frame: av.VideoFrame, pts: int) -> None:
        raise RuntimeError("analysis failed")

    bad = feed.sample(0, broken, "broken")
    feed.sample(0, lambda f, pts: seen.append(pts), "fine")
    try:
        await clinic.send(10)
        await asyncio.sleep(0.2)
        assert bad.errors >= 8 and len(seen) >= 8
    finally:
        await feed.close()
    assert not decode_threads()


@pytest.mark.parametrize(("every_s", "undecoded"), [(0.2, range(6, 13)), (0.0, range(1))])
async def test_frames_nothing_depends_on_are_decoded_only_when_a_sampler_is_due(
    every_s: float, undecoded: range
) -> None:
    """Chromium's VP8 L1T3 (tests/relay/test_vp8_header.py): a sampler every 0.2 s is due for
    few of the 12 top-layer frames, which stay undecoded; one that wants every frame gets all."""
    producer = Producer("video", "VP8", "test")
    producer.attach(lambda: True)
    feed = DecodedFeed(producer, "test")
    seen: list[int] = []
    feed.sample(every_s, lambda frame, pts: seen.append(pts), "sampler")
    try:
        for index, frame in enumerate(read_ivf(CHROMIUM_L1T3)):
            producer.on_frame(frame, index * 3000)
            await asyncio.sleep(1 / 30)
        assert await wait_until(
            lambda: feed.frames_decoded + feed.frames_not_decoded == 24, timeout=3
        )
    finally:
        await feed.close()
    assert feed.frames_not_decoded in undecoded, feed.frames_not_decoded
    assert feed.frames_decoded == 24 - feed.frames_not_decoded
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert seen and max(gaps, default=0) <= (every_s + 1 / 30) * VIDEO_CLOCK_RATE, seen
