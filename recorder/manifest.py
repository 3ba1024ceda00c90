"""The on-disk layout of recordings and their manifest (docs/recording.md is the contract).

    <data>/recordings/<recording-id>/manifest.json
    <data>/recordings/<recording-id>/segment-001.webm        (.mp4 for H.264 consultations)
    <data>/recordings/<recording-id>/segment-001.repaired.webm   (only after a crash, see recovery)

The manifest is rewritten atomically (temp file, fsync, rename) at every segment boundary, so a
reader always sees a complete JSON document. Recording ids are made here and checked before one
ever becomes part of a path.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from persistence.files import write_json_atomic
from persistence.times import parse_utc_iso

from .integrity import chain_genesis
from .writer import Track

RECORDINGS_DIR = "recordings"
MANIFEST = "manifest.json"
FORMAT = "endolink-recording"
VERSION = 1
AUDIO_CODEC = "opus"

_RECORDING_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9_-]{8}")


class RecordingStatus(StrEnum):
    RECORDING = "recording"
    "In progress (or the server died: recovery turns it into ``interrupted`` at the next start)."
    COMPLETE = "complete"
    "Ended cleanly; ``stop_reason`` says why."
    INTERRUPTED = "interrupted"
    "The server died or the disk failed while recording; the files hold what was written."


class SegmentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    INTERRUPTED = "interrupted"


class StopReason(StrEnum):
    FEED_OFFLINE = "feed-offline"
    "The endoscope feed stayed offline longer than ``recording_offline_s``."
    DISABLED = "disabled"
    "Someone switched recording off for the consultation."
    LOW_DISK = "low-disk"
    "Free space fell below ``recording_min_free_mb``."
    SHUTDOWN = "shutdown"
    "The server stopped cleanly (older recordings: a clean stop now leaves a recording paused)."
    WRITE_ERROR = "write-error"
    "The disk refused a write (the recording is ``interrupted``)."
    CRASH = "crash"
    "The server died; found and closed by recovery (the recording is ``interrupted``)."


def new_recording_id(at: float | None = None) -> str:
    """``20250131T091502Z-Ab3dE_9x``: sorts by start time, unguessable tail."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_urlsafe(6)}"


def valid_recording_id(rid: object) -> bool:
    """Ids arrive in URLs and on the command line: check their shape before any use."""
    return isinstance(rid, str) and _RECORDING_ID.fullmatch(rid) is not None


def recordings_root(data_dir: Path) -> Path:
    return data_dir / RECORDINGS_DIR


def recording_dir(data_dir: Path, rid: str) -> Path:
    if not valid_recording_id(rid):
        raise ValueError("not a recording id")
    return recordings_root(data_dir) / rid


def segment_filename(seq: int, extension: str) -> str:
    return f"segment-{seq:03d}{extension}"


def repaired_filename(seq: int, extension: str) -> str:
    return f"segment-{seq:03d}.repaired{extension}"


@dataclass
class Repaired:
    """A finalized stream copy of an interrupted segment (the original is kept as it was)."""

    file: str
    sha256: str
    bytes: int
    duration_s: float


@dataclass
class Segment:
    """One publisher connection's worth of recording: one file."""

    seq: int
    file: str
    status: SegmentStatus
    started_at: str
    "Wall-clock time of the segment's first video frame (file time 0)."
    ended_at: str | None = None
    "``started_at`` + ``duration_s`` once closed."
    offset_s: float = 0.0
    "Seconds from the recording's ``started_at`` to this segment's ``started_at``."
    duration_s: float = 0.0
    publisher: str | None = None
    "Identity (random id) of the clinic connection that fed this segment."
    video_pts_start: int | None = None
    "Relay clock (90 kHz) pts of the first video frame: ``(media_pts - video_pts_start) / 90000``"
    " is the file time of an annotation's ``media_pts``."
    video_pts_end: int | None = None
    "Relay clock pts of the last video frame."
    width: int | None = None
    height: int | None = None
    video_kbps: float | None = None
    frames: int = 0
    "Video frames in the file."
    audio_packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "talkback": 0})
    track_start_s: dict[str, float | None] = field(
        default_factory=lambda: {"video": None, "audio": None, "talkback": None}
    )
    "File time of each track's first frame (audio is placed by its arrival, see A/V sync)."
    bytes: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0, "talkback": 0})
    "Frames lost on the way to the file: writer behind, network loss, refused by the muxer."
    writer_cpu_s: float = 0.0
    sha256: str | None = None
    chain: str | None = None
    repaired: Repaired | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = SegmentStatus(values["status"])
        if values.get("repaired"):
            values["repaired"] = Repaired(**values["repaired"])
        return cls(**values)


@dataclass
class OutOfBodySpan:
    """Recording time during which the camera was outside the body (the privacy guard's verdict);
    replay and exports blur it. ``end_s`` None: until the end of the recording."""

    start_s: float
    end_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutOfBodySpan:
        end = data.get("end_s")
        return cls(float(data["start_s"]), None if end is None else float(end))

    def covers(self, t: float) -> bool:
        return self.start_s <= t and (self.end_s is None or t < self.end_s)


@dataclass
class Manifest:
    recording_id: str
    consultation: dict[str, Any]
    "``{'id': ..., 'title': ...}``"
    status: RecordingStatus
    started_at: str
    container: str
    mime_type: str
    video_codec: str
    keyframe_interval_s: float
    stop_reason: str | None = None
    ended_at: str | None = None
    consent: dict[str, Any] | None = None
    participants: list[dict[str, Any]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    writer_overflows: int = 0
    "How many times the writer thread fell behind (frames were then dropped, see ``dropped``)."
    out_of_body: list[OutOfBodySpan] = field(default_factory=list)
    "Spans filmed outside the body (absent in manifests made before the privacy guard)."

    @property
    def duration_s(self) -> float:
        return round(sum(s.duration_s for s in self.segments), 3)

    @property
    def chain_head(self) -> str | None:
        chains = [s.chain for s in self.segments if s.chain]
        return chains[-1] if chains else None

    def gaps(self) -> list[dict[str, Any]]:
        """Time between consecutive segments (the publisher was gone)."""
        gaps = []
        for before, after in zip(self.segments, self.segments[1:], strict=False):
            if before.ended_at is None:
                continue
            start, end = parse_utc_iso(before.ended_at), parse_utc_iso(after.started_at)
            gaps.append(
                {
                    "after_segment": before.seq,
                    "start": before.ended_at,
                    "end": after.started_at,
                    "duration_s": round(max(0.0, end - start), 3),
                }
            )
        return gaps

    def to_json(self) -> dict[str, Any]:
        sized = next((s for s in self.segments if s.width), None)
        video_bytes_s = [
            (s.video_kbps * s.duration_s, s.duration_s)
            for s in self.segments
            if s.video_kbps is not None
        ]
        seconds = sum(d for _, d in video_bytes_s)
        return {
            "format": FORMAT,
            "version": VERSION,
            "recording_id": self.recording_id,
            "consultation": self.consultation,
            "status": str(self.status),
            "stop_reason": self.stop_reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "container": self.container,
            "mime_type": self.mime_type,
            "video": {
                "codec": self.video_codec,
                "width": sized.width if sized else None,
                "height": sized.height if sized else None,
                "bitrate_kbps": round(sum(k for k, _ in video_bytes_s) / seconds, 1)
                if seconds
                else None,
            },
            "tracks": [
                {
                    "index": int(track),
                    "name": track.label,
                    "kind": "video" if track is Track.VIDEO else "audio",
                    "codec": self.video_codec if track is Track.VIDEO else AUDIO_CODEC,
                    "source": ("endoscope", "clinic microphone", "surgeon talk-back")[track],
                }
                for track in Track
            ],
            "keyframe_interval_s": self.keyframe_interval_s,
            "consent": self.consent,
            "participants": self.participants,
            "segments": [s.to_json() for s in self.segments],
            "gaps": self.gaps(),
            "hash_chain": {
                "algorithm": "sha256",
                "genesis": chain_genesis(self.recording_id),
                "head": self.chain_head,
            },
            "writer_overflows": self.writer_overflows,
            "out_of_body": [span.to_json() for span in self.out_of_body],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ValueError("not an EndoLink recording manifest")
        return cls(
            recording_id=data["recording_id"],
            consultation=data["consultation"],
            status=RecordingStatus(data["status"]),
            started_at=data["started_at"],
            container=data["container"],
            mime_type=data["mime_type"],
            video_codec=data["video"]["codec"],
            keyframe_interval_s=data["keyframe_interval_s"],
            stop_reason=data.get("stop_reason"),
            ended_at=data.get("ended_at"),
            consent=data.get("consent"),
            participants=list(data.get("participants", [])),
            segments=[Segment.from_json(s) for s in data.get("segments", [])],
            writer_overflows=int(data.get("writer_overflows", 0)),
            out_of_body=[OutOfBodySpan.from_json(span) for span in data.get("out_of_body", [])],
        )


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically replace ``manifest.json`` (blocking: run it in a thread)."""
    write_json_atomic(directory / MANIFEST, manifest.to_json(), indent=2, ensure_ascii=False)


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest, or None if it is missing or unreadable (blocking)."""
    try:
        return Manifest.from_json(json.loads((directory / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
