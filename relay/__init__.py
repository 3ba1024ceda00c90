"""EndoLink media plane: a forwarding relay (SFU) built on aiortc. Never imports ``signaling``."""

from .consumer import Consumer
from .errors import (
    FeedBusy,
    MediaUnsupported,
    RelayError,
    RouterClosed,
    RouterFull,
    SdpInvalid,
)
from .feed import Feed, FeedName, FeedState, RelayMode
from .peer import IceRestartUnsupported, Peer, PeerRole
from .producer import Producer
from .relay import FeedEvent, Relay, RelayConfig
from .router import Router

__all__ = [
    "Consumer",
    "Feed",
    "FeedBusy",
    "FeedEvent",
    "FeedName",
    "FeedState",
    "IceRestartUnsupported",
    "MediaUnsupported",
    "Peer",
    "PeerRole",
    "Producer",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMode",
    "Router",
    "RouterClosed",
    "RouterFull",
    "SdpInvalid",
]
