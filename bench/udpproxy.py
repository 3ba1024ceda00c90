"""A user-space impairment proxy for one UDP flow (the kernel here has no netem).

Two sockets on 127.0.0.1: ``near`` faces the client (publisher or viewer), ``far`` faces the
server. The client is told (by rewriting the WHIP/WHEP answer's candidate, ``answer()``) that the
server lives at ``near``; the server is told (by rewriting the offer's candidate, ``offer()``) that
the client lives at ``far``. Each side therefore only ever sees the proxy, and every packet in
both directions — STUN, DTLS, RTP, RTCP — crosses it.

Each direction has its own loss model and its own delay line, both drawn from one seeded random
generator per direction, so a run is reproducible for a seed (given the same packet sequence):

* **Loss**: uniform (every packet dropped with probability ``loss``) or bursty (a Gilbert–Elliott
  two-state Markov chain, :class:`GilbertElliott`), applied once ``impair`` is set (after ICE and
  DTLS are up: the point is media under loss, not whether a handshake survives it).
* **Delay**: a fixed one-way delay (RTT/2) plus an optional uniform jitter in ``[0, jitter_s]``.
  The delay line is FIFO: a packet never leaves before the one sent before it in the same
  direction (like a queue on a real path), so jitter bunches packets but never reorders them.
* **Rate**: an optional cap per direction (``up_limit``, ``down_limit``: a token bucket with a
  drop-tail queue, ``bench.shaper``), applied before the delay line like a narrow access link;
  ``cap()`` changes it while packets flow.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field

from .common import LOOPBACK, host_candidates, rewrite_candidate_port
from .shaper import RateLimit, Shaper


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state Markov loss: a *good* state that loses nothing and a *bad* state (a burst) that
    loses each packet with probability ``loss_in_burst``. The chain steps once per packet.

    Parametrised by what one observes instead of the transition probabilities: the long-run
    ``loss`` rate and the ``mean_burst`` length in packets (mean stay in the bad state, a
    geometric distribution). Then ``r = 1 / mean_burst`` (bad → good), the share of packets in
    the bad state is ``loss / loss_in_burst``, and ``p = r · share / (1 − share)`` (good → bad).

    ``BURSTY`` below (10 % loss, bursts of 6 packets on average, 80 % lost inside a burst) is
    what the bench and the tests call "10 % bursty loss": at the 720p30 stream's ~110 packets/s a
    burst lasts ~55 ms on average, and a frame's packets are sent back to back, so a burst
    usually takes several packets of one frame, and sometimes a whole keyframe's worth.
    """

    loss: float
    mean_burst: float
    loss_in_burst: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.loss < self.loss_in_burst <= 1 or self.mean_burst < 1:
            raise ValueError("need 0 < loss < loss_in_burst <= 1 and mean_burst >= 1")

    @property
    def p_enter(self) -> float:
        share = self.loss / self.loss_in_burst
        return self.p_leave * share / (1 - share)

    @property
    def p_leave(self) -> float:
        return 1 / self.mean_burst


BURSTY = GilbertElliott(loss=0.10, mean_burst=6.0, loss_in_burst=0.8)


class LossModel:
    """Drop or not, packet by packet (uniform or Gilbert–Elliott), from its own seed."""

    def __init__(self, loss: float = 0.0, burst: GilbertElliott | None = None, seed: int = 1):
        self._rng = random.Random(seed)
        self._loss = loss
        self._burst = burst
        self.in_burst = False

    def drop(self) -> bool:
        rng = self._rng
        if self._burst is None:
            return self._loss > 0 and rng.random() < self._loss
        model = self._burst
        step = rng.random()
        self.in_burst = step >= model.p_leave if self.in_burst else step < model.p_enter
        return self.in_burst and rng.random() < model.loss_in_burst


@dataclass
class Impairment:
    """What one hop does to packets, per direction."""

    loss: float = 0.0
    "Uniform loss probability (0..1); ignored when ``burst`` is set."
    burst: GilbertElliott | None = None
    delay_s: float = 0.0
    "One-way delay (RTT/2)."
    jitter_s: float = 0.0
    "Extra one-way delay, uniform in [0, jitter_s]; FIFO, so never reordering."
    seed: int = 1

    @classmethod
    def named(cls, name: str, rtt_ms: float = 150.0, seed: int = 1) -> Impairment:
        """``none``, ``uniform3`` (3 % uniform loss), ``bursty10`` (``BURSTY``); with ``rtt_ms``
        (except ``none``, which is the plain loopback)."""
        delay = rtt_ms / 2000.0
        if name == "none":
            return cls(seed=seed)
        if name.startswith("uniform"):
            return cls(loss=float(name[len("uniform") :]) / 100, delay_s=delay, seed=seed)
        if name == "bursty10":
            return cls(burst=BURSTY, delay_s=delay, seed=seed)
        raise ValueError(f"unknown impairment {name!r} (none, uniformN, bursty10)")

    @property
    def active(self) -> bool:
        return self.loss > 0 or self.burst is not None or self.delay_s > 0 or self.jitter_s > 0

    def describe(self) -> str:
        loss = (
            f"GE loss {self.burst.loss:.0%} in bursts of {self.burst.mean_burst:g} packets"
            f" ({self.burst.loss_in_burst:.0%} lost inside)"
            if self.burst
            else f"uniform loss {self.loss:.0%}"
        )
        delay, jitter = self.delay_s * 1000, self.jitter_s * 1000
        return f"{loss}, one-way delay {delay:g} ms + jitter ≤{jitter:g} ms"


RTX_PAYLOAD_TYPES = frozenset({98, 100, 102})
"aiortc's RTX payload types (VP8, the two H.264 profiles): RTP headers are not encrypted."
RTCP_RTPFB = 205
"RTCP transport feedback (a NACK when the first byte's format field is 1)."


@dataclass
class DirectionStats:
    forwarded: int = 0
    dropped: int = 0
    retransmissions: int = 0
    "RTX packets forwarded (the RTP header is clear under SRTP)."
    nacks: int = 0
    "RTCP NACK packets forwarded (the RTCP header is clear under SRTCP)."

    def count(self, data: bytes) -> None:
        self.forwarded += 1
        if len(data) < 2 or not 128 <= data[0] < 192:  # RFC 7983: RTP/RTCP
            return
        if data[1] == RTCP_RTPFB and data[0] & 0x1F == 1:
            self.nacks += 1
        elif data[1] & 0x7F in RTX_PAYLOAD_TYPES:
            self.retransmissions += 1


class _Direction:
    """One direction's loss model, FIFO delay line and counters.

    The delay line is a queue with one timer for its head (asyncio's timer heap does not keep
    the order of equal deadlines, so one timer per packet could reorder a jittered burst).
    """

    def __init__(self, impairment: Impairment, seed: int, limit: RateLimit | None) -> None:
        self.impairment = impairment
        self.model = LossModel(impairment.loss, impairment.burst, seed)
        self.shaper = Shaper(limit)
        self._jitter_rng = random.Random(seed + 7919)
        self.stats = DirectionStats()
        self._line: deque[tuple[float, bytes, asyncio.DatagramTransport, tuple[str, int]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def send(self, data: bytes, out: asyncio.DatagramTransport, target: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        jitter = self.impairment.jitter_s
        delay = self.impairment.delay_s + (self._jitter_rng.uniform(0, jitter) if jitter else 0.0)
        due = loop.time() + delay
        if self._line:
            due = max(due, self._line[-1][0])  # FIFO: never before the packet ahead
        self._line.append((due, data, out, target))
        if self._timer is None:
            self._timer = loop.call_at(due, self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        while self._line and self._line[0][0] <= loop.time():
            _, data, out, target = self._line.popleft()
            if not out.is_closing():  # still in the line when the proxy closed
                out.sendto(data, target)
        self._timer = loop.call_at(self._line[0][0], self._release) if self._line else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._line.clear()
        self.shaper.close()


@dataclass
class ImpairmentProxy:
    impairment: Impairment = field(default_factory=Impairment)
    impair: bool = False
    "Loss applies only once this is set (after the connection is up); delay applies always."
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    late_answers_s: float = 0.0
    """Extra delay on the client's STUN answers only, outside the delay line (``math.inf`` drops
    them): a far end whose event loop lags answers consent checks late while media flows."""
    up_limit: RateLimit | None = None
    "A cap on client → server (a publisher's uplink); applies from the first packet."
    down_limit: RateLimit | None = None
    "A cap on server → client (a viewer's downlink)."

    def __post_init__(self) -> None:
        seed = self.impairment.seed
        self._up = _Direction(self.impairment, seed * 2, self.up_limit)
        self._down = _Direction(self.impairment, seed * 2 + 1, self.down_limit)
        self._near: asyncio.DatagramTransport | None = None
        self._far: asyncio.DatagramTransport | None = None

    @property
    def up(self) -> DirectionStats:
        return self._up.stats

    @property
    def down(self) -> DirectionStats:
        return self._down.stats

    def cap(self, up: RateLimit | None = None, down: RateLimit | None = None) -> None:
        """Set (or, with ``None``, lift) both directions' caps while packets flow."""
        self.up_limit, self.down_limit = up, down
        self._up.shaper.limit = up
        self._down.shaper.limit = down

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

    def offer(self, sdp: str) -> str:
        """The client's offer, its host candidate replaced by the proxy's far side."""
        self.client = host_candidates(sdp)[0]
        return rewrite_candidate_port(sdp, self.client, self.far_address)

    def answer(self, sdp: str) -> str:
        """The server's answer, its host candidate replaced by the proxy's near side."""
        self.server = host_candidates(sdp)[0]
        return rewrite_candidate_port(sdp, self.server, self.near_address)

    def _forward(self, data: bytes, upstream: bool) -> None:
        direction = self._up if upstream else self._down
        out, target = (self._far, self.server) if upstream else (self._near, self.client)
        if out is None or target is None or (self.impair and direction.model.drop()):
            direction.stats.dropped += 1
            return
        direction.stats.count(data)
        if upstream and self.late_answers_s and _is_stun_answer(data):
            if self.late_answers_s != math.inf:
                asyncio.get_running_loop().call_later(self.late_answers_s, out.sendto, data, target)
            return
        if not self.impairment.delay_s and not self.impairment.jitter_s:
            direction.shaper.submit(data, lambda d: _send(out, d, target))
        else:
            direction.shaper.submit(data, lambda d: direction.send(d, out, target))

    def stats(self) -> dict[str, object]:
        return {
            "impairment": self.impairment.describe(),
            "up": vars(self.up) | {"shaper": vars(self._up.shaper.stats)},
            "down": vars(self.down) | {"shaper": vars(self._down.shaper.stats)},
        }

    def close(self) -> None:
        self._up.close()
        self._down.close()
        for transport in (self._near, self._far):
            if transport is not None:
                transport.close()


def _send(out: asyncio.DatagramTransport, data: bytes, target: tuple[str, int]) -> None:
    if not out.is_closing():  # a shaped packet may leave after the proxy closed
        out.sendto(data, target)


def _is_stun_answer(data: bytes) -> bool:
    """A STUN success or error response (RFC 7983: first byte 0–3; class bits C1 of the type)."""
    return len(data) >= 20 and data[0] < 4 and bool(data[0] & 0x01)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy, upstream: bool) -> None:
        self.proxy = proxy
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        # Learn each side's address from what it sends (the SDP gave a first guess).
        if self.upstream:
            self.proxy.client = addr[:2]
        else:
            self.proxy.server = addr[:2]
        self.proxy._forward(data, self.upstream)


def add_impairment_args(parser: argparse.ArgumentParser) -> None:
    """The hop's impairment (``bench.udpproxy``): shared by the publisher and the load generator."""
    parser.add_argument("--loss", type=float, default=0.0, help="uniform loss 0..1, per direction")
    parser.add_argument(
        "--impairment", default="", help="a named impairment instead (uniform3, bursty10)"
    )
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)


def impairment_from_args(args: argparse.Namespace) -> Impairment:
    if args.impairment:
        return Impairment.named(args.impairment, args.rtt_ms, args.seed)
    return Impairment(loss=args.loss, delay_s=args.rtt_ms / 2000.0, seed=args.seed)
