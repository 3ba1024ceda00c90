"""The impairment proxy's own statistics: loss rates and burst lengths for a seed, delay and order
of real datagrams through it (bench/udpproxy.py)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from bench.common import LOOPBACK
from bench.udpproxy import BURSTY, GilbertElliott, Impairment, ImpairmentProxy, LossModel

PACKETS = 200_000


def runs(flags: list[bool], value: bool) -> list[int]:
    """Lengths of the maximal runs of ``value`` in ``flags``."""
    lengths, current = [], 0
    for flag in flags:
        if flag == value:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths + ([current] if current else [])


def test_uniform_loss_rate_and_no_bursts() -> None:
    model = LossModel(loss=0.03, seed=5)
    drops = [model.drop() for _ in range(PACKETS)]
    assert sum(drops) / PACKETS == pytest.approx(0.03, abs=0.002)
    assert statistics.fmean(runs(drops, True)) < 1.1  # independent: runs of ~1/(1-p)


def test_gilbert_elliott_gives_ten_percent_loss_in_bursts_of_the_documented_length() -> None:
    model = LossModel(burst=BURSTY, seed=5)
    drops, states = [], []
    for _ in range(PACKETS):
        drops.append(model.drop())
        states.append(model.in_burst)
    assert sum(drops) / PACKETS == pytest.approx(0.10, abs=0.01)
    assert statistics.fmean(runs(states, True)) == pytest.approx(BURSTY.mean_burst, rel=0.1)
    in_burst = [d for d, s in zip(drops, states, strict=True) if s]
    assert sum(in_burst) / len(in_burst) == pytest.approx(BURSTY.loss_in_burst, abs=0.02)
    assert not any(d for d, s in zip(drops, states, strict=True) if not s)
    after_loss = [b for a, b in zip(drops, drops[1:], strict=False) if a]
    assert sum(after_loss) / len(after_loss) > 0.5  # a loss is usually followed by another


def test_same_seed_same_losses_other_seed_other_losses() -> None:
    def pattern(seed: int) -> list[bool]:
        model = LossModel(burst=BURSTY, seed=seed)
        return [model.drop() for _ in range(5000)]

    assert pattern(3) == pattern(3)
    assert pattern(3) != pattern(4)


def test_impossible_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        GilbertElliott(loss=0.9, mean_burst=4, loss_in_burst=0.8)
    with pytest.raises(ValueError):
        Impairment.named("lossy")


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, float]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.received.append((data, time.monotonic()))


async def test_datagrams_are_delayed_with_jitter_but_never_reordered() -> None:
    loop = asyncio.get_running_loop()
    server_sink, client_sink = Sink(), Sink()
    server, _ = await loop.create_datagram_endpoint(lambda: server_sink, local_addr=(LOOPBACK, 0))
    client, _ = await loop.create_datagram_endpoint(lambda: client_sink, local_addr=(LOOPBACK, 0))
    proxy = ImpairmentProxy(Impairment(delay_s=0.05, jitter_s=0.03, seed=2))
    await proxy.start()
    try:
        proxy.client = client.get_extra_info("sockname")[:2]
        proxy.server = server.get_extra_info("sockname")[:2]
        sent = {}
        for i in range(100):
            payload = i.to_bytes(2, "big")
            sent[payload] = time.monotonic()
            client.sendto(payload, proxy.near_address)
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 5
        while len(server_sink.received) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        order = [int.from_bytes(d, "big") for d, _ in server_sink.received]
        assert order == list(range(100))
        delays = [at - sent[d] for d, at in server_sink.received]
        assert min(delays) >= 0.05
        assert proxy.up.forwarded == 100 and proxy.up.dropped == 0
    finally:
        proxy.close()
        server.close()
        client.close()


async def test_loss_applies_only_once_impairing_and_is_counted_per_direction() -> None:
    loop = asyncio.get_running_loop()
    server_sink = Sink()
    server, _ = await loop.create_datagram_endpoint(lambda: server_sink, local_addr=(LOOPBACK, 0))
    client, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOOPBACK, 0)
    )
    proxy = ImpairmentProxy(Impairment(loss=0.5, seed=9))
    await proxy.start()
    try:
        proxy.client = client.get_extra_info("sockname")[:2]
        proxy.server = server.get_extra_info("sockname")[:2]

        async def send(count: int) -> None:
            target = proxy.up.forwarded + proxy.up.dropped + count
            for i in range(count):
                client.sendto(b"\x00", proxy.near_address)
                if i % 10 == 9:
                    await asyncio.sleep(0.002)  # never more than the socket buffer holds
            deadline = time.monotonic() + 5
            while proxy.up.forwarded + proxy.up.dropped < target and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        await send(20)
        assert proxy.up.dropped == 0
        proxy.impair = True
        await send(400)
        assert proxy.up.dropped == pytest.approx(200, abs=40)
        assert proxy.up.forwarded == 420 - proxy.up.dropped
        assert proxy.down.forwarded == proxy.down.dropped == 0
    finally:
        proxy.close()
        server.close()
        client.close()
