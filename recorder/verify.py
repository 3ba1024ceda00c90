"""Check that a recording's files are exactly what was recorded (``endolink recordings verify``).

Every segment file is re-hashed and compared with the SHA-256 stored in the index when the segment
closed; the hash chain is recomputed from those hashes; the manifest must agree with the index.
Verdicts per file: OK, MODIFIED (same size or larger, different bytes), TRUNCATED (shorter than
recorded), MISSING (no file), OPEN (still being recorded: not checkable yet), EMPTY (the segment
never got a file — the server stopped before its first keyframe). Blocking: run in a thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .index import RecordingRow, SegmentRow
from .integrity import chain_genesis, chain_next, sha256_file
from .manifest import MANIFEST, read_manifest, recording_dir


class Verdict(StrEnum):
    OK = "OK"
    MODIFIED = "MODIFIED"
    TRUNCATED = "TRUNCATED"
    MISSING = "MISSING"
    OPEN = "OPEN"
    EMPTY = "EMPTY"

    @property
    def failed(self) -> bool:
        return self in (Verdict.MODIFIED, Verdict.TRUNCATED, Verdict.MISSING)


@dataclass(frozen=True)
class FileCheck:
    seq: int
    "Segment number; 0 for the manifest."
    file: str
    verdict: Verdict
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": str(self.verdict)}


@dataclass
class RecordingCheck:
    recording_id: str
    consultation: str
    status: str
    files: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(check.verdict.failed for check in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "consultation": self.consultation,
            "status": self.status,
            "ok": self.ok,
            "files": [check.to_json() for check in self.files],
        }


def verify_recording(data_dir: Path, row: RecordingRow) -> RecordingCheck:
    """Check one indexed recording against its files and manifest."""
    directory = recording_dir(data_dir, row.id)
    check = RecordingCheck(row.id, row.consultation_id, row.status)
    chain = chain_genesis(row.id)
    for segment in row.segments:
        check.files.append(_check_segment(directory, segment, row.status, chain))
        if segment.chain is not None:
            chain = segment.chain
        if segment.repaired_file and segment.repaired_sha256:
            check.files.append(
                _check_file(directory / segment.repaired_file, segment.seq, segment.repaired_sha256)
            )
    if row.chain_head != (row.segments[-1].chain if row.segments else None) and row.segments:
        _flag_last(check, "the recording's chain head does not match its last segment")
    check.files.append(_check_manifest(directory, row))
    return check


def _check_segment(directory: Path, segment: SegmentRow, status: str, previous: str) -> FileCheck:
    if segment.sha256 is None:
        if segment.status == "open" and status == "recording":
            return FileCheck(segment.seq, segment.file, Verdict.OPEN, "still being recorded")
        if not (directory / segment.file).exists():
            return FileCheck(segment.seq, segment.file, Verdict.EMPTY, "no media was written")
        return FileCheck(segment.seq, segment.file, Verdict.MODIFIED, "a file exists, none was")
    result = _check_file(directory / segment.file, segment.seq, segment.sha256, segment.bytes)
    if result.verdict is Verdict.OK and segment.chain != chain_next(previous, segment.sha256):
        return FileCheck(segment.seq, segment.file, Verdict.MODIFIED, "the hash chain is broken")
    return result


def _check_file(path: Path, seq: int, sha256: str, size: int | None = None) -> FileCheck:
    if not path.is_file():
        return FileCheck(seq, path.name, Verdict.MISSING, "the file is gone")
    actual_sha, actual_size = sha256_file(path)
    if size is not None and actual_size < size:
        return FileCheck(
            seq, path.name, Verdict.TRUNCATED, f"{actual_size} bytes, {size} were recorded"
        )
    if actual_sha != sha256:
        detail = "SHA-256 differs"
        if size is not None and actual_size != size:
            detail += f" ({actual_size} bytes, {size} were recorded)"
        return FileCheck(seq, path.name, Verdict.MODIFIED, detail)
    return FileCheck(seq, path.name, Verdict.OK)


def _check_manifest(directory: Path, row: RecordingRow) -> FileCheck:
    manifest = read_manifest(directory)
    if manifest is None:
        return FileCheck(0, MANIFEST, Verdict.MISSING, "missing or unreadable")
    recorded = {s.seq: (s.file, s.sha256, s.bytes, s.chain) for s in manifest.segments}
    indexed = {s.seq: (s.file, s.sha256, s.bytes, s.chain) for s in row.segments}
    if row.status == "recording":
        # Being written: the manifest is saved just before the index, so a segment or the
        # recording may be one step ahead in it. Compare what the index has closed.
        closed = {s.seq for s in row.segments if s.status != "open"}
        recorded = {seq: v for seq, v in recorded.items() if seq in closed}
        indexed = {seq: v for seq, v in indexed.items() if seq in closed}
    elif manifest.status != row.status:
        return FileCheck(0, MANIFEST, Verdict.MODIFIED, "disagrees with the index")
    if recorded != indexed:
        return FileCheck(0, MANIFEST, Verdict.MODIFIED, "disagrees with the index")
    return FileCheck(0, MANIFEST, Verdict.OK)


def _flag_last(check: RecordingCheck, detail: str) -> None:
    for i in range(len(check.files) - 1, -1, -1):
        if check.files[i].seq:
            old = check.files[i]
            check.files[i] = FileCheck(old.seq, old.file, Verdict.MODIFIED, detail)
            return


def format_check(check: RecordingCheck) -> list[str]:
    """Human-readable lines for the CLI."""
    lines = [f"recording {check.recording_id} (consultation {check.consultation}, {check.status})"]
    for item in check.files:
        detail = f"  ({item.detail})" if item.detail else ""
        lines.append(f"  {item.file:<32} {item.verdict}{detail}")
    return lines
