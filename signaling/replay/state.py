"""What every replay route shares, made once per app: the recording library (the recorder's read
side) and the media tokens (the audit trail is the app's ``AUDIT``)."""

from __future__ import annotations

from dataclasses import dataclass

from recorder.library import RecordingLibrary
from signaling.auth.media_tokens import MediaTokens


@dataclass(frozen=True)
class ReplayState:
    library: RecordingLibrary
    tokens: MediaTokens

    async def close(self) -> None:
        await self.library.close()
