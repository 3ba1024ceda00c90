"""``relay.remb``: the same estimates as aiortc's estimator, packet for packet, on streams that
exercise every branch of it (steady, bursty, congested, gaps, reordering, wrap-around)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator

import aiortc.rate
import pytest
from aiortc import RTCRtpReceiver
from aiortc.rate import RateCounter, RemoteBitrateEstimator

from relay import forwarding
from relay.remb import RembEstimator, WindowRate

Packet = tuple[int, int, int, int]
"(arrival_time_ms, abs_send_time, payload_size, ssrc), as ``RTCRtpReceiver`` passes them."

START_MS = 3_973_000_000_000  # aiortc's clock: milliseconds since 1900


def abs_send_time(seconds: float) -> int:
    """RFC abs-send-time: 6.18 fixed-point seconds, 24 bits (wraps every 64 s)."""
    return int(seconds * (1 << 18)) & 0xFFFFFF


def stream(
    seed: int,
    seconds: float,
    *,
    start_s: float = 10.0,
    fps: int = 30,
    packets_per_frame: tuple[int, int] = (3, 9),
    link_kbps: float | None = None,
    jitter_ms: float = 1.0,
    gaps: tuple[tuple[float, float], ...] = (),
    reorder: float = 0.0,
    ssrcs: tuple[int, ...] = (1234,),
) -> Iterator[Packet]:
    """A video publisher's packets as the relay receives them: frames of a few packets sent in
    a burst; behind a link of ``link_kbps`` a queue builds when more is sent than it carries
    (the delay the estimator detects); ``gaps`` are (from, to) seconds with nothing sent."""
    rng = random.Random(seed)
    queue_free_s = 0.0
    sent = start_s
    arrivals: list[tuple[float, int, int, int]] = []
    frame = 0
    while sent < start_s + seconds:
        if any(a <= sent - start_s < b for a, b in gaps):
            sent += 1 / fps
            continue
        ssrc = ssrcs[frame % len(ssrcs)]
        for _ in range(rng.randint(*packets_per_frame)):
            size = rng.randint(900, 1200)
            send = sent + rng.random() * 0.002
            if link_kbps is None:
                arrive = send + 0.02
            else:  # a bottleneck: each packet waits for the ones before it
                queue_free_s = max(queue_free_s, send) + size * 8 / (link_kbps * 1000)
                arrive = queue_free_s + 0.02
            arrive += rng.random() * jitter_ms / 1000
            arrivals.append((arrive, abs_send_time(send), size, ssrc))
        sent += 1 / fps
        frame += 1
    if reorder:  # a few packets overtaken on the way (their send time goes back)
        for i in range(1, len(arrivals)):
            if rng.random() < reorder:
                a, b = arrivals[i - 1], arrivals[i]
                arrivals[i - 1], arrivals[i] = (a[0], *b[1:]), (b[0], *a[1:])
    last_ms = 0
    for arrive, ast, size, ssrc in sorted(arrivals, key=lambda p: p[0]):
        last_ms = max(last_ms, START_MS + int(arrive * 1000))  # whole ms, never backwards
        yield last_ms, ast, size, ssrc


STREAMS = {
    "steady 1.5 Mbit/s": dict(seed=1, seconds=20, packets_per_frame=(5, 7)),
    "bursty keyframes": dict(seed=2, seconds=20, packets_per_frame=(1, 40)),
    "congested link": dict(seed=3, seconds=30, link_kbps=900, packets_per_frame=(4, 6)),
    "link that drains and fills": dict(seed=4, seconds=30, link_kbps=1400, jitter_ms=8),
    "gaps over a second": dict(seed=5, seconds=20, gaps=((3.0, 4.5), (9.0, 9.8), (12, 15))),
    "reordered": dict(seed=6, seconds=20, reorder=0.05, jitter_ms=4),
    "abs-send-time wraps": dict(seed=7, seconds=20, start_s=60.0),
    "two sources": dict(seed=8, seconds=15, ssrcs=(1, 2), fps=60),
}


@pytest.mark.parametrize("name", STREAMS)
def test_same_estimates_as_aiortc(name: str) -> None:
    ours, theirs = RembEstimator(), RemoteBitrateEstimator()
    got, expected = [], []
    for arrival, ast, size, ssrc in stream(**STREAMS[name]):  # type: ignore[arg-type]
        got.append(ours.add(arrival, ast, size, ssrc))
        expected.append(theirs.add(arrival, ast, size, ssrc))
    assert got == expected
    estimates = [e[0] for e in expected if e is not None]
    assert len(estimates) >= 10, "the stream must produce estimates to compare"
    if name == "congested link":  # the detector did fire: the estimate came down to the link
        assert min(estimates[len(estimates) // 2 :]) < 900_000


def test_window_rate_is_aiortc_rate_counter() -> None:
    rng = random.Random(9)
    ours, theirs = WindowRate(1000, 8000), RateCounter(1000, 8000)
    now = START_MS
    for step in range(5000):
        now += rng.choice((0, 0, 1, 3, 17, 400, 999, 1000, 1001, 2500))
        if step % 700 == 699:
            ours.reset()
            theirs.reset()
        if rng.random() < 0.7:
            size = rng.randint(1, 1500)
            ours.add(size, now)
            theirs.add(size, now)
        assert ours.rate(now) == theirs.rate(now)


def test_the_seam_is_the_one_written_against() -> None:
    """Fails when aiortc changes what ``RembEstimator`` replaces: re-check it then."""
    assert forwarding.AIORTC_VERSION == "1.16.0"
    estimator = inspect.getsource(RemoteBitrateEstimator)
    for used in (
        "self.incoming_bitrate = RateCounter(1000, 8000)",
        "self.inter_arrival = InterArrival(",
        "self.estimator = OveruseEstimator()",
        "self.incoming_bitrate.rate(arrival_time_ms)",
        "deltas = self.inter_arrival.compute_deltas(",
    ):
        assert used in estimator, used
    assert "self.__remote_bitrate_estimator = RemoteBitrateEstimator()" in inspect.getsource(
        RTCRtpReceiver
    )
    assert "min_frame_period = self.update_min_frame_period(" in inspect.getsource(
        aiortc.rate.OveruseEstimator.update
    )
