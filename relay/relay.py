"""Relay: the media plane of the whole server — one Router per live Consultation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer

from . import forwarding
from .feed import Feed, FeedName, FeedState, RelayMode
from .ids import ConsultationId
from .router import Router

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayConfig:
    ice_servers: tuple[RTCIceServer, ...] = ()
    "Handed to every peer connection; empty means host candidates only (never a public STUN)."
    host_addresses: tuple[str, ...] = ()
    "Local addresses to gather ICE candidates on; empty = every interface plus loopback."
    announced_address: str | None = None
    "Public address written into answers instead of the host candidates' (1:1 NAT)."
    max_viewers: int = 50
    publisher_timeout_s: float = 3.0
    publisher_kbps: tuple[int, int, int] = (2000, 600, 4000)
    "Start, floor and ceiling bitrate suggested to browser publishers (x-google-*-bitrate)."
    mode: RelayMode = RelayMode.FORWARD
    "``transcode`` runs the naive per-viewer-encoding relay, for benchmarks only."


@dataclass(frozen=True)
class FeedEvent:
    cid: ConsultationId
    feed: FeedName
    state: FeedState
    identity: str | None


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.routers: dict[ConsultationId, Router] = {}
        self.on_feed_event: Callable[[FeedEvent], None] = lambda event: None
        forwarding.use_host_addresses(config.host_addresses)

    def router(self, cid: ConsultationId, video_codec: str) -> Router:
        """The consultation's Router, created on first use."""
        router = self.routers.get(cid)
        if router is None:
            router = Router(
                cid,
                video_codec,
                RTCConfiguration(iceServers=list(self.config.ice_servers)),
                self.config.announced_address,
                self.config.max_viewers,
                self.config.publisher_timeout_s,
                self.config.publisher_kbps,
                lambda feed: self._feed_changed(cid, feed),
                self.config.mode,
            )
            self.routers[cid] = router
        return router

    def find(self, cid: ConsultationId) -> Router | None:
        return self.routers.get(cid)

    def _feed_changed(self, cid: ConsultationId, feed: Feed) -> None:
        self.on_feed_event(FeedEvent(cid, feed.name, feed.state, feed.identity))

    async def close(self) -> None:
        routers, self.routers = list(self.routers.values()), {}
        await asyncio.gather(*(router.close() for router in routers))
