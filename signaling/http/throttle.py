"""A token bucket per client: failed short-link lookups per address (``POST /api/join``), and
the network check's requests per identity (``signaling/http/netcheck.py``).

Sixty bits of code are out of reach of guessing anyway; the bucket keeps a scanner from even
trying, and from filling the log. Memory is bounded: past ``max_clients`` addresses the least
recently seen is forgotten (which gives that address a full bucket again, the safe side for
people on a shared hospital network).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureBudget:
    """``burst`` spends (failures, requests) at once per client, then one more every
    ``refill_s`` seconds."""

    def __init__(
        self,
        burst: int = 10,
        refill_s: float = 6.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """0 if ``client`` may try now, else whole seconds until its next try."""
        bucket = self._refilled(client)
        if bucket is None or bucket.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - bucket.tokens) * self.refill_s))

    def spend(self, client: str) -> None:
        """Count one failed lookup (or one network-check request)."""
        bucket = self._refilled(client) or _Bucket(float(self.burst), self._clock())
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets[client] = bucket
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def _refilled(self, client: str) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        now = self._clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) / self.refill_s)
        bucket.at = now
        if bucket.tokens >= self.burst:  # full again: nothing worth remembering
            del self._buckets[client]
            return None
        return bucket
