"""ISO 8601 UTC time stamps: the one format of the WebSocket protocol, manifests and the database.

Milliseconds by default (``2025-01-31T09:15:02.123+00:00``); consultations and consents are
stamped to the second, as their stored rows always were.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Timespec = Literal["seconds", "milliseconds"]


def utc_iso(at: float, *, timespec: Timespec = "milliseconds") -> str:
    """``at`` (a ``time.time()`` value) in ISO 8601 UTC."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec=timespec)


def utc_now_iso(*, timespec: Timespec = "milliseconds") -> str:
    """Now in ISO 8601 UTC."""
    return datetime.now(UTC).isoformat(timespec=timespec)


def parse_utc_iso(text: str) -> float:
    """The ``time.time()`` value of an ISO 8601 stamp with an offset (as :func:`utc_iso` makes)."""
    return datetime.fromisoformat(text).timestamp()
