"""A token bucket per client, and the edge's rate limits built on it: failed short-link lookups
per address (``POST /api/join``), the network check's requests per identity
(``signaling/http/netcheck.py``), failed authentications per address and WHIP/WHEP session
offers per identity and per address (``Throttle``).

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
from typing import TypeVar

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from signaling.auth.grants import Grant, TokenInvalid
from signaling.auth.media_tokens import MEDIA_QUERY
from signaling.http.client_address import limit_key
from signaling.http.errors import ApiError, Handler

A = TypeVar("A")


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


class Throttle:
    """The edge's rate limits, each a ``FailureBudget`` (bounded memory): failed
    authentications per source address, and WHIP/WHEP session offers per identity and per
    address (``ENDOLINK_AUTH_FAILURE_LIMIT``, ``ENDOLINK_SESSION_LIMIT_PER_*``). Over a limit the
    answer is 429 with ``Retry-After`` and a reason a person can act on."""

    def __init__(
        self,
        auth_failures: tuple[int, float],
        sessions_per_identity: tuple[int, float],
        sessions_per_address: tuple[int, float],
    ) -> None:
        self.auth_failures = FailureBudget(*auth_failures)
        self.sessions_by_identity = FailureBudget(*sessions_per_identity)
        self.sessions_by_address = FailureBudget(*sessions_per_address)

    def auth_failed(self, address: str) -> None:
        """Count one refused token from ``address``; over its budget, answer 429 rather than
        the refusal. Only refused tokens are answered so: a valid token from an address over
        the budget is served, or one sender of bad tokens behind a hospital's NAT (or a proxy)
        would lock everyone there out."""
        wait_s = self.auth_failures.retry_after(address)
        self.auth_failures.spend(address)
        if wait_s:
            raise too_many(
                "too-many-attempts",
                "Too many links or sign-ins that did not work came from this network. "
                f"Wait {wait_s} seconds, then try again.",
                wait_s,
            ) from None

    def verify(self, request: web.Request, check: Callable[[A], Grant], argument: A) -> Grant:
        """``check(argument)``, a token verification outside the middleware (the WebSocket's),
        under the same budget: a refusal counted, and a 429 once over it."""
        try:
            return check(argument)
        except TokenInvalid:
            self.auth_failed(limit_key(request))
            raise

    def take_session(self, identity: str, address: str) -> None:
        """Count one WHIP/WHEP offer, or refuse it (nothing counted) when either is over."""
        wait_s = max(
            self.sessions_by_identity.retry_after(identity),
            self.sessions_by_address.retry_after(address),
        )
        if wait_s:
            raise too_many(
                "rate-limited",
                "Too many video connections were started in a short time. "
                f"Wait {wait_s} seconds; the page tries again by itself.",
                wait_s,
            )
        self.sessions_by_identity.spend(identity)
        self.sessions_by_address.spend(address)

    def middleware(self) -> Middleware:
        """Counts every request whose presented token (Bearer header, or a media token ``?t=``)
        was refused; past the budget such a refusal is a 429."""

        @web.middleware
        async def throttle(request: web.Request, handler: Handler) -> web.StreamResponse:
            presented = hdrs.AUTHORIZATION in request.headers or MEDIA_QUERY in request.query
            address = limit_key(request)  # also names the client in the access log
            try:
                return await handler(request)
            except TokenInvalid:
                if presented:
                    self.auth_failed(address)
                raise

        return throttle


def too_many(code: str, reason: str, wait_s: int) -> ApiError:
    return ApiError(429, code, reason, {"Retry-After": str(wait_s)})
