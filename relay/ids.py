"""Identifiers every layer shares: relay/, recorder/ and signaling/ all import them from here, so a
consultation id keeps one type from the URL to the Router and the recording. Importing this module
(and ``relay`` for these names) costs no media stack: the CLI and the grants name feeds and
consultations without loading aiortc."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

ConsultationId = NewType("ConsultationId", str)
"A consultation's id (its shape is checked by ``signaling.db.store.valid_consultation_id``)."


class FeedName(StrEnum):
    """A published source of a consultation: the clinic's endoscope or the surgeon's talk-back."""

    ENDOSCOPE = "endoscope"
    TALKBACK = "talkback"

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("video", "audio") if self is FeedName.ENDOSCOPE else ("audio",)
