"""What the recorder knows of a consultation: the app looks it up (the recorder never imports the
store), the recorder only reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay import ConsultationId


@dataclass(frozen=True)
class ConsultationInfo:
    """What the recorder needs to know about a consultation (provided by the app)."""

    id: ConsultationId
    title: str
    video_codec: str
    recording_enabled: bool
    consent: dict[str, Any] | None
