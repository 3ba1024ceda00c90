"""The token-bucket link (bench/shaper.py): the rate it lets through, the queue delay it builds
before it drops, and a cap changed while packets flow (real datagrams through the proxy)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.common import LOOPBACK
from bench.shaper import RateLimit, Shaper
from bench.udpproxy import ImpairmentProxy

PACKET = bytes(1000)


async def offer_load(shaper: Shaper, rate_bps: float, seconds: float) -> list[float]:
    """Submit 1000-byte packets at ``rate_bps`` for ``seconds``; the arrival times."""
    arrivals: list[float] = []
    interval = len(PACKET) * 8 / rate_bps
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        while sent * interval <= now - start:
            shaper.submit(PACKET, lambda _: arrivals.append(time.monotonic()))
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.5)  # let the queue drain
    return arrivals


async def test_an_overloaded_cap_passes_its_rate_queues_then_drops_at_the_tail() -> None:
    shaper = Shaper(RateLimit(400_000, queue_s=0.2))
    arrivals = await offer_load(shaper, 800_000, 2.0)
    span = arrivals[-1] - arrivals[0]
    rate = (len(arrivals) - 1) * len(PACKET) * 8 / span
    assert rate == pytest.approx(400_000, rel=0.1)
    assert shaper.stats.dropped > 0
    assert 0.15 < shaper.stats.max_queue_s < 0.3  # the queue filled to ~0.2 s, no further
    shaper.close()


async def test_a_load_under_the_cap_goes_through_without_queueing_or_loss() -> None:
    shaper = Shaper(RateLimit(1_000_000, queue_s=0.2))
    arrivals = await offer_load(shaper, 500_000, 1.0)
    assert shaper.stats.dropped == 0
    assert shaper.stats.max_queue_s < 0.02
    assert len(arrivals) == pytest.approx(500_000 / 8000, rel=0.1)
    shaper.close()


async def test_lifting_the_cap_flushes_the_queue_and_passes_everything() -> None:
    shaper = Shaper(RateLimit(200_000, queue_s=0.5))
    arrivals: list[float] = []
    for _ in range(10):
        shaper.submit(PACKET, lambda _: arrivals.append(time.monotonic()))
    assert len(arrivals) == 6  # the bucket's burst; the rest wait for tokens
    shaper.limit = None
    assert len(arrivals) == 10
    shaper.submit(PACKET, lambda _: arrivals.append(time.monotonic()))
    assert len(arrivals) == 11


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimit(0)
    with pytest.raises(ValueError):
        RateLimit(100_000, burst_bytes=100)


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += len(data)


async def test_the_proxy_caps_one_direction_and_not_the_other() -> None:
    loop = asyncio.get_running_loop()
    server_sink, client_sink = Sink(), Sink()
    server, _ = await loop.create_datagram_endpoint(lambda: server_sink, local_addr=(LOOPBACK, 0))
    client, _ = await loop.create_datagram_endpoint(lambda: client_sink, local_addr=(LOOPBACK, 0))
    proxy = ImpairmentProxy(down_limit=RateLimit(160_000, queue_s=0.1))
    await proxy.start()
    proxy.server = server.get_extra_info("sockname")[:2]
    try:
        client.sendto(b"hello", proxy.near_address)  # the proxy learns the client's address
        await asyncio.sleep(0.05)
        for _ in range(10):  # 100 kB each way in 0.1 s (800 kbit/s)
            for _ in range(10):
                client.sendto(PACKET, proxy.near_address)
                server.sendto(PACKET, proxy.far_address)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        assert server_sink.received == 100 * len(PACKET) + 5  # uncapped: all of it
        # capped at 20 kB/s: the burst (6 kB), 0.1 s of rate (2 kB) and the queue (2 kB) get
        # through; the other ~90 kB is dropped
        assert 8_000 <= client_sink.received <= 12_000
        assert proxy.stats()["down"]["shaper"]["dropped"] > 50  # type: ignore[index]
    finally:
        proxy.close()
        server.close()
        client.close()
