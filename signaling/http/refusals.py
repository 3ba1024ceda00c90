"""Refused tokens in the audit trail, bounded so that a guesser cannot flood it.

A refused token belongs to no consultation (the token could not be read): it goes to the global
chain only. The first refusal from an address in a minute is written at once; the others of that
minute are counted and written as one entry (``count``) when the minute is over and the next
refusal comes (from anywhere), or when the server stops. Beyond ``MAX_ADDRESSES`` addresses within
a minute, new ones share one window (``MANY``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from signaling.db.audit import AuditAction, AuditRecord, AuditTrail

WINDOW_S = 60.0
MAX_ADDRESSES = 4096
MANY = "many addresses"


class RefusedTokens:
    """At most one entry per source address per ``window_s``, with the count of refusals."""

    def __init__(
        self,
        trail: AuditTrail,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trail = trail
        self._window_s = window_s
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        "Address → (window start, refusals not written yet, where the last one was): oldest first."

    def refused(self, address: str, where: str) -> None:
        now = self._clock()
        self._expire(now)
        if address not in self._windows and len(self._windows) >= MAX_ADDRESSES:
            address = MANY
        window = self._windows.get(address)
        if window is None:
            self._windows[address] = (now, 0, where)
            self._write(address, 1, where)
        else:
            self._windows[address] = (window[0], window[1] + 1, where)

    def flush(self) -> None:
        """Write every count not written yet (at shutdown)."""
        self._expire(float("inf"))

    def _expire(self, now: float) -> None:
        while self._windows:
            address, (started, unwritten, where) = next(iter(self._windows.items()))
            if now - started < self._window_s:
                return
            del self._windows[address]
            if unwritten:
                self._write(address, unwritten, f"{where} (more within a minute)")

    def _write(self, address: str, count: int, where: str) -> None:
        detail = f"from {address}: {where}"
        action = AuditAction.REFUSED_TOKEN
        self._trail.submit(AuditRecord(None, "", "", "", action, detail=detail, count=count))
