"""What every replay route shares, made once per app: the recording library (the recorder's read
side), the media tokens and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from recorder.library import RecordingLibrary
from signaling.auth.media_tokens import MediaTokens
from signaling.db.audit import AuditTrail


@dataclass(frozen=True)
class ReplayState:
    library: RecordingLibrary
    tokens: MediaTokens
    audit: AuditTrail

    async def close(self) -> None:
        await self.library.close()
        await self.audit.close()
