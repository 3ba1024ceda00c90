"""Stream sessions of the endoscope feed: what leaves the picture when a new one begins.

A publish that begins a new stream session (``Feed.begins_session``: the clinic stopped and
started again, or came back after the offline window) archives the board's marks and releases a
freeze before any frame of the new picture arrives, so neither a rendition burning them in nor
anything drawn from the log puts them on a picture they were not drawn on. The Router calls
``begin`` and hands the result to the app (``Router(on_session=...)``), which tells the pages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .annotations import Annotation, AnnotationBoard, Freeze
from .ids import ConsultationId

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSession:
    """A new stream session of the endoscope feed began: what left the picture with the old one."""

    cid: ConsultationId
    number: int
    "1 for the first session of this Router, then 2, 3…"
    archived: tuple[Annotation, ...]
    "The marks taken off the picture (restorable: ``AnnotationBoard.restore``)."
    released: Freeze | None
    "The freeze that ended with the old picture, if any."


def begin(cid: ConsultationId, board: AnnotationBoard, number: int, label: str) -> StreamSession:
    """Before the new picture's first frame: the old marks and freeze leave it (the first
    session has no old marks: a board filled before the clinic went live stays)."""
    released = board.freeze
    if released is not None:
        board.set_freeze(None)
    archived = board.archive(time.time()) if number > 1 else ()
    logger.info(
        "Router(%s) stream session %d: %d marks archived%s",
        label,
        number,
        len(archived),
        ", freeze released" if released else "",
    )
    return StreamSession(cid, number, archived, released)
