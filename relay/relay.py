"""Relay: the media plane of the whole server — one Router per Consultation in use.

A Router exists only while someone needs it: it is made by the first publish, view, recorder tap
or annotation, and closed once it has had no peer (publisher or viewer) and no WebSocket
participant (``attended``) for ``router_idle_s`` — its feeds' watchdogs, its Rendition and its
AnnotationBoard go with it (docs/closures.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
from aiortc import RTCConfiguration, RTCIceServer

from . import forwarding
from .admission import Admission, SessionLimits
from .anchoring import Placements
from .feed import Feed, FeedState, OfflineReason, RelayMode
from .ids import ConsultationId, FeedName
from .ladder import DEFAULT_KBPS
from .media_clock import MediaClock
from .router import Router
from .selector import QualityChange
from .stream_session import StreamSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayConfig:
    ice_servers: Callable[[], Sequence[RTCIceServer]] = tuple
    """Asked for every new peer connection (minted TURN credentials expire, so a Router must not
    keep one list); empty means host candidates only (never a public STUN)."""
    host_addresses: tuple[str, ...] = ()
    "Local addresses to gather ICE candidates on; empty = every interface plus loopback."
    announced_address: str | None = None
    "Public address written into answers instead of the host candidates' (1:1 NAT)."
    max_viewers: int = 50
    publisher_timeout_s: float = 3.0
    peer_timeout_s: float = 4.0
    "A connected peer not heard from this long has vanished: its session is closed."
    publisher_kbps: tuple[int, int, int] = (1500, 150, 4000)
    "Start, floor and ceiling bitrate suggested to browser publishers (x-google-*-bitrate)."
    mode: RelayMode = RelayMode.FORWARD
    "``transcode`` runs the naive per-viewer-encoding relay, for benchmarks only."
    router_idle_s: float = 60.0
    "A Router without peers and WebSocket participants this long is closed and forgotten."
    limits: SessionLimits = SessionLimits()
    "Connect deadline and session limits per identity, consultation and server (admission.py)."
    session_gap_s: float = 60.0
    """A clinic whose feed was lost and that publishes again within this long continues its
    stream session (its marks stay); later, it begins a new one (the recording's offline window)."""
    ladder_kbps: tuple[int, int] = DEFAULT_KBPS
    "Video bitrates of the quality ladder's 540p and 360p rungs (kbit/s)."
    tracking: bool = True
    "Anchored marks follow the tissue (``relay.anchoring``); off: they stay where drawn."


@dataclass(frozen=True)
class FeedEvent:
    cid: ConsultationId
    feed: FeedName
    state: FeedState
    identity: str | None
    reason: OfflineReason | None = None


CV_THREADS = 1
"""OpenCV's own thread pool, process-wide: off. The relay's computer vision (tracking, the picture
and privacy guards, the burn-in) already runs per consultation on its own thread; a pool inside
every call spins the second core and costs ~25 % more CPU time for the same work (measured,
docs/benchmarks.md, tracking accuracy)."""


class Relay:
    """``on_feed_event`` and ``attended`` (does the consultation have WebSocket participants?)
    are set by the app: relay/ never asks signaling/ itself."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.routers: dict[ConsultationId, Router] = {}
        self.closed = False
        "Set once the relay starts closing (shutdown): ``/readyz`` answers 503."
        self.on_feed_event: Callable[[FeedEvent], None] = lambda event: None
        self.on_stream_session: Callable[[StreamSession], None] = lambda session: None
        self.on_quality: Callable[[QualityChange], None] = lambda change: None
        self.on_media_clock: Callable[[MediaClock], None] = lambda clock: None
        self.on_placements: Callable[[Placements], None] = lambda placements: None
        self.attended: Callable[[ConsultationId], bool] = lambda cid: False
        self.admission = Admission(config.limits)
        self._idle_since: dict[ConsultationId, float] = {}
        self._reaper: asyncio.Task[None] | None = None
        forwarding.use_host_addresses(config.host_addresses)
        cv2.setNumThreads(CV_THREADS)

    def router(self, cid: ConsultationId, video_codec: str) -> Router:
        """The consultation's Router, created on first use."""
        router = self.routers.get(cid)
        if router is None:
            router = Router(
                cid,
                video_codec,
                self.configuration,
                self.config.announced_address,
                self.config.max_viewers,
                self.config.publisher_timeout_s,
                self.config.peer_timeout_s,
                self.config.publisher_kbps,
                lambda feed: self._feed_changed(cid, feed),
                self.config.mode,
                self.config.session_gap_s,
                lambda session: self.on_stream_session(session),
                self.admission,
                self.config.ladder_kbps,
                lambda change: self.on_quality(change),
                lambda clock: self.on_media_clock(clock),
            )
            router.anchoring.enabled = self.config.tracking
            router.anchoring.on_placements = lambda placements: self.on_placements(placements)
            self.routers[cid] = router
            if self._reaper is None:
                self._reaper = asyncio.ensure_future(self._reap())
        return router

    def configuration(self) -> RTCConfiguration:
        """For a new peer connection (fresh ICE servers: minted TURN credentials expire)."""
        return RTCConfiguration(iceServers=list(self.config.ice_servers()))

    def find(self, cid: ConsultationId) -> Router | None:
        return self.routers.get(cid)

    def feed_states(self, cid: ConsultationId) -> dict[str, dict[str, str | None]]:
        """Every feed's state; all offline while the consultation has no Router."""
        router = self.routers.get(cid)
        if router is not None:
            return router.feed_states()
        return {
            str(name): {"state": str(FeedState.OFFLINE), "identity": None, "reason": None}
            for name in FeedName
        }

    def _feed_changed(self, cid: ConsultationId, feed: Feed) -> None:
        self.on_feed_event(FeedEvent(cid, feed.name, feed.state, feed.identity, feed.reason))

    async def _reap(self) -> None:
        """Close Routers idle for ``router_idle_s``; runs while any Router exists."""
        idle_s = self.config.router_idle_s
        while self.routers:
            await asyncio.sleep(min(idle_s / 4, 5.0))
            now = time.monotonic()
            for cid, router in list(self.routers.items()):
                if router.in_use() or self.attended(cid):
                    self._idle_since.pop(cid, None)
                elif now - self._idle_since.setdefault(cid, now) >= idle_s:
                    del self.routers[cid], self._idle_since[cid]
                    logger.info("Router(%s) idle for %g s: closing", router.label, idle_s)
                    await router.close()
        self._reaper = None

    async def drop(self, cid: ConsultationId) -> None:
        """Close the consultation's Router now (another node serves it): its sessions end,
        and their clients reconnect."""
        router = self.routers.pop(cid, None)
        self._idle_since.pop(cid, None)
        if router is not None:
            logger.info("Router(%s) let go: another node serves it", router.label)
            await router.close()

    async def close(self) -> None:
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        routers, self.routers = list(self.routers.values()), {}
        self._idle_since.clear()
        await asyncio.gather(*(router.close() for router in routers))
