"""The automatic-quality track (``relay.selector``) over two real Producers fed frames directly:
it swaps sources only at the target's keyframe once the target flows, keeps timestamps
increasing, sends the viewer's PLI to the source it decodes, and releases what it left."""

from __future__ import annotations

import asyncio

import pytest

from relay.codecs import is_keyframe
from relay.consumer import ForwardedFrame
from relay.ladder import Quality
from relay.producer import Producer
from relay.selector import STEADY_FRAMES, STEADY_WAIT_S, Selector
from tests.peers import wait_until

pytestmark = pytest.mark.timeout(20)

KEY = b"\x10\x02\x00\x9d\x01\x2a" + b"\x80\x02\xe0\x01" + b"k" * 200
DELTA = b"\x31\x02\x00" + b"d" * 100
TICK = 3000


class Source:
    def __init__(self, name: str) -> None:
        self.producer = Producer("video", "VP8", name)
        self.plis = 0
        self.producer.attach(self._pli)

    def _pli(self) -> bool:
        self.plis += 1
        return True

    def frame(self, pts: int, key: bool = False) -> None:
        self.producer.on_frame(KEY if key else DELTA, pts)


async def next_frame(selector: Selector) -> tuple[int, bool, Quality]:
    await asyncio.wait_for(selector.recv(), 2)
    assert selector.current is not None
    return selector.current.timestamp, selector.current.keyframe, selector.quality


async def test_it_swaps_at_the_targets_keyframe_with_increasing_timestamps() -> None:
    original, low = Source("original"), Source("360p")
    sources = {Quality.ORIGINAL: original, Quality.P360: low}
    changes: list[tuple[Quality, str]] = []
    releases = []
    selector = Selector(
        lambda q: sources[q].producer,
        lambda: releases.append(1),
        [(Quality.ORIGINAL, 1_600_000), (Quality.P360, 250_000)],
        lambda q, reason: changes.append((q, reason)),
        "viewer",
    )
    original.frame(0, key=True)
    original.frame(TICK)
    assert await next_frame(selector) == (0, True, Quality.ORIGINAL)
    assert await next_frame(selector) == (TICK, False, Quality.ORIGINAL)

    selector.want(Quality.P360, "connection")
    assert low.plis == 1  # subscribing asked the target for a keyframe
    low.frame(TICK)  # a delta frame of the target is never sent before its keyframe
    original.frame(2 * TICK)
    assert await next_frame(selector) == (2 * TICK, False, Quality.ORIGINAL)
    assert changes == []

    # the rung's keyframe for pts 2 ticks arrives after the original's frame of that pts, and
    # the rung flows: two more frames follow it
    low.frame(2 * TICK, key=True)
    low.frame(3 * TICK)
    low.frame(4 * TICK)
    original.frame(3 * TICK)
    timestamp, keyframe, quality = await next_frame(selector)
    assert keyframe and quality is Quality.P360 and timestamp > 2 * TICK
    assert changes == [(Quality.P360, "connection")]
    assert not original.producer.consumers, "the old subscription is stopped"
    assert releases
    later, _, _ = await next_frame(selector)
    assert later == timestamp + TICK, "the rung's frames follow on one clock"
    await next_frame(selector)

    selector.request_keyframe()
    assert low.plis >= 1 and original.plis == 1  # the viewer's PLI goes to what it decodes

    # back up: the original's keyframe is ahead of everything sent: no shift needed
    selector.want(Quality.ORIGINAL, "probe")
    original.frame(5 * TICK, key=True)
    assert await next_frame(selector) == (5 * TICK, True, Quality.ORIGINAL)
    assert [s.target for s in selector.switches] == [Quality.P360, Quality.ORIGINAL]
    selector.stop()
    assert not low.producer.consumers and not original.producer.consumers


async def test_changing_its_mind_before_the_keyframe_drops_the_pending_target() -> None:
    original, low = Source("original"), Source("360p")
    sources = {Quality.ORIGINAL: original, Quality.P360: low}
    selector = Selector(
        lambda q: sources[q].producer,
        lambda: None,
        [(Quality.ORIGINAL, None), (Quality.P360, 250_000)],
        lambda q, reason: None,
        "viewer",
    )
    selector.want(Quality.P360, "connection")
    assert low.producer.consumers
    selector.want(Quality.ORIGINAL, "recovered")
    assert not low.producer.consumers
    original.frame(0, key=True)
    assert await next_frame(selector) == (0, True, Quality.ORIGINAL)
    assert is_keyframe("VP8", KEY) and not is_keyframe("VP8", DELTA)
    selector.stop()


def _two_sources() -> tuple[Source, Source, Selector]:
    original, low = Source("original"), Source("360p")
    sources = {Quality.ORIGINAL: original, Quality.P360: low}
    selector = Selector(
        lambda q: sources[q].producer,
        lambda: None,
        [(Quality.ORIGINAL, 1_600_000), (Quality.P360, 250_000)],
        lambda q, reason: None,
        "viewer",
    )
    return original, low, selector


async def test_a_target_that_only_made_its_keyframe_does_not_take_the_viewer_yet() -> None:
    """A rung just started makes its keyframe, then may make nothing for a while (encoder set
    up, stale frames skipped): swapped at that keyframe, the viewer froze ~1 s. The original
    keeps flowing until frames follow the rung's keyframe, then they come without a wait."""
    original, low, selector = _two_sources()
    original.frame(0, key=True)
    assert await next_frame(selector) == (0, True, Quality.ORIGINAL)
    selector.want(Quality.P360, "connection")
    low.frame(TICK, key=True)
    for n in range(1, 4):
        original.frame(n * TICK)
        assert await next_frame(selector) == (n * TICK, False, Quality.ORIGINAL)
    assert selector.pending is Quality.P360
    for n in range(2, STEADY_FRAMES + 1):
        low.frame(n * TICK)
    got = [await next_frame(selector) for _ in range(STEADY_FRAMES)]
    assert [(key, quality) for _, key, quality in got] == [(True, Quality.P360)] + [
        (False, Quality.P360)
    ] * (STEADY_FRAMES - 1)
    timestamps = [timestamp for timestamp, _, _ in got]
    assert timestamps[0] > 3 * TICK, "after everything the original gave"
    assert timestamps == [timestamps[0] + n * TICK for n in range(STEADY_FRAMES)]
    selector.stop()


async def test_a_target_that_only_trickles_takes_the_viewer_after_a_bounded_wait() -> None:
    """The original may be what the viewer's link cannot carry: its keyframe alone takes the
    viewer once it has waited ``STEADY_WAIT_S``, even with nothing else arriving."""
    original, low, selector = _two_sources()
    original.frame(0, key=True)
    assert await next_frame(selector) == (0, True, Quality.ORIGINAL)
    selector.want(Quality.P360, "connection")
    low.frame(TICK, key=True)
    started = asyncio.get_running_loop().time()
    _, keyframe, quality = await next_frame(selector)
    waited = asyncio.get_running_loop().time() - started
    assert keyframe and quality is Quality.P360
    assert STEADY_WAIT_S * 0.9 <= waited < STEADY_WAIT_S + 1.0, waited
    selector.stop()


async def test_a_measured_rendition_started_again_is_measured_from_its_new_producer() -> None:
    """The annotated original is a rendition: after the viewer left it (stopped) and came back
    (a new Producer), its rate must be read from the new one, and never forgotten meanwhile."""
    first, low = Source("annotated original"), Source("360p")
    current = {Quality.ORIGINAL: first, Quality.P360: low}
    selector = Selector(
        lambda q: current[q].producer,
        lambda: None,
        [(Quality.ORIGINAL, None), (Quality.P360, 250_000)],
        lambda q, reason: None,
        "viewer",
    )
    for i in range(40):  # ~1.3 s of a 300 kB/s stream: its rate becomes known
        first.producer.on_frame(KEY if i == 0 else DELTA, i * TICK)
        await asyncio.sleep(0.03)
    selector._measure()
    known = level_bps(selector, Quality.ORIGINAL)
    assert known is not None and known > 0
    first.producer.close()  # the viewer moved down; the rendition stopped
    current[Quality.ORIGINAL] = second = Source("annotated original, again")
    selector._subscribe(Quality.ORIGINAL).stop()
    assert selector._measured[Quality.ORIGINAL] is second.producer
    selector._measure()  # nothing measured yet on the new one: the last known rate stays
    assert level_bps(selector, Quality.ORIGINAL) == known
    selector.stop()


def level_bps(selector: Selector, quality: Quality) -> float | None:
    return next(level.bps for level in selector.policy.levels if level.quality == quality)


async def test_a_pushed_selector_hands_frames_over_as_they_come_and_swaps_on_its_bound() -> None:
    """``deliver_to``: each frame reaches the reader in the source's push (no ``recv``); the
    swap at a flowing target's keyframe is the same; a target that only made its keyframe
    takes the viewer when the bounded wait ends, on a timer, with nothing else pushed."""
    original, low, selector = _two_sources()
    handed: list[tuple[int, bool, Quality]] = []

    def sink(frame: ForwardedFrame) -> None:
        assert selector.current is frame
        handed.append((frame.timestamp, frame.keyframe, selector.quality))

    original.frame(0, key=True)
    selector.deliver_to(sink)
    assert handed == [(0, True, Quality.ORIGINAL)]  # what was queued goes at once
    original.frame(TICK)
    assert handed[-1] == (TICK, False, Quality.ORIGINAL)

    selector.want(Quality.P360, "connection")
    low.frame(TICK, key=True)
    for n in range(2, STEADY_FRAMES + 1):
        assert selector.pending is Quality.P360
        low.frame(n * TICK)
    assert [(key, quality) for _, key, quality in handed[2:]] == [(True, Quality.P360)] + [
        (False, Quality.P360)
    ] * (STEADY_FRAMES - 1)
    assert not original.producer.consumers

    selector.want(Quality.ORIGINAL, "recovered")
    original.frame((STEADY_FRAMES + 1) * TICK, key=True)  # its keyframe, and nothing after it
    loop = asyncio.get_running_loop()
    started, count = loop.time(), len(handed)
    assert await wait_until(lambda: len(handed) > count, timeout=STEADY_WAIT_S + 2)
    waited = loop.time() - started
    assert handed[-1][1:] == (True, Quality.ORIGINAL)
    assert STEADY_WAIT_S * 0.9 <= waited < STEADY_WAIT_S + 1.0, waited

    ended = asyncio.ensure_future(selector.ended())
    selector.stop()
    await asyncio.wait_for(ended, 1)
    assert not low.producer.consumers and not original.producer.consumers


async def test_a_failing_pushed_reader_stops_the_selector(caplog: pytest.LogCaptureFixture) -> None:
    original, low, selector = _two_sources()

    def broken(frame: ForwardedFrame) -> None:
        raise ConnectionResetError("gone")

    selector.deliver_to(broken)
    with caplog.at_level("WARNING", logger="relay.selector"):
        original.frame(0, key=True)
        original.frame(TICK)  # after the stop: nobody takes it, nothing raised
    assert selector.readyState == "ended" and not original.producer.consumers
    (record,) = caplog.records
    assert "Selector(viewer) reader failed, stopped (ConnectionResetError: gone)" in record.message
