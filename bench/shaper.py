"""A token-bucket rate limiter for one direction of the impairment proxy: a capped link.

A real narrow link (a rural uplink, a 4G downlink) is a bottleneck with a queue in front of it:
packets leave no faster than the link's rate, wait in a bounded queue meanwhile (so delay grows
before anything is lost, which is what delay-based estimators such as REMB react to), and are
dropped at the tail once the queue holds ``queue_s`` worth of the rate (what loss-based control
reacts to). ``burst_bytes`` lets a few back-to-back packets through at once, as a link's own
buffering does.

The limit can be changed while packets flow (``Shaper.limit``): a scenario caps a link and lifts
the cap again to see an estimate follow it down and back up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Emit = Callable[[bytes], None]


@dataclass(frozen=True)
class RateLimit:
    """A link of ``rate_bps`` bits per second with a drop-tail queue of ``queue_s`` seconds."""

    rate_bps: float
    queue_s: float = 0.25
    burst_bytes: int = 6000
    "About four full-size packets: enough for a small frame, far below a keyframe."

    def __post_init__(self) -> None:
        if self.rate_bps <= 0 or self.queue_s <= 0 or self.burst_bytes < 1500:
            raise ValueError("need rate_bps > 0, queue_s > 0 and burst_bytes >= 1500")

    @property
    def queue_bytes(self) -> float:
        return self.rate_bps / 8 * self.queue_s

    def describe(self) -> str:
        return f"{self.rate_bps / 1000:g} kbit/s, queue {self.queue_s * 1000:g} ms"


@dataclass
class ShaperStats:
    sent_bytes: int = 0
    dropped: int = 0
    "Packets dropped at the tail of a full queue."
    max_queue_s: float = 0.0
    "The longest a packet waited in the queue."


class Shaper:
    """Token bucket + drop-tail FIFO in front of ``emit``; no limit means straight through."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        self._limit = limit
        self._tokens = float(limit.burst_bytes) if limit else 0.0
        self._refilled = 0.0
        self._queue: deque[tuple[float, bytes, Emit]] = deque()
        self._queued_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.stats = ShaperStats()

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    @limit.setter
    def limit(self, limit: RateLimit | None) -> None:
        """A new cap applies to the packets already queued too (lifting it flushes them)."""
        self._refill()
        self._limit = limit
        if limit is not None:
            self._tokens = min(self._tokens, float(limit.burst_bytes))
        self._drain()

    def submit(self, data: bytes, emit: Emit) -> None:
        limit = self._limit
        if limit is None:
            self.stats.sent_bytes += len(data)
            emit(data)
            return
        if self._queued_bytes + len(data) > limit.queue_bytes:
            self.stats.dropped += 1
            return
        self._queue.append((asyncio.get_running_loop().time(), data, emit))
        self._queued_bytes += len(data)
        self._drain()

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._limit is not None:
            self._tokens = min(
                float(self._limit.burst_bytes),
                self._tokens + (now - self._refilled) * self._limit.rate_bps / 8,
            )
        self._refilled = now

    def _drain(self) -> None:
        """Send what the tokens allow, then sleep until the head packet's tokens have come."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._refill()
        loop = asyncio.get_running_loop()
        while self._queue:
            queued_at, data, emit = self._queue[0]
            if self._limit is not None and self._tokens < len(data):
                wait = (len(data) - self._tokens) * 8 / self._limit.rate_bps
                self._timer = loop.call_later(wait, self._drain)
                return
            self._queue.popleft()
            self._queued_bytes -= len(data)
            if self._limit is not None:
                self._tokens -= len(data)
            self.stats.sent_bytes += len(data)
            self.stats.max_queue_s = max(self.stats.max_queue_s, loop.time() - queued_at)
            emit(data)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._queued_bytes = 0
