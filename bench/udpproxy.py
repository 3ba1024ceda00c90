"""A user-space impairment proxy for one UDP flow (the kernel here has no netem).

Two sockets on 127.0.0.1: ``near`` faces the publisher, ``far`` faces the server. The publisher is
told (by rewriting the WHIP answer's candidate) that the server lives at ``near``; the server is
told (by rewriting the offer's candidate) that the publisher lives at ``far``. Each side therefore
only ever sees the proxy, and every packet in both directions — STUN, DTLS, RTP, RTCP — crosses
it, with independent random loss and a fixed one-way delay (RTT/2) per direction.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from .common import LOOPBACK


@dataclass
class DirectionStats:
    forwarded: int = 0
    dropped: int = 0


@dataclass
class ImpairmentProxy:
    loss: float = 0.0
    "Probability of dropping each packet, per direction (0..1)."
    delay_s: float = 0.0
    "One-way delay added in each direction (RTT/2)."
    seed: int = 1
    impair: bool = False
    "Loss applies only once this is set (after the connection is up); delay applies always."
    publisher: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._near: asyncio.DatagramTransport | None = None
        self._far: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._near, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, upstream=True), local_addr=(LOOPBACK, 0)
        )
        self._far, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, upstream=False), local_addr=(LOOPBACK, 0)
        )

    @property
    def near_address(self) -> tuple[str, int]:
        assert self._near is not None
        return self._near.get_extra_info("sockname")[:2]

    @property
    def far_address(self) -> tuple[str, int]:
        assert self._far is not None
        return self._far.get_extra_info("sockname")[:2]

    def _forward(self, data: bytes, upstream: bool) -> None:
        stats = self.up if upstream else self.down
        out, target = (self._far, self.server) if upstream else (self._near, self.publisher)
        if out is None or target is None:
            stats.dropped += 1
            return
        if self.impair and self.loss > 0 and self._rng.random() < self.loss:
            stats.dropped += 1
            return
        stats.forwarded += 1
        if self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, out.sendto, data, target)
        else:
            out.sendto(data, target)

    def stats(self) -> dict[str, object]:
        return {
            "loss": self.loss,
            "one_way_delay_ms": self.delay_s * 1000,
            "up": vars(self.up),
            "down": vars(self.down),
        }

    def close(self) -> None:
        for transport in (self._near, self._far):
            if transport is not None:
                transport.close()


class _Side(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy, upstream: bool) -> None:
        self.proxy = proxy
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        # Learn each side's address from what it sends (the SDP gave a first guess).
        if self.upstream:
            self.proxy.publisher = addr[:2]
        else:
            self.proxy.server = addr[:2]
        self.proxy._forward(data, self.upstream)
