"""Producer → Consumer fan-out: keyframe gating, bounded queues, keyframe-request rate limit."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc.mediastreams import MediaStreamError

from relay.consumer import VIDEO_QUEUE_FRAMES, ForwardedFrame
from relay.forwarding import SharedPacketization
from relay.producer import KEYFRAME_REQUEST_INTERVAL_S, RATE_MIN_S, Producer
from tests.relay.test_codecs import VP8_DELTA, VP8_KEY


class Publisher:
    """Counts keyframe requests that reach the (fake) publisher's RTCP."""

    def __init__(self) -> None:
        self.plis = 0

    def send_pli(self) -> bool:
        self.plis += 1
        return True


def video_producer() -> tuple[Producer, Publisher]:
    producer = Producer("video", "VP8", "test")
    publisher = Publisher()
    producer.attach(publisher.send_pli)
    return producer, publisher


async def test_a_new_viewer_starts_at_a_keyframe_and_its_join_requests_one() -> None:
    producer, publisher = video_producer()
    consumer = producer.consume("viewer")
    assert publisher.plis == 1
    producer.on_frame(VP8_DELTA, 0)
    producer.on_frame(VP8_KEY, 3000)
    producer.on_frame(VP8_DELTA, 6000)
    first = await consumer.recv()
    second = await consumer.recv()
    assert (first.pts, second.pts) == (3000, 6000)
    assert bytes(first) == VP8_KEY


async def test_keyframe_requests_are_limited_to_two_per_second_but_never_lost() -> None:
    producer, publisher = video_producer()
    producer.consume("a")
    for _ in range(20):
        producer.request_keyframe()
    assert publisher.plis == 1
    await asyncio.sleep(KEYFRAME_REQUEST_INTERVAL_S + 0.1)
    assert publisher.plis == 2  # the coalesced, deferred request went out


async def test_a_slow_viewer_is_flushed_to_the_next_keyframe_and_others_are_untouched() -> None:
    producer, _ = video_producer()
    slow = producer.consume("slow")
    fast = producer.consume("fast")
    producer.on_frame(VP8_KEY, 0)
    received_fast = 0
    for i in range(1, VIDEO_QUEUE_FRAMES + 5):
        producer.on_frame(VP8_DELTA, i * 3000)
        await fast.recv()
        received_fast += 1
    await fast.recv()  # the initial keyframe was queued first; drain it too
    assert received_fast == VIDEO_QUEUE_FRAMES + 4
    assert not slow.synced and slow.frames_dropped > 0
    producer.on_frame(VP8_DELTA, 10**6)
    producer.on_frame(VP8_KEY, 10**6 + 3000)
    assert (await slow.recv()).pts == 10**6 + 3000


async def test_timestamps_follow_wall_clock_time_across_a_publisher_reconnect() -> None:
    producer, _ = video_producer()
    consumer = producer.consume("viewer")
    producer.on_frame(VP8_KEY, 0)
    producer.on_frame(VP8_DELTA, 3000)
    producer.attach(Publisher().send_pli)  # the clinic reconnected: its timestamps restart at 0
    await asyncio.sleep(0.3)
    producer.on_frame(VP8_KEY, 0)
    producer.on_frame(VP8_DELTA, 3000)
    pts = [(await consumer.recv()).pts for _ in range(4)]
    assert pts[0] < pts[1] < pts[2] < pts[3]
    assert pts[2] - pts[1] >= 0.3 * 90_000  # the 0.3 s pause, not one frame interval
    assert pts[3] - pts[2] == 3000


async def test_stopped_consumer_is_released_and_its_recv_ends() -> None:
    producer, _ = video_producer()
    consumer = producer.consume("viewer")
    waiter = asyncio.ensure_future(consumer.recv())
    await asyncio.sleep(0)
    consumer.stop()
    with pytest.raises(MediaStreamError):
        await waiter
    assert consumer not in producer.consumers


async def test_a_frame_is_packetized_once_however_many_viewers_receive_it() -> None:
    producer, _ = video_producer()
    consumers = [producer.consume(f"v{i}") for i in range(3)]
    calls = 0
    pack = producer._packetizer.pack

    def counting_pack(packet):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return pack(packet)

    producer._packetizer.pack = counting_pack  # type: ignore[method-assign]
    producer.on_frame(VP8_KEY, 0)
    assert calls == 1
    senders = [SharedPacketization(c, "VP8") for c in consumers]
    payloads = [s.pack(await c.recv()) for s, c in zip(senders, consumers, strict=True)]
    assert all(p[0] is payloads[0][0] for p in payloads)  # the same payloads, not copies
    assert calls == 1


async def test_a_keyframe_answers_the_pending_request_and_the_next_one_goes_at_once() -> None:
    producer, publisher = video_producer()
    producer.consume("a")  # its join asks for a keyframe
    producer.request_keyframe()  # deferred behind the limit...
    producer.on_frame(VP8_KEY, 0)  # ...and answered by this keyframe: not sent
    await asyncio.sleep(KEYFRAME_REQUEST_INTERVAL_S + 0.1)
    assert publisher.plis == 1
    producer.on_frame(VP8_KEY, 3000)
    producer.request_keyframe()  # e.g. the relay gave up on a lost packet: no wait
    assert publisher.plis == 2


async def test_its_bitrate_is_known_to_a_viewer_arriving_after_a_second_of_frames() -> None:
    """The automatic quality compares the original's rate with the rungs' from a viewer's first
    feedback on: measured per viewer, it was unknown for ~2 s (first move to 540p, then 360p)."""
    producer, _ = video_producer()
    frames = round(30 * (RATE_MIN_S + 0.3))
    producer.on_frame(VP8_DELTA, 0)
    started = time.monotonic()
    assert producer.bitrate() is None, "one frame says nothing about a rate"
    for _ in range(frames):
        await asyncio.sleep(1 / 30)
        producer.on_frame(VP8_DELTA, producer.frames * 3000)
    bps = producer.bitrate()
    assert bps is not None
    expected = (frames + 1) * len(VP8_DELTA) * 8 / (time.monotonic() - started)
    assert 0.8 * expected < bps < 1.25 * expected, (bps, expected)


async def test_a_pushed_consumer_hands_each_frame_over_in_the_producers_call() -> None:
    """``deliver_to``: the frames queued before first, in order, then each frame as the
    Producer gets it (it is ``current`` then); keyframe gating as before; ``ended`` waits for
    the stop."""
    producer, _ = video_producer()
    consumer = producer.consume("viewer")
    producer.on_frame(VP8_DELTA, 0)  # before any keyframe: dropped, as ever
    producer.on_frame(VP8_KEY, 3000)
    producer.on_frame(VP8_DELTA, 6000)
    handed: list[tuple[int | None, bool]] = []

    def sink(frame: ForwardedFrame) -> None:
        handed.append((frame.packet.pts, consumer.current is frame))

    consumer.deliver_to(sink)
    assert handed == [(3000, True), (6000, True)] and consumer.queued == 0
    producer.on_frame(VP8_DELTA, 9000)
    assert handed[-1] == (9000, True)  # at once, not on a later turn of the loop
    assert consumer.queued == 0 and consumer.frames_forwarded == 3 and consumer.frames_dropped == 1

    ended = asyncio.ensure_future(consumer.ended())
    await asyncio.sleep(0)
    assert not ended.done()
    consumer.stop()
    await asyncio.wait_for(ended, 1)
    producer.on_frame(VP8_KEY, 12_000)
    assert len(handed) == 3 and consumer not in producer.consumers


async def test_a_failing_pushed_reader_stops_its_consumer_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that raises ends its own Consumer (as a reading task would end), named in one
    warning line; the Producer's other Consumers get the frame, before and after it."""
    producer, _ = video_producer()
    first, failing, last = (producer.consume(name) for name in ("first", "failing", "last"))
    got: dict[str, list[int | None]] = {"first": [], "last": []}
    first.deliver_to(lambda frame: got["first"].append(frame.packet.pts))
    last.deliver_to(lambda frame: got["last"].append(frame.packet.pts))

    def broken(frame: ForwardedFrame) -> None:
        raise RuntimeError("disk on fire")

    failing.deliver_to(broken)
    with caplog.at_level("WARNING", logger="relay.consumer"):
        producer.on_frame(VP8_KEY, 0)
        producer.on_frame(VP8_DELTA, 3000)
    assert got == {"first": [0, 3000], "last": [0, 3000]}
    assert failing.readyState == "ended" and failing not in producer.consumers
    (record,) = caplog.records
    assert "Consumer(failing) reader failed, stopped (RuntimeError: disk on fire)" in record.message
    assert record.exc_info is None
