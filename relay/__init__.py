"""EndoLink media plane: a forwarding relay (SFU) built on aiortc. Never imports ``signaling``.

The identifiers (``ConsultationId``, ``FeedName``) are imported at once; every other name loads its
module on first use (PEP 562), so a module that only names a consultation — the grants, the CLI —
does not pay for importing aiortc and PyAV.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .ids import ConsultationId, FeedName

if TYPE_CHECKING:
    from .admission import Admission, SessionLimits
    from .annotations import Annotation, AnnotationBoard, AnnotationError, Freeze, Mark, Tool
    from .consumer import Consumer
    from .errors import (
        FeedBusy,
        MediaUnsupported,
        RelayError,
        RouterClosed,
        RouterFull,
        SdpInvalid,
        TooManySessions,
        TooManyTracks,
    )
    from .feed import Feed, FeedState, OfflineReason, RelayMode
    from .ladder import Ladder, Quality
    from .peer import IceRestartUnsupported, Peer, PeerRole
    from .producer import Producer
    from .relay import FeedEvent, Relay, RelayConfig
    from .rendition import Rendition
    from .router import Router
    from .stream_session import StreamSession

_MODULE_OF = {
    **dict.fromkeys(("Admission", "SessionLimits"), "admission"),
    **dict.fromkeys(
        ("Annotation", "AnnotationBoard", "AnnotationError", "Freeze", "Mark", "Tool"),
        "annotations",
    ),
    "Consumer": "consumer",
    **dict.fromkeys(
        (
            "FeedBusy",
            "MediaUnsupported",
            "RelayError",
            "RouterClosed",
            "RouterFull",
            "SdpInvalid",
            "TooManySessions",
            "TooManyTracks",
        ),
        "errors",
    ),
    **dict.fromkeys(("Feed", "FeedState", "OfflineReason", "RelayMode"), "feed"),
    **dict.fromkeys(("Ladder", "Quality"), "ladder"),
    **dict.fromkeys(("IceRestartUnsupported", "Peer", "PeerRole"), "peer"),
    "Producer": "producer",
    **dict.fromkeys(("FeedEvent", "Relay", "RelayConfig"), "relay"),
    "Rendition": "rendition",
    "Router": "router",
    "StreamSession": "stream_session",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


__all__ = [
    "Admission",
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
    "Ladder",
    "Mark",
    "MediaUnsupported",
    "OfflineReason",
    "Peer",
    "PeerRole",
    "Producer",
    "Quality",
    "Relay",
    "RelayConfig",
    "RelayError",
    "RelayMode",
    "Rendition",
    "Router",
    "RouterClosed",
    "RouterFull",
    "SdpInvalid",
    "SessionLimits",
    "StreamSession",
    "TooManySessions",
    "TooManyTracks",
    "Tool",
]
