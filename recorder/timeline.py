"""The annotation timeline of one Recording: which marks were visible when, on its own clock.

Input: the consultation's annotation log (``recorder/annotation_log.py``: add/update/remove/clear,
freeze/resume, each with the server time ``ts`` and the relay's ``media_pts``) and the recording's
manifest. Output: a ``Timeline`` of mark *tracks* (every state a mark went through, and when it
went away) and freeze spans, all in **recording seconds**: 0 is the first video frame of segment 1;
segment ``n`` plays from ``segments[n].offset_s`` (file time = recording time - offset_s).

Clock: an op whose ``media_pts`` falls inside a segment's video (``video_pts_start`` ..
``video_pts_end``) is placed exactly on the frame the relay was forwarding when it arrived:
``offset_s + (media_pts - video_pts_start) / 90000`` — what the participants saw it on (the
relay clock starts again at 0 after a server restart: of two segments holding the pts, the one
the wall clock agrees with). Otherwise
(no video yet, a gap between segments, a recording still open whose manifest does not know its
pts yet) the server wall clock places it: ``ts - started_at``. Times of one mark never go back.

A mark is visible from its ``add`` until its ``remove``, a ``clear``, an ``archive`` (a new stream
session took it off the picture) or ``fade_s`` after its last update (what ``AnnotationBoard`` does
live); a ``restore`` brings archived marks back as new tracks. Marks still visible when the
recording starts are included (their first times are negative). Pen strokes stream as ``update``s
that each carry every point so far; to keep the answer small, each track stores a few full *shapes*
and its versions as ``[t, shape index, point count]`` (a version draws the first ``point count``
points of its shape).

Anchored marks: each ``placements`` entry (where the tracker put every anchored mark on the frame
of its ``media_pts``) is kept at its recording time (``Timeline.placements``), so the replay moves
the marks as they moved live; placed by its own pts, outside the log-order rule above (the frame
analysed is a little older than the one forwarded when the entry was written).

Chat messages in the log are listed at their recording time (``Timeline.chat``), those sent during
the recording (a second of slack at each end).

Pure functions, no I/O: the replay API (JSON for the page) and the annotated export (drawing with
``relay/overlay.py``) both use it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from persistence.times import parse_utc_iso
from relay.annotations import Annotation, AnnotationError, Mark, MarkKey
from relay.tracker import Placement

from .log_entry import LogEntry, LogOp
from .manifest import Manifest, OutOfBodySpan

PTS_RATE = 90_000
PTS_SLACK_S = 1.0
"An op's media_pts may lie this far past a segment's last frame and still belong to it."
CHAT_SLACK_S = 1.0
"A chat message this close to the recording's start or end is listed with it."
FADE_OUT_S = 1.0
"Pages fade a fading mark out over its last second (at most half its fade time)."

MAX_AUTHOR_NAME = 64
"Names are checked where they enter (signaling/auth/names.py); a longer one in a log is damage."
_SHAPE_KEYS = ("tool", "color", "width", "text", "fade_s", "size")


@dataclass
class MarkTrack:
    """One mark (author + id) from its add to its end."""

    author: str
    id: str
    author_name: str = ""
    "Who drew it, as named at the time (older logs have none)."
    shapes: list[dict[str, Any]] = field(default_factory=list)
    versions: list[tuple[float, int, int]] = field(default_factory=list)
    "(recording time, shape index, point count), in time order."
    end_t: float | None = None
    end: str | None = None
    """Why it went away: ``remove`` (or undo), ``clear``, ``archive``, ``fade``; None = still
    visible at the end."""
    _raw: list[tuple[float, dict[str, Any]]] = field(default_factory=list, repr=False)
    _marks: dict[tuple[int, int], Annotation] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return f"{self.author}/{self.id}"

    @property
    def start_t(self) -> float:
        return self.versions[0][0] if self.versions else self._raw[0][0]

    @property
    def fade_s(self) -> float | None:
        return self.shapes[-1].get("fade_s") if self.shapes else None

    def visible_at(self, t: float) -> bool:
        return self.start_t <= t and (self.end_t is None or t < self.end_t)

    def version_at(self, t: float) -> tuple[float, int, int] | None:
        """The state shown at ``t`` (None before the add or after the end)."""
        if not self.visible_at(t):
            return None
        i = bisect.bisect_right([v[0] for v in self.versions], t) - 1
        return self.versions[max(i, 0)]

    def alpha_at(self, t: float) -> float:
        """Opacity a page gives the mark at ``t``: 1, fading to 0 in its last second if it fades."""
        if self.end != "fade" or self.end_t is None or not self.visible_at(t):
            return 1.0 if self.visible_at(t) else 0.0
        span = min(FADE_OUT_S, (self.fade_s or 2 * FADE_OUT_S) / 2)
        return max(0.0, min(1.0, (self.end_t - t) / span))

    def annotation_at(self, t: float) -> Annotation | None:
        """The mark as it looked at ``t``, as a relay ``Annotation`` for ``relay/overlay.py``."""
        version = self.version_at(t)
        if version is None:
            return None
        _, shape, count = version
        cached = self._marks.get((shape, count))
        if cached is None:
            data = dict(self.shapes[shape])
            data["points"] = data["points"][:count]
            cached = Annotation(Mark.from_json(data), self.author, 0.0, 0.0, None)
            self._marks[(shape, count)] = cached
        return cached

    def to_json(self) -> dict[str, Any]:
        last = self.shapes[-1] if self.shapes else {}
        return {
            "key": self.key,
            "id": self.id,
            "author": self.author,
            "author_name": self.author_name,
            "tool": last.get("tool"),
            "color": last.get("color"),
            "start_t": _round(self.start_t),
            "end_t": _round(self.end_t),
            "end": self.end,
            "fade_s": self.fade_s,
            "shapes": self.shapes,
            "versions": [[_round(t), shape, count] for t, shape, count in self.versions],
        }

    def _compact(self) -> None:
        """Raw (t, annotation) versions → shapes + [t, shape, count] (see the module doc)."""
        shapes: list[dict[str, Any]] = []
        versions: list[tuple[float, int, int]] = []
        for t, data in reversed(self._raw):
            points = data["points"]
            current = shapes[-1] if shapes else None
            if (
                current is None
                or any(current.get(k) != data.get(k) for k in _SHAPE_KEYS)
                or current["points"][: len(points)] != points
            ):
                shapes.append(data)
            versions.append((t, len(shapes) - 1, len(points)))
        count = len(shapes)
        self.shapes = list(reversed(shapes))
        self.versions = [(t, count - 1 - shape, n) for t, shape, n in reversed(versions)]
        self._raw = []


@dataclass
class FreezeSpan:
    """The surgeon froze everyone's picture (on a stored snapshot, if ``snapshot_id``)."""

    start_t: float
    by: str | None
    snapshot_id: str | None
    end_t: float | None = None

    def covers(self, t: float) -> bool:
        return self.start_t <= t and (self.end_t is None or t < self.end_t)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_t": _round(self.start_t),
            "end_t": _round(self.end_t),
            "by": self.by,
            "snapshot_id": self.snapshot_id,
        }


@dataclass(frozen=True)
class ChatLine:
    """One chat message at its recording time (the page lists them; a click seeks there)."""

    t: float
    by: str | None
    name: str | None
    role: str | None
    text: str
    ts: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _round(self.t),
            "from": self.by,
            "name": self.name,
            "role": self.role,
            "text": self.text,
            "ts": self.ts,
        }


@dataclass(frozen=True)
class Placed:
    """Where the anchored marks were at recording time ``t`` (``relay.tracker.Placement`` as
    JSON: ``{author, id, m, confidence, lost}``); none: no mark anchored from then on."""

    t: float
    marks: list[dict[str, Any]]

    def to_json(self) -> list[Any]:
        return [_round(self.t), self.marks]

    @cached_property
    def placements(self) -> dict[MarkKey, Placement]:
        """As the tracker gave them (the annotated export draws through them, like the live
        burn-in); the marks are well-formed (``_placements``)."""
        return {
            (p["author"], p["id"]): Placement(tuple(p["m"]), p["confidence"], p["lost"])
            for p in self.marks
        }


@dataclass
class Timeline:
    marks: list[MarkTrack]
    freezes: list[FreezeSpan]
    chat: list[ChatLine] = field(default_factory=list)
    out_of_body: list[OutOfBodySpan] = field(default_factory=list)
    "Spans filmed outside the body (the manifest's): replay blurs them, exports too by default."
    placements: list[Placed] = field(default_factory=list)
    "In time order."

    def visible(self, t: float, authors: set[str] | None = None) -> list[Annotation]:
        """Marks to draw at recording time ``t``, oldest first (the burn-in's rule: a faded mark
        is gone at once)."""
        shown = []
        for track in self.marks:
            if authors is not None and track.author not in authors:
                continue
            annotation = track.annotation_at(t)
            if annotation is not None:
                shown.append(annotation)
        return shown

    def placed_at(self, t: float) -> Mapping[MarkKey, Placement]:
        """Where the anchored marks were on the picture of recording time ``t``: the newest
        placements not newer (the oldest for an earlier picture, as live and on the pages)."""
        if not self.placements:
            return {}
        i = bisect.bisect_right(self.placements, t, key=lambda p: p.t) - 1
        return self.placements[max(i, 0)].placements

    def freeze_at(self, t: float) -> FreezeSpan | None:
        for span in self.freezes:
            if span.covers(t):
                return span
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "marks": [m.to_json() for m in self.marks],
            "freezes": [f.to_json() for f in self.freezes],
            "chat": [c.to_json() for c in self.chat],
            "out_of_body": [span.to_json() for span in self.out_of_body],
            "placements": [p.to_json() for p in self.placements],
        }


class RecordingClock:
    """Server time / relay pts → recording seconds (see the module doc)."""

    def __init__(self, manifest: Manifest) -> None:
        self.started = parse_utc_iso(manifest.started_at)
        self._segments = [
            (s.offset_s, s.video_pts_start, s.video_pts_end)
            for s in manifest.segments
            if s.video_pts_start is not None and s.video_pts_end is not None
        ]
        ends = [s.offset_s + s.duration_s for s in manifest.segments]
        self.span_s = max(ends, default=0.0)
        "Recording time of the last frame (0 while nothing is closed yet)."

    def wall(self, iso: str) -> float | None:
        try:
            return parse_utc_iso(iso) - self.started
        except (TypeError, ValueError):
            return None

    def of_entry(self, entry: LogEntry) -> float | None:
        wall = self.wall(entry.ts) if entry.ts is not None else None
        pts = entry.media_pts
        if pts is None:
            return wall
        places = [
            offset + (pts - first) / PTS_RATE
            for offset, first, last in self._segments
            if first <= pts <= last + PTS_SLACK_S * PTS_RATE
        ]
        if not places:
            return wall
        # A server restart starts the relay clock again at 0, so segments on both sides of it
        # may hold the same pts: the wall clock says which one the op was made on.
        t = places[0] if wall is None else min(places, key=lambda place: abs(place - wall))
        # No video was flowing (the relay's clock stands still at the last frame): during a gap
        # the op stays at the end of the segment before it, after the recording's end it is
        # placed by the wall clock (and so falls outside).
        if wall is not None and wall > self.span_s + PTS_SLACK_S and wall - t > 2.0:
            return wall
        return t


def build_timeline(
    entries: Iterable[LogEntry], manifest: Manifest, open_ended: bool | None = None
) -> Timeline:
    """The timeline of ``manifest``'s recording from its consultation's annotation log entries
    (in log order). Only marks and freezes that overlap the recording are kept; ``open_ended``
    (default: the recording is still running) keeps everything after its start."""
    clock = RecordingClock(manifest)
    if open_ended is None:
        open_ended = str(manifest.status) == "recording"
    live: dict[tuple[str, str], MarkTrack] = {}
    tracks: list[MarkTrack] = []
    freezes: list[FreezeSpan] = []
    chat: list[ChatLine] = []
    placements: list[Placed] = []
    frozen: FreezeSpan | None = None
    last_t = -math.inf

    def close(track: MarkTrack, t: float, why: str) -> None:
        fade_end = _fade_end(track)
        if fade_end is not None and fade_end <= t:
            track.end_t, track.end = fade_end, "fade"
        else:
            track.end_t, track.end = t, why
        live.pop((track.author, track.id), None)

    for entry in entries:
        t = clock.of_entry(entry)
        if t is None:
            continue
        if entry.kind is LogOp.PLACEMENTS:
            placements.append(Placed(t, _placements(entry.payload.get("marks"))))
            continue
        t = max(t, last_t)  # the log is in arrival order: never let a clock switch reorder it
        last_t = t
        op, by = entry.kind, entry.by
        for track in list(live.values()):
            fade_end = _fade_end(track)
            if fade_end is not None and fade_end <= t:
                close(track, fade_end, "fade")
        if op in (LogOp.ADD, LogOp.UPDATE, LogOp.RESTORE):
            restored = entry.payload.get("annotations")
            changed = restored if op is LogOp.RESTORE and isinstance(restored, list) else []
            for data in map(_annotation, changed or [entry.payload.get("annotation")]):
                if data is None:
                    continue
                key = (data["author"], data["id"])
                current = live.get(key)
                if current is not None and op is not LogOp.UPDATE:
                    close(current, t, "remove")  # same id again after a loss: a new mark
                    current = None
                if current is None:
                    current = MarkTrack(data["author"], data["id"], data["author_name"])
                    live[key] = current
                    tracks.append(current)
                current._raw.append((t, data))
        elif op is LogOp.REMOVE and by is not None and isinstance(entry.payload.get("id"), str):
            removed = live.get((by, entry.payload["id"]))
            if removed is not None:
                close(removed, t, "remove")
        elif op in (LogOp.CLEAR, LogOp.ARCHIVE):
            for track in list(live.values()):
                close(track, t, str(op))
        elif op is LogOp.FREEZE:
            if frozen is not None:
                frozen.end_t = t
            snapshot = entry.payload.get("snapshot_id")
            frozen = FreezeSpan(t, by, snapshot if isinstance(snapshot, str) else None)
            freezes.append(frozen)
        elif op is LogOp.RESUME and frozen is not None:
            frozen.end_t, frozen = t, None
        elif op is LogOp.CHAT and isinstance(entry.payload.get("text"), str):
            chat.append(_chat_line(t, entry))

    for track in list(live.values()):
        end = _fade_end(track)
        if end is not None:
            track.end_t, track.end = end, "fade"
    upper = math.inf if open_ended else clock.span_s

    def overlaps(start: float, end: float | None) -> bool:
        return start <= upper and (end is None or end > 0)

    kept = [t for t in tracks if overlaps(t.start_t, t.end_t)]
    for track in kept:
        track._compact()
    return Timeline(
        kept,
        [f for f in freezes if overlaps(f.start_t, f.end_t)],
        [c for c in chat if -CHAT_SLACK_S <= c.t <= upper + CHAT_SLACK_S],
        out_of_body=list(manifest.out_of_body),
        placements=sorted((p for p in placements if p.t <= upper), key=lambda p: p.t),
    )


def _chat_line(t: float, entry: LogEntry) -> ChatLine:
    name, role = entry.payload.get("name"), entry.payload.get("role")
    return ChatLine(
        t,
        entry.by,
        name if isinstance(name, str) else None,
        role if isinstance(role, str) else None,
        entry.payload["text"],
        entry.ts,
    )


def _fade_end(track: MarkTrack) -> float | None:
    t, data = track._raw[-1] if track._raw else (None, None)
    if t is None or data is None or data.get("fade_s") is None:
        return None
    return t + float(data["fade_s"])


def _annotation(data: Any) -> dict[str, Any] | None:
    """A logged annotation, checked like a client's mark (the log is ours, but a damaged or
    hand-edited line must not break a replay): the mark's JSON plus its author and the author's
    name (empty when missing or not a name)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("author"), str):
        return None
    try:
        mark = Mark.from_json(data)
    except AnnotationError:
        return None
    name = data.get("author_name")
    if not isinstance(name, str) or len(name) > MAX_AUTHOR_NAME:
        name = ""
    return {**mark.to_json(), "author": data["author"], "author_name": name}


def _placements(data: Any) -> list[dict[str, Any]]:
    """The well-formed marks of a logged ``placements`` entry (a damaged one costs only itself)."""
    kept = []
    for p in data if isinstance(data, list) else []:
        m = p.get("m") if isinstance(p, Mapping) else None
        author, mark_id = (p.get("author"), p.get("id")) if m is not None else (None, None)
        if not (isinstance(author, str) and isinstance(mark_id, str) and isinstance(m, list)):
            continue
        if len(m) == 6 and all(map(_finite, m)):
            c = p.get("confidence")
            kept.append(
                {
                    "author": author,
                    "id": mark_id,
                    "m": [round(float(v), 5) for v in m],
                    "confidence": round(float(c), 3) if _finite(c) else 0.0,
                    "lost": p.get("lost") is True,
                }
            )
    return kept


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
