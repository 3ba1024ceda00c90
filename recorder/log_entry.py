"""One line of a consultation's annotation log, as the writer (``AnnotationLog.append``) takes it
and the reader (``read_annotation_log`` → ``build_timeline``) gives it back.

On disk each entry is one compact JSON object, keys in the order the log has always written them
(``ts``, ``op``, the op's own fields, ``by``, ``media_pts``; a freeze's ``snapshot_id`` after
``by``), so logs written before this type existed read back unchanged and new lines are the same
bytes. The reader is lenient: the log is ours, but a damaged or hand-edited line must cost only
itself — fields of the wrong type read as absent, a line of an unknown op is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LogOp(StrEnum):
    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"
    CLEAR = "clear"
    FREEZE = "freeze"
    RESUME = "resume"
    ARCHIVE = "archive"
    "A new stream session took every mark off the picture (``count``; ``by`` is null)."
    RESTORE = "restore"
    "The surgeon put the archived marks back (``annotations``: each as restored)."
    CHAT = "chat"
    "A chat message (``text``, the sender's ``name`` and ``role``): the chat history and replay."
    PLACEMENTS = "placements"
    """Where the anchored marks were on the analysed frame of ``media_pts`` (``marks``: each
    ``{author, id, m, confidence, lost}``, as the live ``placements`` message)."""


_PAYLOAD_AFTER_BY = (LogOp.FREEZE, LogOp.RESUME, LogOp.ARCHIVE)


@dataclass(frozen=True)
class LogEntry:
    kind: LogOp
    ts: str | None
    "Server wall time (ISO 8601 UTC): places the op when no video pts does."
    media_pts: int | None
    "The relay's video pts when the op arrived (90 kHz): places it on the recorded frame."
    by: str | None
    "Who did it (the author of the mark for add/update/remove)."
    payload: Mapping[str, Any] = field(default_factory=dict)
    """The op's own fields: ``annotation`` (add/update), ``id`` (remove), ``snapshot_id``
    (freeze), ``text``/``name``/``role`` (chat)."""

    def to_json(self) -> dict[str, Any]:
        head: dict[str, Any] = {"ts": self.ts, "op": str(self.kind)}
        if self.kind in _PAYLOAD_AFTER_BY:
            return {**head, "by": self.by, **self.payload, "media_pts": self.media_pts}
        return {**head, **self.payload, "by": self.by, "media_pts": self.media_pts}

    @classmethod
    def from_json(cls, data: Any) -> LogEntry | None:
        """The entry of one parsed line; None for a line that is no entry at all."""
        op = data.get("op") if isinstance(data, Mapping) else None
        if op not in tuple(LogOp):
            return None
        kind = LogOp(op)
        ts, by, pts = data.get("ts"), data.get("by"), data.get("media_pts")
        return cls(
            kind=kind,
            ts=ts if isinstance(ts, str) else None,
            media_pts=pts if isinstance(pts, int) and not isinstance(pts, bool) else None,
            by=by if isinstance(by, str) else None,
            payload={k: v for k, v in data.items() if k not in _COMMON},
        )


_COMMON = frozenset({"ts", "op", "by", "media_pts"})
