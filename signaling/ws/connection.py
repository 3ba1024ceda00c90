"""Connection: one authenticated consultation WebSocket as its message handlers see it — where it
is, on whose behalf, and how to answer the sender (``reply``, ``refuse``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recorder.annotation_log import AnnotationLog
from relay import ConsultationId, Relay, Router
from signaling.auth.grants import Grant
from signaling.ws.chat import ChatHistory
from signaling.ws.hub import Hub, Participant
from signaling.ws.messages import ErrorReply, ServerMessage

if TYPE_CHECKING:  # stills.py handles messages, so it imports this module
    from signaling.ws.stills import Stills

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """What a message handler needs: where it is and on whose behalf."""

    hub: Hub
    cid: ConsultationId
    participant: Participant
    grant: Grant
    relay: Relay
    video_codec: str
    log: AnnotationLog
    chats: ChatHistory
    data_dir: Path
    frame_deadline_s: float
    stills: Stills

    def router(self) -> Router:
        """The consultation's media side, made on first use: it owns the AnnotationBoard."""
        return self.relay.router(self.cid, self.video_codec)

    def reply(self, message: ServerMessage) -> None:
        self.hub.send(self.cid, self.participant, message)

    def refuse(self, code: str, reason: str) -> None:
        """An ``error`` to this sender only (reasons never quote the client's values)."""
        self.hub.counts.refused[code] += 1
        logger.info(
            "WebSocket [consultation:%s] %s message refused (%s): %s",
            self.cid,
            self.participant.identity,
            code,
            reason,
        )
        self.reply(ErrorReply(code, reason))
