"""What the server itself does to a consultation's board, so marks stay with their picture.

* A new stream session of the endoscope feed (``relay.StreamSession``: the clinic stopped and
  started again, or came back after the offline window) archives the marks and releases a freeze:
  every page is told (``annotation`` ``archive``, ``freeze`` with reason ``new-stream``) and the
  annotation log keeps it, so the replay shows the marks on the session they were drawn on and the
  annotated export leaves them off the next one. The surgeon can put them back (``restore``,
  ``signaling/ws/annotations.py``).
* The tracker moved the anchored marks (``relay.Placements``): every page is told where they are
  now and the annotation log keeps it (``placements``).
* The surgeon who froze the picture leaves (``Hub.on_gone``: an explicit leave at once, a lost
  connection when its reconnect grace ends): the freeze is released (reason ``left``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from persistence.times import utc_iso
from recorder.annotation_log import AnnotationLogs
from recorder.log_entry import LogEntry, LogOp
from relay import ConsultationId, Relay, StreamSession
from signaling.ws.hub import Hub
from signaling.ws.messages import AnnotationUpdate, FreezeUpdate, PlacementsUpdate

if TYPE_CHECKING:
    from relay.anchoring import Placements

logger = logging.getLogger(__name__)

ARCHIVE = "archive"
LEFT = "left"
NEW_STREAM = "new-stream"
LOG_PLACEMENTS_EVERY = 90_000 // 20
"""Placements go into the annotation log no closer than this in media time (90 kHz: at most 20 a
second, so every one of the tracker's 15 a second), and whenever a mark is added, goes or is lost or
found: the replay moves marks as live (a mark 0.1 s stale is visibly off on a moving scope), and
an hour of one tracked mark stays ~5 MB of log (pages get every placement live)."""


class BoardKeeper:
    """Wired by the app to ``Relay.on_stream_session`` and ``Hub.on_gone``."""

    def __init__(self, hub: Hub, relay: Relay, logs: AnnotationLogs) -> None:
        self.hub, self.relay, self.logs = hub, relay, logs
        self._logged: dict[ConsultationId, tuple[int, frozenset[tuple[str, str, bool]]]] = {}
        "Per consultation: the pts and the marks' (author, id, lost) of the last logged placements."

    def on_stream_session(self, session: StreamSession) -> None:
        if session.archived:
            count = len(session.archived)
            self.hub.broadcast(session.cid, AnnotationUpdate(ARCHIVE, None, count=count))
            self.log(session.cid, LogOp.ARCHIVE, None, {"count": count})
        if session.released is not None:
            self.released(session.cid, session.released.by, NEW_STREAM)

    def on_placements(self, placements: Placements) -> None:
        """Where the anchored marks are (``Relay.on_placements``): to every page, and into the
        annotation log at the analysed frame's pts, so the replay and the annotated export move
        them as they moved live."""
        message = PlacementsUpdate.of(placements)
        self.hub.broadcast(placements.cid, message)
        state = frozenset((m["author"], m["id"], m["lost"]) for m in message.marks)
        last = self._logged.get(placements.cid)
        if (
            last is not None
            and last[1] == state
            and 0 <= placements.pts - last[0] < LOG_PLACEMENTS_EVERY
        ):
            return
        if state:
            self._logged[placements.cid] = (placements.pts, state)
        else:
            self._logged.pop(placements.cid, None)  # the last anchored mark went
        entry = LogEntry(
            LogOp.PLACEMENTS, utc_iso(time.time()), placements.pts, None, {"marks": message.marks}
        )
        self.logs.get(placements.cid).append(entry)

    def on_gone(self, cid: ConsultationId, identity: str) -> None:
        router = self.relay.find(cid)
        if router is None or router.board.freeze is None or router.board.freeze.by != identity:
            return
        router.board.set_freeze(None)
        logger.info("BoardKeeper [consultation:%s] freeze released: the surgeon left", cid)
        self.released(cid, identity, LEFT)

    def released(self, cid: ConsultationId, by: str | None, reason: str) -> None:
        """Every page and the annotation log told that the freeze was released, and why."""
        self.hub.broadcast(cid, FreezeUpdate(False, None, by, reason))
        self.log(cid, LogOp.RESUME, by, {"snapshot_id": None, "reason": reason})

    def log(self, cid: ConsultationId, op: LogOp, by: str | None, payload: Any) -> None:
        """One entry of the consultation's annotation log, at the feed's media time."""
        router = self.relay.find(cid)
        pts = router.media_pts() if router is not None else None
        self.logs.get(cid).append(LogEntry(op, utc_iso(time.time()), pts, by, payload))
