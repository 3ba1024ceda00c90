"""Annotations (telestration): the marks a surgeon or the clinic draws on the endoscope picture.

A ``Mark`` is what the author's page sent, validated strictly (every field, every point): it is
untrusted input that ends up in every participant's page, in the burned-in frames and in the
persisted timeline. An ``Annotation`` is a Mark as the server accepted it: who drew it, when (the
server clock) and on which frame (``media_pts``). The ``AnnotationBoard`` holds the current marks
of one consultation and the freeze-frame state; the event loop mutates it, the burn-in worker
thread reads ``visible()`` — mutations publish a new immutable tuple, so a reader never sees a
half-applied change and never needs a lock.

Validation errors (``AnnotationError``) never quote the client's values: they are safe to log and
to send back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from persistence.times import utc_iso

if TYPE_CHECKING:
    from .tracker import Placement

MARK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
MIN_WIDTH = 0.001
MAX_WIDTH = 0.05
"Line width as a fraction of the frame height."
MAX_POINTS = 2000
MAX_TEXT_LENGTH = 200
MIN_TEXT_SIZE = 0.01
MAX_TEXT_SIZE = 0.2
"Text cap height as a fraction of the frame height."
TEXT_HEIGHT_WIDTHS = 6.0
"Cap height of a label without a ``size`` (marks from before it existed): 6 line widths."
MIN_FADE_S = 0.5
MAX_FADE_S = 600.0
MAX_MARKS = 500
"Marks on one board; past this, adds are refused until marks are undone, cleared or faded."
MAX_ANCHORED = 20
"""Marks following the tissue at once: each costs the decode thread its own tracking (and a
search of the picture while it is lost)."""
MAX_BOARD_POINTS = 50_000
"Points over all marks of a board: bounds memory, drawing time and the size of ``welcome``."

PLACED_KEPT = 90
"Placements of the last analysed frames the board keeps for the burn-in (3 s at 30 Hz)."
MAX_FRAME_PTS = 1 << 62
"A page's ``frame_pts``: a relay pts (90 kHz, continuous), never negative."

Point = tuple[float, float]
MarkKey = tuple[str, str]
"(author identity, mark id): mark ids are per author."


class AnnotationError(ValueError):
    """A mark or an operation on the board was refused; the message is safe to show and log."""


class Tool(StrEnum):
    PEN = "pen"
    ARROW = "arrow"
    CIRCLE = "circle"
    RECT = "rect"
    TEXT = "text"

    @property
    def point_counts(self) -> tuple[int, int]:
        """(fewest, most) points: pen polyline, arrow tail→head, box corners, text anchor."""
        if self is Tool.PEN:
            return 1, MAX_POINTS
        if self is Tool.TEXT:
            return 1, 1
        return 2, 2

    @property
    def anchorable(self) -> bool:
        """Can be drawn "on the tissue" (tracked): every tool but text labels."""
        return self is not Tool.TEXT


@dataclass(frozen=True)
class Mark:
    """The drawing itself, in normalised frame coordinates (0..1 of the video frame)."""

    id: str
    tool: Tool
    color: str
    "``#rrggbb``, lower case."
    width: float
    points: tuple[Point, ...]
    text: str | None = None
    fade_s: float | None = None
    "Seconds after its last update until the mark disappears; None = until cleared."
    size: float | None = None
    "Text only: cap height as a fraction of the frame height; None = 6 line widths."
    anchored: bool = False
    "Drawn on the tissue: the server tracks it and sends where it is (``relay.anchoring``)."

    @property
    def cap_height(self) -> float:
        """A label's cap height (fraction of the frame height): its own size, or older logs'
        6 line widths, so every log replays as it was drawn."""
        return self.size if self.size is not None else TEXT_HEIGHT_WIDTHS * self.width

    @classmethod
    def from_json(cls, data: Any) -> Mark:
        """Validate untrusted JSON; raises only ``AnnotationError``. Unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise AnnotationError("annotation must be an object")
        mark_id = data.get("id")
        if not isinstance(mark_id, str) or not MARK_ID.fullmatch(mark_id):
            raise AnnotationError("annotation.id must be 1-64 characters of A-Z a-z 0-9 _ -")
        tool_name = data.get("tool")
        if tool_name not in tuple(Tool):
            raise AnnotationError(f"annotation.tool must be one of {', '.join(Tool)}")
        tool = Tool(str(tool_name))
        color = data.get("color")
        if not isinstance(color, str) or not COLOR.fullmatch(color):
            raise AnnotationError("annotation.color must be #rrggbb")
        width = _number(data.get("width"), MIN_WIDTH, MAX_WIDTH, "annotation.width")
        fade_s = data.get("fade_s")
        if fade_s is not None:
            fade_s = _number(fade_s, MIN_FADE_S, MAX_FADE_S, "annotation.fade_s")
        size = data.get("size")
        if size is not None:
            if tool is not Tool.TEXT:
                raise AnnotationError("annotation.size is for the text tool only")
            size = _number(size, MIN_TEXT_SIZE, MAX_TEXT_SIZE, "annotation.size")
        anchored = data.get("anchored", False)
        if not isinstance(anchored, bool):
            raise AnnotationError("annotation.anchored must be true or false")
        if anchored and not tool.anchorable:
            raise AnnotationError("annotation.anchored is for pen, arrow, circle and rect marks")
        return cls(
            id=mark_id,
            tool=tool,
            color=color.lower(),
            width=width,
            points=_points(data.get("points"), tool),
            text=_text(data.get("text"), tool),
            fade_s=fade_s,
            size=size,
            anchored=anchored,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "tool": str(self.tool),
            "color": self.color,
            "width": self.width,
            "points": [list(p) for p in self.points],
            "fade_s": self.fade_s,
        }
        if self.text is not None:
            data["text"] = self.text
        if self.size is not None:
            data["size"] = self.size
        if self.anchored:
            data["anchored"] = True
        return data


@dataclass(frozen=True)
class Annotation:
    """A Mark as accepted by the server. Times are Unix seconds (server clock); ``media_pts`` is
    the endoscope frame (90 kHz relay clock) being forwarded when the mark first arrived."""

    mark: Mark
    author: str
    created_at: float
    updated_at: float
    media_pts: int | None
    author_name: str = ""
    "The author's display name when the mark was made (pages show it beside the mark)."
    frame_pts: int | None = None
    """Anchored marks: the frame (relay pts) its author was looking at when drawing this version
    (its ``add``: as drawing began; an ``update``: as the new points were drawn), where the
    tracker anchors it (None: not known)."""

    @classmethod
    def from_json(cls, data: Any, author: str, now: float, media_pts: int | None) -> Annotation:
        """A new Annotation from untrusted JSON; raises only ``AnnotationError``."""
        return cls(Mark.from_json(data), author, now, now, media_pts)

    @property
    def key(self) -> MarkKey:
        """Ids are chosen by pages and unique per author only."""
        return self.author, self.mark.id

    def visible_at(self, now: float) -> bool:
        fade_s = self.mark.fade_s
        return fade_s is None or now < self.updated_at + fade_s

    def to_json(self) -> dict[str, Any]:
        return {
            **self.mark.to_json(),
            "author": self.author,
            "author_name": self.author_name,
            "created_at": utc_iso(self.created_at),
            "updated_at": utc_iso(self.updated_at),
            "media_pts": self.media_pts,
        }


@dataclass(frozen=True)
class Freeze:
    """The surgeon paused everyone on one frame (optionally a stored snapshot of it), or stills
    mode shows the clinic's newest still."""

    by: str
    since: float
    snapshot_id: str | None
    still: bool = False
    "The snapshot is a still (a JPEG from the clinic's camera), not a PNG of the picture."


class AnnotationBoard:
    """Current marks of one consultation and its freeze state. Updates and removes reach only
    the sender's own marks (ids are per author); ``clear`` removes everyone's (the caller checks
    who may clear)."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], Annotation] = {}
        self._snapshot: tuple[Annotation, ...] = ()
        self.freeze: Freeze | None = None
        self.archived: tuple[Annotation, ...] = ()
        "The marks of the previous stream session, until restored (``archive``/``restore``)."
        self.version = 0
        "Bumped on every change, so a renderer can tell its cached picture is stale."
        self.on_change: list[Callable[[], None]] = []
        "Told (on the event loop) after every change of the marks: the tracking follows them."
        self._placed: tuple[tuple[int, Mapping[MarkKey, Placement]], ...] = ()
        "(pts, placements) of the latest analysed frames, oldest first; replaced, never mutated."

    def add(self, annotation: Annotation) -> Annotation:
        self._prune(annotation.updated_at)
        if annotation.key in self._marks:
            raise AnnotationError("you already have a mark with this id")
        if len(self._marks) >= MAX_MARKS:
            raise AnnotationError(f"the board holds at most {MAX_MARKS} marks: undo or clear")
        if annotation.mark.anchored and sum(a.mark.anchored for a in self._marks.values()) >= (
            MAX_ANCHORED
        ):
            raise AnnotationError(
                f"at most {MAX_ANCHORED} marks follow the tissue at once: undo or clear some"
            )
        self._ensure_room(len(annotation.mark.points))
        self._marks[annotation.key] = annotation
        self._publish()
        return annotation

    def update(
        self, mark: Mark, author: str, now: float, frame_pts: int | None = None
    ) -> Annotation:
        """Replace the author's mark (a pen stroke growing while drawn); it keeps its creation
        time and media_pts. ``frame_pts``: the frame its author saw as this version was drawn
        (an anchored mark is anchored again there; None: not known)."""
        self._prune(now)
        old = self._own(author, mark.id)
        self._ensure_room(len(mark.points) - len(old.mark.points))
        new = replace(old, mark=mark, updated_at=now, frame_pts=frame_pts)
        self._marks[new.key] = new
        self._publish()
        return new

    def remove(self, mark_id: str, author: str) -> Annotation:
        removed = self._marks.pop(self._own(author, mark_id).key)
        self._publish()
        return removed

    def undo(self, author: str, now: float) -> Annotation | None:
        """Remove the author's newest visible mark; None if there is none."""
        self._prune(now)
        own = [a for a in self._marks.values() if a.author == author]  # insertion = age order
        return self.remove(own[-1].mark.id, author) if own else None

    def clear(self) -> int:
        count = len(self._marks)
        self._marks.clear()
        self._publish()
        return count

    def archive(self, now: float) -> tuple[Annotation, ...]:
        """A new stream session began: the marks leave the picture but can be restored. A
        session that ends with no marks keeps the archive of the one before it."""
        self._prune(now)
        archived = tuple(self._marks.values())
        if archived:
            self.archived = archived
            self._marks.clear()
            self._publish()
        return archived

    def restore(self, now: float) -> tuple[Annotation, ...]:
        """Put the archived marks back (a fading one starts its fade again); those whose id
        their author has used since, or past the board's limits, stay out."""
        self._prune(now)
        restored = []
        for old in self.archived:
            mark = replace(old, updated_at=now)  # its author's name and times stay
            if mark.key in self._marks or len(self._marks) >= MAX_MARKS:
                continue
            try:
                self._ensure_room(len(mark.mark.points))
            except AnnotationError:
                continue
            self._marks[mark.key] = mark
            restored.append(mark)
        self.archived = ()
        self._publish()
        return tuple(restored)

    def visible(self, now: float) -> tuple[Annotation, ...]:
        """Marks to show at ``now``, oldest first; safe to call from any thread."""
        return tuple(a for a in self._snapshot if a.visible_at(now))

    def set_freeze(self, freeze: Freeze | None) -> None:
        self.freeze = freeze
        self.version += 1

    def _own(self, author: str, mark_id: str) -> Annotation:
        annotation = self._marks.get((author, mark_id))
        if annotation is None:
            raise AnnotationError("you have no mark with this id (faded, cleared or never added)")
        return annotation

    def _ensure_room(self, extra_points: int) -> None:
        total = sum(len(a.mark.points) for a in self._marks.values())
        if total + extra_points > MAX_BOARD_POINTS:
            raise AnnotationError(f"the board holds at most {MAX_BOARD_POINTS} points: clear some")

    def _prune(self, now: float) -> None:
        """Forget faded marks, so they count against no limit and undo skips them."""
        faded = [key for key, a in self._marks.items() if not a.visible_at(now)]
        for key in faded:
            del self._marks[key]
        if faded:
            self._publish()

    def _publish(self) -> None:
        self._snapshot = tuple(self._marks.values())
        self.version += 1
        for callback in self.on_change:
            callback()

    def anchored(self, now: float) -> tuple[Annotation, ...]:
        """The visible anchored marks; safe to call from any thread."""
        return tuple(a for a in self.visible(now) if a.mark.anchored)

    def place(self, pts: int, placements: Mapping[MarkKey, Placement]) -> None:
        """Where the tracker put the anchored marks on the analysed frame of ``pts`` (any
        thread; ``{}``: none anchored any more)."""
        kept = self._placed if placements else ()
        self._placed = (*kept[-(PLACED_KEPT - 1) :], (pts, placements))

    def placed_at(self, pts: int | None) -> Mapping[MarkKey, Placement]:
        """The placements of the newest analysed frame not newer than ``pts`` (None: the newest
        of all): the burn-in draws a frame's anchored marks where the tracker saw them then, or
        the oldest known for an older frame (as the pages do). Safe from any thread."""
        placed = self._placed
        for placed_pts, placements in reversed(placed):
            if pts is None or placed_pts <= pts:
                return placements
        return placed[0][1] if placed else {}


def coordinate(value: Any, what: str) -> float:
    """A normalised frame coordinate, 0..1 (also the pointer's)."""
    return _number(value, 0.0, 1.0, f"{what} coordinates")


def _number(value: Any, low: float, high: float, what: str) -> float:
    # bool is an int subclass, but true is no width. The range test also refuses NaN (every
    # comparison is false), the infinities, and huge ints (compared exactly, never converted).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotationError(f"{what} must be a number")
    if not low <= value <= high:
        raise AnnotationError(f"{what} must be between {low:g} and {high:g}")
    return float(value)


def _points(value: Any, tool: Tool) -> tuple[Point, ...]:
    fewest, most = tool.point_counts
    if not isinstance(value, list | tuple) or not fewest <= len(value) <= most:
        count = str(fewest) if fewest == most else f"{fewest}-{most}"
        raise AnnotationError(f"annotation.points must hold {count} [x, y] pairs for {tool}")
    points = []
    for point in value:
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise AnnotationError("annotation.points must hold [x, y] pairs")
        points.append((coordinate(point[0], "points"), coordinate(point[1], "points")))
    return tuple(points)


def _text(value: Any, tool: Tool) -> str | None:
    if tool is not Tool.TEXT:
        if value is not None:
            raise AnnotationError("annotation.text is only for the text tool")
        return None
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError("a text annotation needs a non-empty 'text' string")
    if len(value) > MAX_TEXT_LENGTH:
        raise AnnotationError(f"annotation.text must be at most {MAX_TEXT_LENGTH} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise AnnotationError("annotation.text is not valid Unicode") from None
    return value
