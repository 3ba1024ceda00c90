"""Stills mode: when the clinic's link cannot carry useful video, or the surgeon asks, the clinic
page sends sharp full-resolution JPEG stills over HTTP (``signaling/http/stills.py``) instead of
video; sound continues. Each still is shown to everyone through the freeze, so the surgeon draws
on it as on any frozen picture.

Who turns it on and off (``stills-request``):

* the surgeon (``leads``): ``on`` begins it (reason ``requested``; a link-triggered mode becomes
  the surgeon's, so a recovering link no longer ends it), ``next`` asks the clinic for the next
  still now, ``off`` ends it whatever began it;
* the clinic's page (the endoscope's publisher): ``on`` when its link is too slow (reason
  ``link``), ``off`` when it recovered; its ``off`` never ends what the surgeon asked for.

Which still is on screen: a new still is frozen at once only when nothing is frozen, or a still
is frozen and no marks are on it (marks belong to the picture they were drawn on: a surgeon's own
freeze, or a still with marks, stays). Otherwise it only becomes the mode's newest still, and the
surgeon's page offers "Show the new picture" (``web/js/stills.js``).

Ending: ending the mode releases a freeze on a still; the clinic stopping its stream or leaving
ends a link-triggered mode; the surgeon who asked leaving (no other surgeon there) ends a
requested mode, or hands it back to the clinic's link when its last report said slow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from recorder.log_entry import LogOp
from recorder.snapshots import STILL, Snapshot
from relay import ConsultationId, FeedEvent, FeedName, FeedState, Freeze, OfflineReason, Relay
from signaling.auth.grants import Role
from signaling.ws.connection import Connection
from signaling.ws.hub import Hub
from signaling.ws.marks import BoardKeeper
from signaling.ws.messages import FreezeUpdate, StillsUpdate, snapshot_url
from signaling.ws.protocol import FORBIDDEN, StillsRequestMessage

logger = logging.getLogger(__name__)

LINK = "link"
REQUESTED = "requested"
VIDEO_BACK = "video"
"The ``freeze`` release reason when stills mode ends and the live picture returns."


@dataclass
class StillsMode:
    reason: str
    by: str
    asked: int = 0
    still: str | None = None
    "The newest still's snapshot id."


class Stills:
    """Stills mode per consultation (in memory: a restart returns to video, and the clinic's
    page asks again if its link is still slow)."""

    def __init__(self, hub: Hub, relay: Relay, keeper: BoardKeeper) -> None:
        self.hub, self.relay, self.keeper = hub, relay, keeper
        self._modes: dict[ConsultationId, StillsMode] = {}
        self._slow: dict[ConsultationId, str] = {}
        "The clinic whose last link report said slow (``on``), per consultation."

    def active(self, cid: ConsultationId) -> bool:
        return cid in self._modes

    def state(self, cid: ConsultationId) -> StillsUpdate:
        mode = self._modes.get(cid)
        if mode is None:
            return StillsUpdate(False)
        still = None
        if mode.still is not None:
            still = {"id": mode.still, "url": snapshot_url(cid, mode.still, STILL)}
        return StillsUpdate(True, mode.reason, mode.by, still, mode.asked)

    def request(
        self, cid: ConsultationId, identity: str, reason: str, message: StillsRequestMessage
    ) -> None:
        """Apply one ``stills-request`` (who may send it was checked) and tell everyone."""
        mode = self._modes.get(cid)
        if reason == LINK:
            if message.on:
                self._slow[cid] = identity
            else:
                self._slow.pop(cid, None)
        if not message.on:
            if mode is None or (reason == LINK and mode.reason == REQUESTED):
                return
            self._end(cid, identity)
        elif mode is None:
            self._modes[cid] = StillsMode(reason, identity)
            logger.info("Stills [consultation:%s] on (%s)", cid, reason)
        elif reason == REQUESTED:
            if mode.reason == LINK:
                mode.reason, mode.by = REQUESTED, identity
            if message.next:
                mode.asked += 1
        else:
            return  # the link is slow while stills mode is on anyway
        self.hub.broadcast(cid, self.state(cid))

    def on_still(self, cid: ConsultationId, snapshot: Snapshot) -> None:
        """A still was stored: it becomes the newest, and is frozen now only when nothing is
        frozen, or a still without marks is (never under marks: they belong to their picture)."""
        mode = self._modes.get(cid)
        router = self.relay.find(cid)
        if mode is None:
            return
        mode.still = snapshot.id
        if router is not None:
            now = time.time()
            freeze = router.board.freeze
            if freeze is None or (freeze.still and not router.board.visible(now)):
                router.board.set_freeze(Freeze(snapshot.by, now, snapshot.id, still=True))
                url = snapshot_url(cid, snapshot.id, STILL)
                snap = {"id": snapshot.id, "url": url}
                self.hub.broadcast(cid, FreezeUpdate(True, snap, snapshot.by))
                self.keeper.log(cid, LogOp.FREEZE, snapshot.by, {"snapshot_id": snapshot.id})
        self.hub.broadcast(cid, self.state(cid))

    def on_gone(self, cid: ConsultationId, identity: str) -> None:
        """Someone left: the clinic that began a link-triggered mode (back to video), or the
        surgeon who asked for stills with no other surgeon there (back to the clinic's link if
        it last said slow, else to video)."""
        if self._slow.get(cid) == identity:
            del self._slow[cid]
        mode = self._modes.get(cid)
        if mode is None or mode.by != identity:
            return
        if mode.reason == REQUESTED and not self._surgeon_present(cid):
            if cid in self._slow:
                mode.reason, mode.by = LINK, self._slow[cid]
                self.hub.broadcast(cid, self.state(cid))
            else:
                self._end(cid, identity)
        elif mode.reason == LINK:
            self._end(cid, identity)

    def on_feed_event(self, event: FeedEvent) -> None:
        """The clinic stopped its stream: stills mode ends with it."""
        ended = event.state is FeedState.OFFLINE and event.reason is OfflineReason.ENDED
        if event.feed is FeedName.ENDOSCOPE and ended:
            self._slow.pop(event.cid, None)
            if event.cid in self._modes:
                self._end(event.cid, event.identity)

    def _end(self, cid: ConsultationId, by: str | None) -> None:
        del self._modes[cid]
        logger.info("Stills [consultation:%s] off", cid)
        router = self.relay.find(cid)
        if router is not None and router.board.freeze is not None and router.board.freeze.still:
            router.board.set_freeze(None)
            self.keeper.released(cid, by, VIDEO_BACK)
        self.hub.broadcast(cid, StillsUpdate(False, None, by))

    def _surgeon_present(self, cid: ConsultationId) -> bool:
        roles = self.hub.census().get(cid)
        return roles is not None and (roles[str(Role.SURGEON)] + roles[str(Role.ADMIN)]) > 0


async def on_stills_request(connection: Connection, message: StillsRequestMessage) -> None:
    """The surgeon asks (reason ``requested``); the clinic's page reports its link (``link``);
    anyone else is refused with ``forbidden``."""
    grant = connection.grant
    if grant.leads:
        reason = REQUESTED
    elif grant.publishes is FeedName.ENDOSCOPE and not message.next:
        reason = LINK
    else:
        connection.refuse(FORBIDDEN, "only the surgeon may ask for stills")
        return
    connection.stills.request(connection.cid, connection.participant.identity, reason, message)
