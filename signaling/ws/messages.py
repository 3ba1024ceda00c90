"""Server → client messages of WebSocket protocol v1, as typed values.

Every place that tells participants something builds one of these instead of a dict literal, so a
message's fields are written down once; ``to_json()`` gives exactly the object documented in
docs/architecture.md (the hub stamps ``v``). Foreign JSON (a participant, a consent, an annotation,
a snapshot) is carried as the dict its owner made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from recorder.recordings import RecordingEvent, RecordingState
from recorder.snapshots import SNAPSHOT, SUFFIXES
from relay import ConsultationId, FeedEvent, FeedName, FeedState, OfflineReason
from signaling.auth.grants import Grant, Role

if TYPE_CHECKING:
    from relay.anchoring import Placements
    from relay.media_clock import MediaClock
    from relay.picture_quality import Verdict
    from relay.selector import QualityChange

JsonObject = dict[str, Any]

_WIRE_NAMES: Mapping[str, str] = {"sender": "from"}
"Field names that are Python keywords on the wire."


class Payload:
    """A dataclass whose fields become one JSON object; nested messages keep their ``type``,
    nested payloads are embedded as their fields."""

    def body(self) -> JsonObject:
        return {_WIRE_NAMES.get(name, name): _wire(value) for name, value in vars(self).items()}


class ServerMessage(Payload):
    TYPE: ClassVar[str]

    def to_json(self) -> JsonObject:
        return {"type": self.TYPE, **self.body()}


def snapshot_url(cid: ConsultationId, snapshot_id: str, kind: str = SNAPSHOT) -> str:
    """Where pages fetch a stored snapshot or still (``signaling/http/snapshots.py`` serves it)."""
    return f"/api/consultations/{cid}/snapshots/{snapshot_id}{SUFFIXES[kind]}"


def _wire(value: object) -> object:
    if isinstance(value, list):
        return [_wire(item) for item in value]
    if isinstance(value, ServerMessage):
        return value.to_json()
    if isinstance(value, Payload):
        return value.body()
    if isinstance(value, StrEnum):
        return str(value)
    return value


@dataclass(frozen=True)
class You(Payload):
    """The joiner as its token describes it, with the name it joined under."""

    identity: str
    name: str
    role: Role
    may_publish: bool
    may_annotate: bool

    @classmethod
    def of(cls, grant: Grant, name: str) -> You:
        return cls(grant.identity, name, grant.role, grant.may_publish, grant.may_annotate)


@dataclass(frozen=True)
class FreezeState(Payload):
    frozen: bool
    snapshot: JsonObject | None
    "``{id, url}`` of the stored still, if the surgeon named one."
    by: str | None


@dataclass(frozen=True)
class RecordingUpdate(ServerMessage):
    TYPE = "recording"
    state: RecordingState
    recording_id: str | None
    reason: str | None
    segment: int | None

    @classmethod
    def of(cls, event: RecordingEvent) -> RecordingUpdate:
        return cls(event.state, event.recording_id, event.reason, event.segment)


@dataclass(frozen=True)
class StillsUpdate(ServerMessage):
    """Stills mode (docs/architecture.md, Stills mode): whether the clinic sends stills instead
    of video, why (``link``: its connection is too slow; ``requested``: the surgeon asked), who
    began it, the newest ``still`` (``{id, url}``) and ``asked``, bumped each time the surgeon
    asks for the next still."""

    TYPE = "stills"
    active: bool
    reason: str | None = None
    by: str | None = None
    still: JsonObject | None = None
    asked: int = 0


@dataclass(frozen=True)
class Welcome(ServerMessage):
    TYPE = "welcome"
    you: You
    participants: list[JsonObject]
    feeds: dict[str, JsonObject]
    consent: JsonObject | None
    annotations: list[JsonObject]
    freeze: FreezeState
    recording: RecordingUpdate
    archived: int = 0
    "Marks of the previous stream session that ``restore`` can put back."
    stills: StillsUpdate = StillsUpdate(False)
    out_of_body: bool = False
    "The privacy guard sees the camera outside the body (``privacy`` messages follow changes)."
    picture: PictureUpdate | None = None
    "The picture-quality verdict while the endoscope is live (``picture`` messages follow)."


@dataclass(frozen=True)
class Presence(ServerMessage):
    TYPE = "presence"
    participants: list[JsonObject]


@dataclass(frozen=True)
class FeedUpdate(ServerMessage):
    TYPE = "feed"
    feed: FeedName
    state: FeedState
    identity: str | None
    reason: OfflineReason | None
    "Why it is offline: ``ended`` (the publisher stopped) or ``lost`` (it may come back)."

    @classmethod
    def of(cls, event: FeedEvent) -> FeedUpdate:
        return cls(event.feed, event.state, event.identity, event.reason)


@dataclass(frozen=True)
class QualityUpdate(ServerMessage):
    """What one WHEP session's video now is: sent to its viewer's connections only."""

    TYPE = "quality"
    session: str
    quality: str
    "``original``, ``540p`` or ``360p``."
    automatic: bool
    reason: str
    "``connection`` (moved by its link), ``recovered`` (back on the original) or ``pinned``."

    @classmethod
    def of(cls, change: QualityChange) -> QualityUpdate:
        return cls(change.session_id, change.quality, change.automatic, change.reason)


@dataclass(frozen=True)
class PrivacyUpdate(ServerMessage):
    """The camera left the body (the room, faces are being filmed) or came back: pages say so in
    plain words; the recording marks the span (``relay/privacy.py``)."""

    TYPE = "privacy"
    out_of_body: bool


@dataclass(frozen=True)
class MediaClockUpdate(ServerMessage):
    """How one WHEP session's RTP timestamps relate to the relay pts that ``placements`` carry:
    RTP timestamp = (pts + ``rtp_offset``) mod 2^32. Sent to its viewer's connections when known
    and again when it changes (a quality swap)."""

    TYPE = "media-clock"
    session: str
    rtp_offset: int

    @classmethod
    def of(cls, clock: MediaClock) -> MediaClockUpdate:
        return cls(clock.session_id, clock.rtp_offset)


@dataclass(frozen=True)
class PictureUpdate(ServerMessage):
    """The live endoscope's picture quality (``relay/picture_quality.py``), sent when it changes
    (at most once a second): the clinic shows a hint, the surgeon and observers a badge."""

    TYPE = "picture"
    level: str
    "``good``, ``fair`` or ``poor``."
    hints: list[str]
    "What is wrong: ``blurred``, ``too-bright``, ``too-dark``, ``colour-cast``."
    focus: float
    "0..1: sharpness against the feed's recent best."

    @classmethod
    def of(cls, verdict: Verdict) -> PictureUpdate:
        return cls(str(verdict.level), [str(hint) for hint in verdict.hints], verdict.focus)


@dataclass(frozen=True)
class ConsentUpdate(ServerMessage):
    TYPE = "consent"
    consent: JsonObject


@dataclass(frozen=True)
class Chat(ServerMessage):
    TYPE = "chat"
    sender: str
    name: str
    role: Role
    text: str
    ts: str


@dataclass(frozen=True)
class ChatHistoryMessage(ServerMessage):
    """The consultation's newest chat messages, oldest first: sent right after ``welcome``."""

    TYPE = "chat_history"
    messages: list[Chat]


@dataclass(frozen=True)
class Stats(ServerMessage):
    """One device's media numbers: ``device`` keeps a person's laptop and tablet apart."""

    TYPE = "stats"
    sender: str
    device: str
    role: Role
    stats: dict[str, float | str]


@dataclass(frozen=True)
class ErrorReply(ServerMessage):
    TYPE = "error"
    code: str
    reason: str


@dataclass(frozen=True)
class Pong(ServerMessage):
    TYPE = "pong"


@dataclass(frozen=True)
class Restarting(ServerMessage):
    """The server is stopping (SIGTERM): sent just before every socket closes with 1001, so the
    pages say "the server is restarting" instead of "connection lost"."""

    TYPE = "restarting"


@dataclass(frozen=True)
class AnnotationUpdate(ServerMessage):
    """An accepted op: ``add``/``update`` carry the ``annotation``, ``remove`` the ``id``,
    ``clear`` neither (absent, not null); ``archive`` (a new stream session, ``by`` null) the
    ``count`` of marks archived, ``restore`` the restored ``annotations``."""

    TYPE = "annotation"
    op: str
    by: str | None
    annotation: JsonObject | None = None
    id: str | None = None
    annotations: list[JsonObject] | None = None
    count: int | None = None

    def body(self) -> JsonObject:
        change: JsonObject = {}
        for name in ("annotation", "id", "annotations", "count"):
            if getattr(self, name) is not None:
                change[name] = getattr(self, name)
        return {"op": self.op, **change, "by": self.by}


@dataclass(frozen=True)
class PlacementsUpdate(ServerMessage):
    """Where the anchored marks are on the analysed endoscope frame of ``pts`` (90 kHz relay
    clock), captured at ``capture_ms`` on the clinic's clock (null: not known yet): each mark's
    ``{author, id, m, confidence, lost}``, ``m`` the normalised 2×3 affine from the mark as drawn.
    To every connection of the consultation, ≥ 15 Hz while anchored marks exist; ``marks`` empty
    once when the last one goes."""

    TYPE = "placements"
    pts: int
    capture_ms: float | None
    marks: list[JsonObject]

    @classmethod
    def of(cls, placements: Placements) -> PlacementsUpdate:
        return cls(placements.pts, placements.capture_ms, placements.marks_json())


@dataclass(frozen=True)
class PointerMove(ServerMessage):
    TYPE = "pointer"
    sender: str
    x: float | None
    y: float | None
    color: str | None = None


@dataclass(frozen=True)
class FreezeUpdate(FreezeState, ServerMessage):
    """The freeze state with ``by`` = who froze or resumed (in ``welcome``: who froze), and why
    the server released it: ``left`` (the surgeon who froze left), ``new-stream`` (a new stream
    session), null (the surgeon resumed)."""

    TYPE = "freeze"
    reason: str | None = None


@dataclass(frozen=True)
class SnapshotAdded(ServerMessage):
    TYPE = "snapshot"
    snapshot: JsonObject
