"""The board's messages on a consultation WebSocket: annotation ops, pointer moves and freezes.

Accepted annotation ops change the Router's AnnotationBoard (what the burned-in rendition draws),
go to everyone and are appended to the consultation's annotation log; pointer moves go to everyone
else and are never stored; a freeze (lead only) may name a snapshot of the consultation. Drawing
and pointing need ``may_annotate``; clearing, restoring and freezing also need to lead. The board
is made by the first mark or freeze (``Connection.router``)."""

from __future__ import annotations

import time

from persistence.times import utc_iso
from recorder.log_entry import LogEntry, LogOp
from recorder.snapshots import SNAPSHOT, STILL, SnapshotStore
from relay import Annotation, AnnotationBoard, AnnotationError, ConsultationId, Freeze
from signaling.auth.grants import Forbidden
from signaling.ws.connection import Connection
from signaling.ws.hub import Participant
from signaling.ws.messages import (
    AnnotationUpdate,
    FreezeState,
    FreezeUpdate,
    PointerMove,
    snapshot_url,
)
from signaling.ws.protocol import (
    FORBIDDEN,
    INVALID,
    AnnotationMessage,
    AnnotationOp,
    FreezeMessage,
    PointerMessage,
)


def freeze_state(cid: ConsultationId, board: AnnotationBoard) -> FreezeState:
    """The board's freeze as ``welcome`` and ``freeze`` announce it (the snapshot's URL)."""
    freeze = board.freeze
    if freeze is None:
        return FreezeState(False, None, None)
    snapshot = None
    if freeze.snapshot_id is not None:
        kind = STILL if freeze.still else SNAPSHOT
        snapshot = {"id": freeze.snapshot_id, "url": snapshot_url(cid, freeze.snapshot_id, kind)}
    return FreezeState(True, snapshot, freeze.by)


async def on_annotation(connection: Connection, message: AnnotationMessage) -> None:
    """Apply one op to the board, then tell everyone (the sender too, so every page draws what
    the server accepted) and append it to the timeline."""
    lead_only = message.op in (AnnotationOp.CLEAR, AnnotationOp.RESTORE)
    if not _may_draw(connection, lead_only):
        return
    router = connection.router()
    author, now, media_pts = connection.participant.identity, time.time(), router.media_pts()
    try:
        accepted = _apply(router.board, message, connection.participant, now, media_pts)
    except AnnotationError as exc:
        connection.refuse(INVALID, str(exc))
        return
    connection.hub.broadcast(connection.cid, accepted)
    connection.hub.counts.annotation_ops[str(accepted.op)] += 1
    change = {k: v for k, v in accepted.body().items() if k not in ("op", "by")}
    connection.log.append(LogEntry(LogOp(accepted.op), utc_iso(now), media_pts, author, change))


def _apply(
    board: AnnotationBoard,
    message: AnnotationMessage,
    participant: Participant,
    now: float,
    media_pts: int | None,
) -> AnnotationUpdate:
    """The op as announced. Undo is announced as the ``remove`` of the mark it took away, so
    pages and the replay only know add/update/remove/clear. Marks belong to the person (the
    identity), whichever of their devices drew them."""
    author = participant.identity
    if message.op is AnnotationOp.ADD:
        assert message.mark is not None
        new = Annotation(
            message.mark, author, now, now, media_pts, participant.name, message.frame_pts
        )
        added = board.add(new)
        return AnnotationUpdate(message.op, author, annotation=added.to_json())
    if message.op is AnnotationOp.UPDATE:
        assert message.mark is not None
        updated = board.update(message.mark, author, now, message.frame_pts)
        return AnnotationUpdate(message.op, author, annotation=updated.to_json())
    if message.op is AnnotationOp.REMOVE:
        assert message.id is not None
        return AnnotationUpdate(message.op, author, id=board.remove(message.id, author).mark.id)
    if message.op is AnnotationOp.UNDO:
        removed = board.undo(author, now)
        if removed is None:
            raise AnnotationError("you have no mark to undo")
        return AnnotationUpdate(AnnotationOp.REMOVE, author, id=removed.mark.id)
    if message.op is AnnotationOp.RESTORE:
        if not board.archived:
            raise AnnotationError("there are no previous marks to restore")
        restored = [a.to_json() for a in board.restore(now)]
        return AnnotationUpdate(message.op, author, annotations=restored)
    board.clear()
    return AnnotationUpdate(message.op, author)


async def on_pointer(connection: Connection, message: PointerMessage) -> None:
    """Fire-and-forget: to everyone else, never stored."""
    if _may_draw(connection, lead_only=False):
        pointer = PointerMove(connection.participant.identity, message.x, message.y, message.color)
        connection.hub.broadcast(connection.cid, pointer, exclude=connection.participant)


async def on_freeze(connection: Connection, message: FreezeMessage) -> None:
    if not _may_draw(connection, lead_only=True):
        return
    snapshot_id, kind = message.snapshot_id, None
    if snapshot_id is not None:
        kind = await SnapshotStore(connection.data_dir).kind(connection.cid, snapshot_id)
        if kind is None:
            connection.refuse(INVALID, "freeze.snapshot_id names no snapshot of this consultation")
            return
    router = connection.router()
    board, by, now = router.board, connection.participant.identity, time.time()
    board.set_freeze(Freeze(by, now, snapshot_id, kind == STILL) if message.frozen else None)
    state = freeze_state(connection.cid, board)
    connection.hub.broadcast(connection.cid, FreezeUpdate(state.frozen, state.snapshot, by))
    kind = LogOp.FREEZE if message.frozen else LogOp.RESUME
    payload = {"snapshot_id": snapshot_id}
    connection.log.append(LogEntry(kind, utc_iso(now), router.media_pts(), by, payload))


def _may_draw(connection: Connection, lead_only: bool) -> bool:
    """Drawing and pointing need ``may_annotate``; clear and freeze also need to lead the
    consultation. A refusal is answered with ``forbidden``."""
    try:
        connection.grant.ensure_annotate(connection.cid)
        if lead_only:
            connection.grant.ensure_lead(connection.cid)
    except Forbidden as exc:
        connection.refuse(FORBIDDEN, str(exc))
        return False
    return True
