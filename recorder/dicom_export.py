"""A recording as DICOM files for a hospital archive, written into one directory:

    video/001.dcm …      series 1: one Video Endoscopic Image per segment (``dicom_video.py``)
    stills/001.dcm …     series 2: each snapshot taken during it, VL Endoscopic (``dicom_stills``)
    burned-in/001.dcm    series 3, on request: the annotated export, marks in the pixels (DERIVED)
    annotations.json     the marks and freezes on the recording clock, with the SOP instances

Spans filmed outside the body (the privacy guard's, ``timeline.out_of_body``) are blurred unless
the plan says ``include_out_of_body``: a segment that has one is transcoded with those frames
blurred (kept, not cut: an archive's video keeps the recording's timing, and a viewer sees that
something was hidden); the sidecar lists the spans and whether they were blurred.

One instance per segment: a segment is one continuous stream (a publisher away and back starts a
new one), each a playable whole as PS3.5 wants of a split video, in one series so a viewer lists
them in order (Instance Number = segment number; ``annotations.json`` gives each one's offset on
the recording clock). The marks stay out of the original pixels: the sidecar holds them with
their times and names the instances by UID, and the burned-in series is a separate, derived copy.

Blocking and CPU-heavy: ``recorder/jobs.py`` runs it in the export worker.
"""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistence.files import Sync, move_into_place

from .dicom_stills import UndecodablePicture, still_instance
from .dicom_study import Series, Study
from .dicom_video import X264_OPTIONS, VideoStream, prepare_stream, video_instance, write_video
from .export import ExportCancelled, ExportSource, export_annotated
from .privacy_spans import covered
from .timeline import Timeline

logger = logging.getLogger(__name__)

SIDECAR = "annotations.json"


@dataclass(frozen=True)
class SegmentSource:
    """One segment to export: its playable file, recording-clock offset, start, frame count."""

    seq: int
    path: Path
    offset_s: float
    started_at: str
    frames: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True)
class StillSource:
    """One snapshot: its PNG, when it was taken, and where that is on the recording clock."""

    path: Path
    taken_at: str
    recording_s: float


@dataclass(frozen=True)
class DicomPlan:
    """Everything the export reads, gathered by the library (file work, in the worker)."""

    study: Study
    segments: list[SegmentSource]
    stills: list[StillSource]
    timeline: Timeline
    burned_in: bool = False
    include_out_of_body: bool = False
    "Keep the spans filmed outside the body as they are (default: blurred)."

    def hider(self, segment: SegmentSource) -> Callable[[float], bool] | None:
        """Which file times of ``segment`` to blur; None when none (it may be copied as it is)."""
        spans = [] if self.include_out_of_body else self.timeline.out_of_body
        end = segment.offset_s + segment.duration_s
        start = segment.offset_s
        if not any(s.start_s <= end and (s.end_s is None or s.end_s > start) for s in spans):
            return None
        return lambda t: covered(spans, segment.offset_s + t)


@dataclass
class DicomResult:
    files: list[Path] = field(default_factory=list)
    "Every DICOM file written, in order (the sidecar not included)."
    instances: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    duration_s: float = 0.0
    transcoded: bool = False
    skipped: list[str] = field(default_factory=list)
    "Snapshots left out, with why (undecodable): one bad picture never fails the export."

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": len(self.instances),
            "frames": self.frames,
            "duration_s": round(self.duration_s, 3),
            "transcoded": self.transcoded,
            "skipped": len(self.skipped),
        }


def export_dicom(
    plan: DicomPlan,
    out_dir: Path,
    report: Callable[[float], None] = lambda fraction: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> DicomResult:
    """Write the plan's DICOM files and sidecar into ``out_dir`` (made if missing)."""
    if not plan.segments:
        raise ValueError("the recording has no media file")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    study, result = plan.study, DicomResult()
    video = Series(study, 1, "video", "Endoscope video")
    stills = Series(study, 2, "stills", "Snapshots")
    steps = len(plan.segments) * (2 if plan.burned_in else 1)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".work-") as work:
        for n, segment in enumerate(plan.segments):

            def step(fraction: float, n: int = n) -> None:
                report(min(0.99, (n + fraction) / steps))

            stream = prepare_stream(
                segment.path,
                Path(work) / f"{segment.seq}.mp4",
                step,
                cancelled,
                segment.frames,
                plan.hider(segment),
            )
            ds = video_instance(video, stream, segment.seq, segment.started_at)
            _write(result, ds, stream, out_dir / "video" / f"{segment.seq:03d}.dcm")
            result.instances[-1]["offset_s"] = segment.offset_s
            result.frames += stream.frames
            result.duration_s += stream.duration_s
            result.transcoded |= stream.transcoded
        n = 0
        for still in plan.stills:
            if cancelled():
                raise ExportCancelled
            try:
                ds = still_instance(stills, still.path, n + 1, still.taken_at)
            except UndecodablePicture as exc:
                logger.warning("DICOM export: %s left out: %s", still.path.name, exc)
                result.skipped.append(f"{still.path.name} at {still.recording_s} s: {exc}")
                continue
            n += 1
            _write(result, ds, None, out_dir / "stills" / f"{n:03d}.dcm")
            result.instances[-1]["recording_s"] = still.recording_s
        if plan.burned_in:
            _burned_in(plan, Path(work), out_dir, result, report, cancelled)
    _write_sidecar(plan, out_dir, result)
    report(1.0)
    return result


def _burned_in(
    plan: DicomPlan,
    work: Path,
    out_dir: Path,
    result: DicomResult,
    report: Callable[[float], None],
    cancelled: Callable[[], bool],
) -> None:
    """The annotated export, encoded straight to the record's settings and copied in."""
    sources = [ExportSource(s.path, s.offset_s, s.frames) for s in plan.segments]
    annotated = work / "annotated.mp4"
    export_annotated(
        sources,
        plan.timeline,
        annotated,
        lambda fraction: report(min(0.99, 0.5 + fraction / 2)),
        cancelled,
        {**X264_OPTIONS, "level": "4.1"},
        plan.include_out_of_body,
    )
    stream = prepare_stream(annotated, work / "burned-in.mp4", lambda f: None, cancelled)
    originals = [(i["sop_class"], i["sop_instance_uid"]) for i in result.instances if i["video"]]
    series = Series(plan.study, 3, "burned-in", "Endoscope video with the marks drawn in")
    ds = video_instance(series, stream, 1, plan.segments[0].started_at, originals)
    _write(result, ds, stream, out_dir / "burned-in" / "001.dcm")


def _write(result: DicomResult, ds: Any, stream: VideoStream | None, target: Path) -> None:
    target.parent.mkdir(mode=0o700, exist_ok=True)
    if stream is None:
        ds.save_as(target, enforce_file_format=True)
    else:
        write_video(ds, stream, target)
    result.files.append(target)
    result.instances.append(
        {
            "file": str(target.relative_to(target.parent.parent)),
            "series_instance_uid": ds.SeriesInstanceUID,
            "sop_class": ds.SOPClassUID,
            "sop_instance_uid": ds.SOPInstanceUID,
            "video": stream is not None,
            "frames": stream.frames if stream else None,
            "frame_time_ms": round(stream.frame_time_s * 1000, 3) if stream else None,
        }
    )


def _write_sidecar(plan: DicomPlan, out_dir: Path, result: DicomResult) -> None:
    """The annotations beside the DICOM files: marks and freezes (not the chat) on the recording
    clock, and which instance shows which stretch of it. No patient details."""
    timeline = plan.timeline.to_json()
    sidecar = {
        "recording_id": plan.study.recording_id,
        "study_instance_uid": plan.study.uid,
        "clock": "seconds from the start of the recording; a segment's video starts at offset_s",
        "instances": result.instances,
        "marks": timeline["marks"],
        "freezes": timeline["freezes"],
        "out_of_body": timeline["out_of_body"],
        "out_of_body_blurred": not plan.include_out_of_body,
        "skipped": result.skipped,
    }
    (out_dir / SIDECAR).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")


def zip_directory(directory: Path, target: Path) -> int:
    """``target`` (ZIP, stored: the video is compressed already) of every file under
    ``directory``; written as ``.partial``, renamed when complete. Its size."""
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(directory).as_posix())
    move_into_place(partial, target, sync=Sync.NONE)
    return target.stat().st_size
