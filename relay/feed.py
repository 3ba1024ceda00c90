"""Feed: a published source of a consultation — ``endoscope`` (clinic video + audio) or
``talkback`` (the surgeon's microphone). It owns one Producer per kind, knows its current
publisher, and says whether it is live: media stopping for ``timeout_s`` means offline, even when
the publisher vanished without a goodbye (aiortc itself notices that only after ~35 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from .codecs import AUDIO_CODEC
from .ids import FeedName
from .peer import Peer
from .producer import Producer
from .transcoding import TranscodingSource

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.5


class RelayMode(StrEnum):
    FORWARD = "forward"
    "Encoded frames pass through untouched (the product)."
    TRANSCODE = "transcode"
    "aiortc's MediaRelay, one encoder per viewer: the benchmark baseline only."


class FeedState(StrEnum):
    LIVE = "live"
    OFFLINE = "offline"


class OfflineReason(StrEnum):
    """Why a feed that had a publisher is offline, so viewers can tell a Stop from a crash."""

    ENDED = "ended"
    "The publisher ended its session itself (WHIP DELETE: the clinic pressed Stop)."
    LOST = "lost"
    "Media stopped arriving or the connection closed without a goodbye: it may come back."


class Feed:
    def __init__(
        self,
        name: FeedName,
        video_codec: str,
        timeout_s: float,
        on_state: Callable[[Feed], None],
        label: str,
        session_gap_s: float = 60.0,
    ) -> None:
        self.name = name
        self.label = f"{label} feed:{name}"
        self.producers = {
            kind: Producer(kind, video_codec if kind == "video" else AUDIO_CODEC, self.label)
            for kind in name.kinds
        }
        self.publisher: Peer | None = None
        self.transcoding = TranscodingSource()
        self.state = FeedState.OFFLINE
        self.reason: OfflineReason | None = None
        "Set while offline after a publisher; None while live or before anyone published."
        self._ended_by: Peer | None = None
        self.sessions = 0
        "Stream sessions begun (see ``begins_session``)."
        self._last_identity: str | None = None
        self._gone_at: float | None = None
        "When the last publisher went (monotonic), while nobody publishes."
        self._session_gap_s = session_gap_s
        self._timeout_s = timeout_s
        self._on_state = on_state
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def identity(self) -> str | None:
        return self.publisher.identity if self.publisher else None

    def begins_session(self, identity: str) -> bool:
        """Whether a publish by ``identity`` begins a new stream session — a new picture, on
        which the previous session's marks do not belong. It does when nobody publishes and the
        last publisher ended its session (Stop), or someone else publishes now, or the feed was
        lost for ``session_gap_s`` or longer (the recording's offline window). A page reload, a
        reconnect or a network change within that window continues the session."""
        if self.publisher is not None:
            return False  # the same publisher on a new connection
        gone = self._gone_at is not None and time.monotonic() - self._gone_at >= self._session_gap_s
        begins = (
            self.sessions == 0
            or self.reason is OfflineReason.ENDED
            or identity != self._last_identity
            or gone
        )
        if begins:
            self.sessions += 1
        self._last_identity = identity
        return begins

    def set_publisher(self, peer: Peer) -> None:
        self.publisher = peer
        self._gone_at = None
        if self._watchdog is None:
            self._watchdog = asyncio.ensure_future(self._watch())

    def end(self, peer: Peer) -> None:
        """The publisher ends its own session: its closing reads "ended", not "lost"."""
        if self.publisher is peer:
            self._ended_by = peer

    def publisher_gone(self, peer: Peer) -> None:
        if self.publisher is not peer:
            return  # an older, replaced connection
        self.publisher = None
        self._gone_at = time.monotonic()
        for producer in self.producers.values():
            producer.detach()
        self.transcoding.close()
        ended = self._ended_by is peer
        self._ended_by = None
        self._set_state(FeedState.OFFLINE, OfflineReason.ENDED if ended else OfflineReason.LOST)

    def _last_media_at(self) -> float | None:
        times = [p.last_frame_at for p in self.producers.values() if p.last_frame_at is not None]
        return max(times) if times else None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            last = self._last_media_at()
            fresh = last is not None and time.monotonic() - last < self._timeout_s
            if self.publisher and fresh:
                self._set_state(FeedState.LIVE, None)
            elif self.publisher and self.state is FeedState.LIVE:
                self._set_state(FeedState.OFFLINE, OfflineReason.LOST)

    def _set_state(self, state: FeedState, reason: OfflineReason | None) -> None:
        if state is not self.state or reason is not self.reason:
            self.state = state
            self.reason = reason
            logger.info("Feed(%s) %s%s", self.label, state, f" ({reason})" if reason else "")
            self._on_state(self)

    def to_json(self) -> dict[str, str | None]:
        return {
            "state": str(self.state),
            "identity": self.identity,
            "reason": str(self.reason) if self.reason else None,
        }

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.transcoding.close()
        for producer in self.producers.values():
            producer.close()
