"""Client → server messages of WebSocket protocol v1: parsing and validation, nothing else.

``parse_client_message`` turns one text frame into a typed message or raises ``ProtocolError``;
it never raises anything else, whatever the input (a property test holds it to that). Reasons
never quote the client's values, so they are safe to log. Unknown keys are dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from recorder.snapshots import SNAPSHOT_ID
from relay import AnnotationError, FeedName, Mark
from relay.annotations import COLOR, MARK_ID, MAX_FRAME_PTS, coordinate
from signaling.auth.names import InvalidName, display_name
from signaling.http.json_input import JsonInputError, load_json

MALFORMED = "malformed"
"Not JSON, not an object, or no string ``type``: the socket is closed with 4400."
UNKNOWN_TYPE = "unknown-type"
"A ``type`` this server does not know: answered with an ``error``, the socket stays open."
INVALID = "invalid-message"
"A known ``type`` with bad fields: answered with an ``error``, the socket stays open."
FORBIDDEN = "forbidden"
"The sender's grant does not allow this message (an observer drawing, a clinic clearing)."
BAD_NAME = "bad-name"
"The ``auth`` message's ``name`` cannot be used: the socket is closed with 4422 and the reason."
RATE_LIMITED = "rate-limited"
"Over the annotation or pointer rate: the message is dropped, the socket stays open."

MAX_CHAT_LENGTH = 2000
MAX_TOKEN_LENGTH = 8192
SERVER_ONLY = frozenset({"placements"})
"Message types only the server sends: a client sending one is refused (``forbidden``)."
STAT_LIMITS: dict[str, float] = {
    "fps": 1000.0,
    "width": 16384.0,
    "height": 16384.0,
    "bitrate_kbps": 1_000_000.0,
    "rtt_ms": 600_000.0,
    "loss_pct": 100.0,
    "jitter_ms": 600_000.0,
}
"Upper bound of each numeric stat; every one is optional, finite and non-negative."
STAT_DIRECTIONS = ("send", "recv")


class ProtocolError(Exception):
    """A rejected client message; ``code`` is one of MALFORMED, UNKNOWN_TYPE, INVALID."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def fatal(self) -> bool:
        """Malformed frames end the connection; the client is not speaking the protocol."""
        return self.code == MALFORMED


@dataclass(frozen=True)
class AuthMessage:
    token: str
    name: str | None = None
    "The name the person typed on a page whose link has none (checked by ``display_name``)."


@dataclass(frozen=True)
class ChatMessage:
    text: str


@dataclass(frozen=True)
class StatsMessage:
    stats: dict[str, float | str]
    "Only known keys: the numbers in STAT_LIMITS that were given, ``direction``, ``feed``."


@dataclass(frozen=True)
class PingMessage:
    pass


class AnnotationOp(StrEnum):
    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"
    UNDO = "undo"
    CLEAR = "clear"
    RESTORE = "restore"
    "Put back the marks the last new stream session archived (the surgeon only)."


@dataclass(frozen=True)
class AnnotationMessage:
    op: AnnotationOp
    mark: Mark | None = None
    "The validated drawing, for ``add`` and ``update``."
    id: str | None = None
    "The sender's mark to ``remove``."
    frame_pts: int | None = None
    """An anchored mark's ``add``: the relay pts of the frame its author was looking at (the
    page's media clock), where the tracker anchors it (an ``update`` keeps the add's)."""


@dataclass(frozen=True)
class PointerMessage:
    x: float | None
    y: float | None
    "Both None: the pointer is hidden."
    color: str | None = None
    "``#rrggbb`` (lower case): the author's colour; None: the page picks one by role."


@dataclass(frozen=True)
class FreezeMessage:
    frozen: bool
    snapshot_id: str | None = None
    "A stored snapshot of the frozen frame (only with ``frozen``)."


@dataclass(frozen=True)
class StillsRequestMessage:
    """The surgeon asks for stills mode (``on``), for the next still (``next``), or for video
    again; the clinic's page says its link is too slow (``on``) or has recovered."""

    on: bool
    next: bool = False


ClientMessage = (
    AuthMessage
    | ChatMessage
    | StatsMessage
    | PingMessage
    | AnnotationMessage
    | PointerMessage
    | FreezeMessage
    | StillsRequestMessage
)


def parse_client_message(raw: str) -> ClientMessage:
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise ProtocolError(MALFORMED, "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(MALFORMED, "message must have a string 'type'")
    if kind in SERVER_ONLY:
        raise ProtocolError(FORBIDDEN, f"{kind} messages are sent by the server only")
    parser = _PARSERS.get(kind)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type; known types: {known}")
    return parser(data)


def _load_json(raw: str) -> Any:
    try:
        return load_json(raw)
    except JsonInputError as exc:
        raise ProtocolError(MALFORMED, str(exc)) from None


def _auth(data: dict[str, Any]) -> AuthMessage:
    token = data.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise ProtocolError(INVALID, "auth needs a 'token' string")
    if data.get("name") is None:
        return AuthMessage(token)
    try:
        return AuthMessage(token, display_name(data["name"], "auth.name"))
    except InvalidName as exc:
        raise ProtocolError(BAD_NAME, str(exc)) from None


def _chat(data: dict[str, Any]) -> ChatMessage:
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError(INVALID, "chat needs a non-empty 'text' string")
    if len(text) > MAX_CHAT_LENGTH:
        raise ProtocolError(INVALID, f"chat text must be at most {MAX_CHAT_LENGTH} characters")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise ProtocolError(INVALID, "chat text must not contain control characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ProtocolError(INVALID, "chat text is not valid Unicode") from None
    return ChatMessage(text)


def _stats(data: dict[str, Any]) -> StatsMessage:
    given = data.get("stats")
    if not isinstance(given, dict):
        raise ProtocolError(INVALID, "stats needs a 'stats' object")
    stats: dict[str, float | str] = {}
    for key, limit in STAT_LIMITS.items():
        value = given.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(INVALID, f"stats.{key} must be a number")
        if not 0 <= value <= limit:  # also false for NaN and infinities (1e999 parses as inf)
            raise ProtocolError(INVALID, f"stats.{key} must be between 0 and {limit:g}")
        stats[key] = value
    direction = given.get("direction")
    if direction not in STAT_DIRECTIONS:
        raise ProtocolError(INVALID, "stats.direction must be 'send' or 'recv'")
    stats["direction"] = direction
    feed = given.get("feed")
    if feed is not None:
        if feed not in tuple(FeedName):
            raise ProtocolError(INVALID, "stats.feed must be 'endoscope' or 'talkback'")
        stats["feed"] = str(feed)
    return StatsMessage(stats)


def _ping(data: dict[str, Any]) -> PingMessage:
    return PingMessage()


def _annotation(data: dict[str, Any]) -> AnnotationMessage:
    op = data.get("op")
    if op not in tuple(AnnotationOp):
        raise ProtocolError(INVALID, f"annotation.op must be one of {', '.join(AnnotationOp)}")
    op = AnnotationOp(op)
    if op in (AnnotationOp.ADD, AnnotationOp.UPDATE):
        try:
            mark = Mark.from_json(data.get("annotation"))
        except AnnotationError as exc:
            raise ProtocolError(INVALID, str(exc)) from None
        return AnnotationMessage(op, mark=mark, frame_pts=_frame_pts(data.get("frame_pts"), mark))
    if op is AnnotationOp.REMOVE:
        mark_id = data.get("id")
        if not isinstance(mark_id, str) or not MARK_ID.fullmatch(mark_id):
            raise ProtocolError(INVALID, "annotation remove needs the mark's 'id'")
        return AnnotationMessage(op, id=mark_id)
    return AnnotationMessage(op)


def _frame_pts(value: Any, mark: Mark) -> int | None:
    if value is None:
        return None
    if not mark.anchored:
        raise ProtocolError(INVALID, "annotation frame_pts is only for an anchored mark")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_FRAME_PTS:
        raise ProtocolError(INVALID, "annotation frame_pts must be a video pts (an integer >= 0)")
    return value


def _pointer(data: dict[str, Any]) -> PointerMessage:
    x, y, color = data.get("x"), data.get("y"), data.get("color")
    if color is not None and not (isinstance(color, str) and COLOR.fullmatch(color)):
        raise ProtocolError(INVALID, "pointer.color must be #rrggbb")
    color = color.lower() if color else None
    if x is None and y is None:
        return PointerMessage(None, None, color)
    try:
        return PointerMessage(coordinate(x, "pointer"), coordinate(y, "pointer"), color)
    except AnnotationError as exc:
        raise ProtocolError(INVALID, str(exc)) from None


def _freeze(data: dict[str, Any]) -> FreezeMessage:
    frozen = data.get("frozen")
    if not isinstance(frozen, bool):
        raise ProtocolError(INVALID, "freeze needs a boolean 'frozen'")
    snapshot_id = data.get("snapshot_id")
    if snapshot_id is None:
        return FreezeMessage(frozen)
    if not frozen or not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ProtocolError(INVALID, "freeze.snapshot_id must be a snapshot id, with frozen: true")
    return FreezeMessage(frozen, snapshot_id)


def _stills_request(data: dict[str, Any]) -> StillsRequestMessage:
    on, next_still = data.get("on"), data.get("next", False)
    if not isinstance(on, bool):
        raise ProtocolError(INVALID, "stills-request needs a boolean 'on'")
    if not isinstance(next_still, bool) or (next_still and not on):
        raise ProtocolError(INVALID, "stills-request.next must be a boolean, true only with on")
    return StillsRequestMessage(on, next_still)


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "auth": _auth,
    "chat": _chat,
    "stats": _stats,
    "ping": _ping,
    "annotation": _annotation,
    "pointer": _pointer,
    "freeze": _freeze,
    "stills-request": _stills_request,
}
