"""The picture-quality guard's edge: one ``PictureGuard`` per consultation whose endoscope feed
is live (``ENDOLINK_PICTURE_GUARD``); each changed verdict goes to everyone in the consultation
as a ``picture`` message, and a late joiner finds the current one in its ``welcome``."""

from __future__ import annotations

from relay import ConsultationId, FeedEvent, FeedName, FeedState, Relay
from relay.picture_guard import PictureGuard
from relay.picture_quality import Verdict
from signaling.ws.hub import Hub
from signaling.ws.messages import PictureUpdate


class Pictures:
    def __init__(self, hub: Hub, relay: Relay) -> None:
        self.hub, self.relay = hub, relay
        self.guards: dict[ConsultationId, PictureGuard] = {}

    def on_feed_event(self, event: FeedEvent) -> None:
        """Guard the endoscope while it is live; an offline feed has no picture to judge."""
        if event.feed is not FeedName.ENDOSCOPE:
            return
        guard = self.guards.pop(event.cid, None)
        router = self.relay.find(event.cid)
        source = router.decoded if router is not None and not router.closed else None
        if guard is not None and (event.state is not FeedState.LIVE or guard.source is not source):
            guard.stop()  # offline, or the guard of a Router closed since
            guard = None
        if event.state is not FeedState.LIVE or source is None:
            return
        if guard is None:
            cid = event.cid
            guard = PictureGuard(source, lambda verdict: self._report(cid, verdict), str(cid))
            self._report(cid, guard.verdict)  # pages show the badge from the start
        self.guards[event.cid] = guard

    def state(self, cid: ConsultationId) -> PictureUpdate | None:
        guard = self.guards.get(cid)
        return None if guard is None else PictureUpdate.of(guard.verdict)

    def close(self) -> None:
        for guard in self.guards.values():
            guard.stop()
        self.guards.clear()

    def _report(self, cid: ConsultationId, verdict: Verdict) -> None:
        self.hub.broadcast(cid, PictureUpdate.of(verdict))
