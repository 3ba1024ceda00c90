"""Withdrawn access: tokens are stateless JWTs, so what was withdrawn is remembered here.

Two kinds, both kept in the database (the source of truth, also written by the CLI) and mirrored
in memory, so that checking a token costs a dict lookup and no query:

- a **consultation**'s access (``POST /api/consultations/{cid}/revoke``, ``endolink consult revoke
  --consultation``): every token issued for it until then (``iat`` ≤ the time) is refused; tokens
  issued later work, so the coordinator's new links do;
- one **invite link** (``DELETE .../invites/{id}``, ``endolink consult revoke LINK``): the tokens
  its link gave, named by the invite's own identity, are refused until the invite would expire.

The mirror is reloaded every ``REFRESH_S`` seconds (and at once after a withdrawal over HTTP);
each new withdrawal is handed to ``on_withdrawn``, which ends its WHIP/WHEP sessions and closes its
WebSockets (signaling/app.py). A withdrawal made by the CLI thus takes effect within
``REFRESH_S``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relay import ConsultationId
from signaling.auth.grants import Grant

logger = logging.getLogger(__name__)

REFRESH_S = 2.0
"How soon a withdrawal written by another process (the CLI) takes effect."
CONSULTATION_WITHDRAWN = (
    "this consultation's links were withdrawn: ask the consultation coordinator for a new link"
)
LINK_WITHDRAWN = "this link was withdrawn: ask the consultation coordinator for a new link"

Identities = set[tuple[ConsultationId, str]]


@dataclass(frozen=True)
class Withdrawal:
    """What just lost its access: a whole consultation (``identity`` None) or one link's
    participant."""

    cid: ConsultationId
    identity: str | None
    reason: str


class Revocations:
    """The in-memory mirror; ``load`` reads the database's state (consultations, identities)."""

    def __init__(
        self, load: Callable[[], Awaitable[tuple[dict[ConsultationId, float], Identities]]]
    ) -> None:
        self._load = load
        self._consultations: dict[ConsultationId, float] = {}
        self._identities: Identities = set()
        self._lock = asyncio.Lock()
        self.on_withdrawn: Callable[[Withdrawal], None] = lambda withdrawal: None

    def refusal(self, grant: Grant) -> str | None:
        """Why ``grant``'s token is no longer honoured, or None (``TokenIssuer.refusal``)."""
        return self.withdrawn(grant.cid, grant.identity, grant.issued_at)

    def withdrawn(self, cid: ConsultationId, identity: str, issued_at: float) -> str | None:
        """Why a token ``identity`` was given for ``cid`` at ``issued_at`` is no longer honoured,
        or None; also asked of media tokens (their recording's consultation)."""
        revoked_at = self._consultations.get(cid)
        if revoked_at is not None and issued_at <= revoked_at:
            return CONSULTATION_WITHDRAWN
        if (cid, identity) in self._identities:
            return LINK_WITHDRAWN
        return None

    async def refresh(self, announce: bool = True) -> list[Withdrawal]:
        """Reload from the database; the withdrawals that are new since the last load (handed to
        ``on_withdrawn`` unless ``announce`` is false, as at start-up: nobody is connected)."""
        async with self._lock:  # a slow load must never overwrite a newer one
            consultations, identities = await self._load()
            new = [
                Withdrawal(cid, None, CONSULTATION_WITHDRAWN)
                for cid, at in consultations.items()
                if self._consultations.get(cid) != at
            ]
            new += [
                Withdrawal(cid, identity, LINK_WITHDRAWN)
                for cid, identity in sorted(identities - self._identities)
            ]
            self._consultations, self._identities = consultations, identities
        for withdrawal in new if announce else ():
            logger.info(
                "access withdrawn [consultation:%s]%s",
                withdrawal.cid,
                "" if withdrawal.identity is None else f" for {withdrawal.identity}",
            )
            self.on_withdrawn(withdrawal)
        return new

    async def keep_fresh(self) -> None:
        """Reload every ``REFRESH_S`` until cancelled; a failed load is retried, never fatal."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception:
                logger.exception("reloading withdrawn access failed; retrying")
