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
"""

from __future__ import annotations

import math
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
        return {"Retry-After": str(max(1, math.ceil(self.connect_deadline_s)))}


class Admission:
    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self._peers: dict[Peer, ConsultationId] = {}

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

    def register(self, cid: ConsultationId, peer: Peer) -> None:
        """Count ``peer`` until it closes (call right after ``admit``, with no await between)."""
        self._peers[peer] = cid
        peer.on_closed(lambda p: self._peers.pop(p, None))

    def pending(self, cid: ConsultationId) -> int:
        return sum(1 for peer, c in self._peers.items() if c == cid and not peer.connected)

    def sessions(self, cid: ConsultationId) -> list[Peer]:
        """The consultation's sessions, connected or not, including offers being answered."""
        return [peer for peer, c in self._peers.items() if c == cid]
