"""The naive aiortc relay, kept only as the benchmark baseline (``ENDOLINK_RELAY_MODE=transcode``).

The publisher's tracks are decoded once and handed to every viewer through aiortc's
``MediaRelay``; each viewer's sender then encodes them again — one encoder per viewer, which is
what a forwarding relay avoids. Viewers can join only once the publisher is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .errors import RouterFull
from .peer import Peer

logger = logging.getLogger(__name__)


class TranscodingSource:
    def __init__(self) -> None:
        self._relay = MediaRelay()
        self._tracks: dict[str, MediaStreamTrack] = {}
        self._sinks: list[asyncio.Task[None]] = []

    def attach(self, peer: Peer, on_frame: Callable[[str], None]) -> None:
        """Take the publisher's decoded tracks; consume them from the start (an unread aiortc
        track queues every frame forever)."""
        self.close()
        for transceiver in peer.pc.getTransceivers():
            track = transceiver.receiver.track
            self._tracks[transceiver.kind] = track
            sink = self._relay.subscribe(track, buffered=False)
            self._sinks.append(asyncio.ensure_future(_drain(sink, on_frame)))

    def viewer_track(self, kind: str) -> MediaStreamTrack:
        track = self._tracks.get(kind)
        if track is None:
            raise RouterFull("transcode mode: no publisher yet", headers={"Retry-After": "1"})
        return self._relay.subscribe(track, buffered=False)

    def close(self) -> None:
        for sink in self._sinks:
            sink.cancel()
        self._sinks.clear()
        self._tracks.clear()


async def _drain(track: MediaStreamTrack, on_frame: Callable[[str], None]) -> None:
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()
            on_frame(track.kind)
