"""EndoLink media plane: a forwarding relay (SFU) built on aiortc. Never imports ``signaling``."""

from .annotations import Annotation, AnnotationBoard, AnnotationError, Freeze, Mark, Tool
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
from .ids import ConsultationId
from .peer import IceRestartUnsupported, Peer, PeerRole
from .producer import Producer
from .relay import FeedEvent, Relay, RelayConfig
from .rendition import Rendition
from .router import Router

__all__ = [
    "Annotation",
    "AnnotationBoard",
    "AnnotationError",
    "ConsultationId",
    "Consumer",
    "Feed",
    "FeedBusy",
    "FeedEvent",
    "FeedName",
    "FeedState",
    "Freeze",
    "IceRestartUnsupported",
    "Mark",
    "MediaUnsupported",
    "Peer",
    "PeerRole",
    "Producer",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMode",
    "Rendition",
    "Router",
    "RouterClosed",
    "RouterFull",
    "SdpInvalid",
    "Tool",
]
