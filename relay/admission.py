"""Admission: how many WHIP/WHEP sessions one person, one consultation and the whole server may
hold, so that no member can lock a consultation with sessions that never connect.

Every Peer is counted from the moment it is made (before the first await of its offer, so
concurrent offers see each other) until it closes. A session is *pending* until its connection
first reaches "connected" — and it never stays pending for long: ``Peer.require_connection``
closes it at the connect deadline. The limits (docs/closures.md, "Session limits"):

* per identity: ``pending_per_identity`` pending and ``sessions_per_identity`` in all → 429;
* per consultation: ``pending_per_consultation`` pending → 503 (the viewer limit is the Router's);
* the whole server: ``max_sessions`` → 503.

A *priority* session — the consultation's clinic or surgeon, decided by the app — is never
refused by a consultation limit, only by its own identity's limits and the server's: observers
cannot keep the people the consultation is for out of it.

A feed has one publisher. A pending publisher of one identity keeps another identity out (409)
for one connect deadline, counted from the first such refusal — re-posting does not renew it.
After that the next other identity's publish takes the feed (the pending session is closed) and
the identity that held it may not publish that feed for ``2 ×`` the deadline (429): a second
clinic link re-posting a never-connecting offer cannot keep the real clinic off the feed
(``hold``, ``ensure_may_publish``; docs/closures.md, "One publisher per feed").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .errors import RouterFull, TooManySessions
from .ids import ConsultationId
from .peer import Peer


@dataclass(frozen=True)
class SessionLimits:
    connect_deadline_s: float = 15.0
    "A session not connected this long after its answer is closed."
    pending_per_identity: int = 8
    "Two sessions (view + talk-back) on each of the 4 devices one link may be open on."
    sessions_per_identity: int = 12
    pending_per_consultation: int = 20
    max_sessions: int = 500

    @property
    def retry_after(self) -> dict[str, str]:
        """Pending sessions are gone within the connect deadline: try again after it."""
        return retry_after(self.connect_deadline_s)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class Admission:
    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self._peers: dict[Peer, ConsultationId] = {}
        self._holds: dict[tuple[ConsultationId, str], tuple[str, float]] = {}
        "(consultation, feed) → the identity whose pending publisher keeps others out, since."
        self._cooling: dict[tuple[ConsultationId, str, str], float] = {}
        "(consultation, feed, identity) → until when that identity may not publish the feed."

    def admit(self, cid: ConsultationId, identity: str, priority: bool) -> None:
        """Raise if one more session of ``identity`` in ``cid`` would break a limit."""
        limits = self.limits
        if len(self._peers) >= limits.max_sessions:
            raise RouterFull(
                "the server is at its limit of media sessions", headers=limits.retry_after
            )
        mine = [peer for peer in self._peers if peer.identity == identity]
        if sum(1 for peer in mine if not peer.connected) >= limits.pending_per_identity:
            raise TooManySessions(
                f"this link already has {limits.pending_per_identity} sessions connecting",
                headers=limits.retry_after,
            )
        if len(mine) >= limits.sessions_per_identity:
            raise TooManySessions(
                f"this link already has {limits.sessions_per_identity} media sessions",
                headers=limits.retry_after,
            )
        if priority:
            return
        if self.pending(cid) >= limits.pending_per_consultation:
            raise RouterFull(
                "too many sessions of this consultation are connecting", headers=limits.retry_after
            )

    def hold(self, cid: ConsultationId, feed: str, holder: str) -> float:
        """A pending publisher of ``holder`` keeps another identity out of ``feed``: the seconds
        left of its one connect deadline, counted from the first refusal; 0 once it is spent,
        and then ``holder`` cools down (the caller replaces its session)."""
        now, deadline = time.monotonic(), self.limits.connect_deadline_s
        held = self._holds.get((cid, feed))
        if held is None or held[0] != holder or now - held[1] >= 2 * deadline:  # a new hold
            held = self._holds[(cid, feed)] = (holder, now)
        left = held[1] + deadline - now
        if left > 0:
            return left
        del self._holds[(cid, feed)]
        self._cooling[(cid, feed, holder)] = now + 2 * deadline
        return 0.0

    def ensure_may_publish(self, cid: ConsultationId, feed: str, identity: str) -> None:
        """Raise 429 while ``identity`` cools down from holding ``feed`` without connecting."""
        now = time.monotonic()
        self._cooling = {key: until for key, until in self._cooling.items() if until > now}
        until = self._cooling.get((cid, feed, identity))
        if until is not None:
            raise TooManySessions(
                f"this link's last connection to the {feed} feed never connected while another "
                "device waited for it: try again later",
                headers=retry_after(until - now),
            )

    def register(self, cid: ConsultationId, peer: Peer) -> None:
        """Count ``peer`` until it closes (call right after ``admit``, with no await between)."""
        self._peers[peer] = cid
        peer.on_closed(lambda p: self._peers.pop(p, None))

    def pending(self, cid: ConsultationId) -> int:
        return sum(1 for peer, c in self._peers.items() if c == cid and not peer.connected)

    def sessions(self, cid: ConsultationId) -> list[Peer]:
        """The consultation's sessions, connected or not, including offers being answered."""
        return [peer for peer, c in self._peers.items() if c == cid]
