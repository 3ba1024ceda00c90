"""Relay errors. Each carries the HTTP status the edge answers with, so ``relay/`` stays free of
``signaling/`` while WHIP/WHEP still get the RFC 9725 status codes.

    RelayError
    ├── SdpInvalid          400  offer is not parseable SDP or breaks WHIP rules
    ├── MediaUnsupported    422  no usable codec / unsupported track layout: the whole offer is
    │   │                        refused, never a partial answer (RFC 9725 §4.4.3; not 406,
    │   │                        which the WHEP draft gives to a server's counter-offer)
    │   └── TooManyTracks   422  more than one audio or video track (RFC 9725 §4.4.2)
    ├── FeedBusy            409  another identity already publishes this feed
    ├── TooManySessions     429  one identity holds too many sessions (Retry-After)
    ├── RouterFull          503  a consultation's or the server's limit reached (Retry-After)
    └── RouterClosed        404  consultation's media router is gone
"""

from __future__ import annotations


class RelayError(Exception):
    status = 500
    code = "relay-error"

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.headers = headers or {}


class SdpInvalid(RelayError):
    status = 400
    code = "bad-sdp"


class MediaUnsupported(RelayError):
    status = 422
    code = "unsupported-media"


class TooManyTracks(MediaUnsupported):
    code = "too-many-tracks"


class FeedBusy(RelayError):
    status = 409
    code = "feed-busy"


class TooManySessions(RelayError):
    status = 429
    code = "too-many-sessions"


class RouterFull(RelayError):
    status = 503
    code = "full"


class RouterClosed(RelayError):
    status = 404
    code = "closed"
