"""What the consultation's room writes to the audit trail: each device joining and leaving, and
what the hub announced of the board — marks added or removed (an undo is announced as a remove),
the board cleared, archived or restored, freezes and their release.

Pen-stroke ``update``s and pointer moves are not audited: they are the same mark moving (its add
is), and a stroke streams dozens of them a second. It observes the hub (``Hub.on_device``,
``Hub.on_broadcast``), so it sees exactly what the room was told, and writes with
``AuditTrail.submit`` (never blocking a broadcast; the volume is bounded by the hub's rate limits).
"""

from __future__ import annotations

from relay import ConsultationId
from signaling.db.audit import AuditAction, AuditRecord, AuditTrail
from signaling.ws.hub import Hub, Participant
from signaling.ws.messages import AnnotationUpdate, FreezeUpdate, ServerMessage

SERVER = "server"
"Identity and role of what the server does itself (archive marks at a new stream session)."
_AUDITED_OPS = ("add", "remove", "clear", "archive", "restore")


class RoomAudit:
    def __init__(self, hub: Hub, trail: AuditTrail) -> None:
        self._hub = hub
        self._trail = trail

    def install(self) -> None:
        self._hub.on_device = self.on_device
        self._hub.on_broadcast = self.on_broadcast

    def on_device(self, cid: ConsultationId, participant: Participant, left: str | None) -> None:
        """``left`` is None when the device joined, else how it left."""
        action = AuditAction.JOIN if left is None else AuditAction.LEAVE
        detail = f"device {participant.device}" + ("" if left is None else f": {left}")
        self._write(cid, participant.identity, participant, action, detail)

    def on_broadcast(self, cid: ConsultationId, message: ServerMessage) -> None:
        if isinstance(message, AnnotationUpdate) and message.op in _AUDITED_OPS:
            self._write(cid, message.by, None, AuditAction.ANNOTATION, _annotation(message))
        elif isinstance(message, FreezeUpdate):
            action = AuditAction.FREEZE if message.frozen else AuditAction.UNFREEZE
            snapshot = message.snapshot["id"] if message.snapshot else None
            detail = f"snapshot {snapshot}" if snapshot else message.reason
            self._write(cid, message.by, None, action, detail)

    def _write(
        self,
        cid: ConsultationId,
        identity: str | None,
        participant: Participant | None,
        action: AuditAction,
        detail: str | None,
    ) -> None:
        who = participant or (None if identity is None else self._hub.person(cid, identity))
        name, role = (who.name, str(who.role)) if who else ("", SERVER if identity is None else "")
        record = AuditRecord(cid, identity or SERVER, name, role, action, detail=detail)
        self._trail.submit(record)


def _annotation(message: AnnotationUpdate) -> str:
    """The op and which mark (never a text label's words: they are the clinicians' content)."""
    if message.annotation is not None:
        return f"{message.op} {message.annotation.get('tool')} {message.annotation.get('id')}"
    if message.id is not None:
        return f"{message.op} {message.id}"
    if message.annotations is not None:
        return f"{message.op} {len(message.annotations)} marks"
    if message.count is not None:
        return f"{message.op} {message.count} marks"
    return message.op
