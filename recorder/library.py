"""RecordingLibrary: what the web edge may ask about stored recordings, in one place, so the edge
never needs the recorder's layout — the index rows, a manifest, which file of a segment plays,
whether the files are intact, the annotation timeline and snapshots on the recording clock, the
talk-back track and thumbnail (made once, kept beside the recording), the files to download, and
the export jobs (annotated, and DICOM for a hospital archive).

Every file name it opens comes from the index (checked against the recorder's own shapes) or is
made here, never from request text. Disk, hashing and PyAV work run in worker threads; the event
loop only waits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from relay import ConsultationId

from .annotation_log import FILENAME as ANNOTATION_LOG
from .annotation_log import read_annotation_log
from .dicom_export import DicomPlan, SegmentSource, StillSource, export_dicom, zip_directory
from .dicom_study import Study
from .export import ExportSource
from .index import RecordingIndex, RecordingRow, SegmentRow
from .jobs import JOB_ID, ExportJob, ExportJobs, JobKind, JobOutcome, exports_dir
from .manifest import MANIFEST, Manifest, read_manifest, recording_dir, valid_recording_id
from .privacy_spans import covered
from .snapshots import Snapshot, SnapshotStore
from .storage import check_free_space, consultation_dir
from .thumbnail import THUMBNAIL, extract_talkback, make_thumbnail, talkback_filename
from .timeline import RecordingClock, Timeline, build_timeline
from .verify import RecordingCheck, verify_recording

logger = logging.getLogger(__name__)

INTEGRITY_CACHE = 256
"Recordings whose last verification is kept (re-hashing a long recording takes seconds)."
_SEGMENT_FILE = re.compile(r"segment-[0-9]{3}(?:\.repaired)?\.(webm|mp4)")


class Archive(Protocol):
    """Where a DICOM export is sent (``recorder/dicom_send.py``: STOW-RS or C-STORE)."""

    @property
    def kind(self) -> str: ...

    def send(self, files: list[Path], cancelled: Callable[[], bool]) -> dict[str, Any]: ...


class Unavailable(LookupError):
    """What was asked for does not exist (yet); the message says what, in words for a person."""


def playable_file(directory: Path, segment: SegmentRow) -> Path | None:
    """The file of a segment that plays: the finalized ``.repaired`` copy of an interrupted
    segment when there is one (it has a duration and a seek index, docs/recording.md), else the
    original; None when neither is on disk. Blocking."""
    for name in (segment.repaired_file, segment.file):
        path = _segment_path(directory, name)
        if path is not None and path.is_file():
            return path
    return None


def _segment_path(directory: Path, name: str | None) -> Path | None:
    """``directory/name`` for a name of the recorder's shape only (the index is trusted, but a
    damaged row must not become a path elsewhere)."""
    if name is None or not _SEGMENT_FILE.fullmatch(name):
        return None
    return directory / name


class RecordingLibrary:
    """The stored recordings of one data directory, read side (``Recordings`` writes them)."""

    def __init__(self, data_dir: Path, index: RecordingIndex, min_free_mb: int = 0) -> None:
        self._data_dir = data_dir
        self._min_free_mb = min_free_mb
        "The free-disk floor a new export must leave."
        self._index = index
        self._snapshots = SnapshotStore(data_dir)
        self._exports = ExportJobs()
        self._locks: dict[str, asyncio.Lock] = {}
        self._checks: OrderedDict[str, tuple[Any, RecordingCheck]] = OrderedDict()

    async def close(self) -> None:
        """Cancel running exports (their partial files are removed)."""
        await asyncio.to_thread(self._exports.close)

    @staticmethod
    def valid_id(rid: str) -> bool:
        """Ids arrive in URLs: check the shape before anything touches the index or the disk."""
        return valid_recording_id(rid)

    # -- recordings ------------------------------------------------------------------------------

    async def recordings(self, cid: ConsultationId | None = None) -> list[RecordingRow]:
        """Index rows, oldest first; only ``cid``'s if given."""
        return await self._index.list(cid)

    async def recording(self, rid: str) -> RecordingRow:
        row = await self._index.get(rid)
        if row is None:
            raise Unavailable("unknown recording")
        return row

    async def manifest(self, row: RecordingRow) -> Manifest | None:
        return await asyncio.to_thread(read_manifest, self._directory(row.id))

    async def manifests(self, rows: Sequence[RecordingRow]) -> list[Manifest | None]:
        """The manifest of each row (None where it is missing), read in one worker call."""
        return await asyncio.to_thread(lambda: [read_manifest(self._directory(r.id)) for r in rows])

    async def integrity(self, row: RecordingRow) -> RecordingCheck:
        """``recorder.verify`` of the recording, re-hashed only when a file changed: the cache key
        holds each file's size, mtime, ctime and inode (ctime cannot be set back by a user) and
        the index row, so any write to a file — or to the index — makes the next answer re-check."""
        key = await asyncio.to_thread(self._signature, row)
        cached = self._checks.get(row.id)
        if cached is not None and cached[0] == key:
            self._checks.move_to_end(row.id)
            return cached[1]
        check = await asyncio.to_thread(verify_recording, self._data_dir, row)
        self._checks[row.id] = (key, check)
        while len(self._checks) > INTEGRITY_CACHE:
            self._checks.popitem(last=False)
        if not check.ok:
            failed = [f.file for f in check.files if f.verdict.failed]
            logger.warning("Recording %s fails verification: %s", row.id, ", ".join(failed))
        return check

    def _signature(self, row: RecordingRow) -> tuple[Any, ...]:
        directory = self._directory(row.id)
        names = [MANIFEST] + [s.file for s in row.segments]
        names += [s.repaired_file for s in row.segments if s.repaired_file]
        stats: list[tuple[Any, ...]] = []
        for name in names:
            try:
                st = os.stat(directory / name)
                stats.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            except OSError:
                stats.append((name, None))
        return (row, tuple(stats))

    # -- annotations -----------------------------------------------------------------------------

    async def timeline(self, row: RecordingRow, manifest: Manifest | None) -> Timeline | None:
        """The marks and freezes of the consultation's annotation log that overlap the recording,
        on its clock (None without a manifest: there is no clock)."""
        if manifest is None:
            return None
        return await asyncio.to_thread(self._timeline, row, manifest)

    def _timeline(self, row: RecordingRow, manifest: Manifest) -> Timeline:
        log = consultation_dir(self._data_dir, row.consultation_id) / ANNOTATION_LOG
        return build_timeline(read_annotation_log(log), manifest)

    async def snapshots(
        self, row: RecordingRow, manifest: Manifest | None
    ) -> list[tuple[Snapshot, float]]:
        """The consultation's snapshots taken during the recording (a second of slack at each
        end), each with its recording time."""
        if manifest is None:
            return []
        clock = RecordingClock(manifest)
        upper = math.inf if row.status == "recording" else clock.span_s + 1.0
        taken = []
        for snapshot in await self._snapshots.list(row.consultation_id):
            t = clock.wall(snapshot.created_at)
            if t is not None and -1.0 <= t <= upper:
                taken.append((snapshot, round(t, 3)))
        return taken

    # -- media -----------------------------------------------------------------------------------

    async def segment_file(self, row: RecordingRow, seq: int) -> Path:
        """The file that plays for segment ``seq`` (see ``playable_file``)."""
        path = await asyncio.to_thread(playable_file, self._directory(row.id), _segment(row, seq))
        if path is None:
            raise Unavailable("this segment has no file (nothing was recorded in it)")
        return path

    async def talkback_file(self, row: RecordingRow, seq: int) -> Path:
        """The segment's talk-back track (the surgeon's microphone) as audio-only WebM,
        stream-copied once from the playable file and kept as ``talkback-NNN.webm``."""
        segment = _segment(row, seq)
        if segment.status == "open":
            raise Unavailable("no talk-back for this segment (yet)")
        directory = self._directory(row.id)

        def extract(target: Path) -> bool:
            source = playable_file(directory, segment)
            return source is not None and extract_talkback(source, target)

        missing = "the surgeon did not speak in this segment"
        return await self._made_once(row, talkback_filename(seq), extract, missing)

    async def thumbnail(self, row: RecordingRow) -> Path:
        """A JPEG of the recording's first keyframe, made once and kept as ``thumbnail.jpg``."""
        directory = self._directory(row.id)
        manifest = await self.manifest(row)
        spans = manifest.out_of_body if manifest is not None else []

        def make(target: Path) -> bool:
            sources = [(playable_file(directory, s), s.offset_s) for s in row.segments]
            playable = [(path, offset) for path, offset in sources if path is not None]
            return make_thumbnail(playable, target, lambda t: covered(spans, t))

        return await self._made_once(row, THUMBNAIL, make, "the recording has no picture yet")

    async def _made_once(
        self, row: RecordingRow, name: str, make: Callable[[Path], bool], missing: str
    ) -> Path:
        """``name`` beside the recording, made by ``make`` (in a thread) if it is not there yet;
        one maker per file at a time. ``Unavailable(missing)`` when ``make`` had nothing to
        make it from."""
        target = self._directory(row.id) / name
        async with self._locks.setdefault(f"{row.id}/{name}", asyncio.Lock()):
            made = await asyncio.to_thread(lambda: target.is_file() or make(target))
        if not made:
            raise Unavailable(missing)
        return target

    # -- download --------------------------------------------------------------------------------

    async def originals(self, row: RecordingRow) -> list[Path]:
        """Every media file as recorded, in order: each segment's original, then its ``.repaired``
        copy if recovery made one."""

        def present() -> list[Path]:
            directory = self._directory(row.id)
            names = [name for s in row.segments for name in (s.file, s.repaired_file)]
            paths = [_segment_path(directory, name) for name in names]
            return [p for p in paths if p is not None and p.is_file()]

        files = await asyncio.to_thread(present)
        if not files:
            raise Unavailable("the recording has no media file yet")
        return files

    def manifest_file(self, row: RecordingRow) -> Path:
        return self._directory(row.id) / MANIFEST

    # -- annotated export ------------------------------------------------------------------------

    @staticmethod
    def has_video(row: RecordingRow) -> bool:
        return any(s.frames or s.status == "open" for s in row.segments)

    async def check_export_space(self) -> None:
        """``DiskFull`` when the data dir is below its floor: no new export then."""
        await asyncio.to_thread(check_free_space, self._data_dir, self._min_free_mb)

    def start_export(
        self, row: RecordingRow, requested_by: str, include_out_of_body: bool = False
    ) -> ExportJob:
        """Queue an annotated export (returns at once; ``RuntimeError`` while stopping;
        ``JobBusy`` while one with the other ``include_out_of_body`` runs). The manifest, the log
        and the playable files are read in the export worker."""
        directory = self._directory(row.id)

        def prepare() -> tuple[list[ExportSource], Timeline]:
            manifest = read_manifest(directory)
            if manifest is None:
                raise ValueError("the recording's manifest is missing")
            frames = {s.seq: s.frames for s in manifest.segments}
            sources = [
                ExportSource(path, s.offset_s, frames.get(s.seq, 0))
                for s in row.segments
                if (path := playable_file(directory, s)) is not None
            ]
            if not sources:
                raise ValueError("the recording has no media file")
            return sources, self._timeline(row, manifest)

        return self._exports.start(row.id, directory, requested_by, prepare, include_out_of_body)

    # -- DICOM export ----------------------------------------------------------------------------

    async def dicom_stills(self, row: RecordingRow, manifest: Manifest | None) -> list[StillSource]:
        """The snapshots taken during the recording, as the DICOM export's stills."""
        taken = await self.snapshots(row, manifest)
        return [
            StillSource(self._snapshots.path(row.consultation_id, s.id, s.kind), s.created_at, t)
            for s, t in taken
        ]

    def dicom_plan(
        self,
        row: RecordingRow,
        patient: Mapping[str, str | None],
        stills: list[StillSource],
        burned_in: bool = False,
        zone: str = "UTC",
        include_out_of_body: bool = False,
    ) -> DicomPlan:
        """What a DICOM export of ``row`` reads (blocking: the manifest, the log, the files)."""
        directory = self._directory(row.id)
        manifest = read_manifest(directory)
        if manifest is None:
            raise Unavailable("the recording's manifest is missing")
        rows = {s.seq: s for s in row.segments}
        segments = [
            SegmentSource(s.seq, path, s.offset_s, s.started_at, s.frames, s.duration_s)
            for s in manifest.segments
            if s.seq in rows and (path := playable_file(directory, rows[s.seq])) is not None
        ]
        title = str(manifest.consultation.get("title") or "")
        study = Study(row.id, title, manifest.started_at, patient, zone)
        timeline = self._timeline(row, manifest)
        return DicomPlan(study, segments, stills, timeline, burned_in, include_out_of_body)

    def start_dicom_export(
        self,
        row: RecordingRow,
        requested_by: str,
        plan: Callable[[], DicomPlan],
        archive: Archive | None = None,
        stored: Callable[[str], None] = lambda kind: None,
        same: str = "",
    ) -> ExportJob:
        """Queue a DICOM export (returns at once): the files are written, sent to ``archive``
        if given, and kept as the job's ZIP. ``plan`` runs in the worker; so does ``stored``,
        called with the archive's kind once it has accepted every object (the signalling side
        audits it there: the job is done only after). ``same``: see ``ExportJobs.start_work``."""

        def work(job: ExportJob) -> JobOutcome:
            out = job.directory / f"{job.id}.d"
            try:
                result = export_dicom(plan(), out, job.report, job.cancelled)
                sent: dict[str, Any] = {}
                if archive is not None:
                    sent = archive.send(result.files, job.cancelled)
                    stored(archive.kind)
                size = zip_directory(out, job.file)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            return JobOutcome(size, result.duration_s, result.frames, result.to_json() | sent)

        directory = self._directory(row.id)
        return self._exports.start_work(row.id, directory, requested_by, work, JobKind.DICOM, same)

    def dicom_busy(self, row: RecordingRow, same: str) -> bool:
        """Whether a DICOM export of ``row`` with other parameters than ``same`` is running."""
        running = self._exports.running(row.id, JobKind.DICOM)
        return running is not None and running.same != same

    async def export_job(self, row: RecordingRow, job_id: str) -> ExportJob:
        """A job of this recording, of this server run or found on disk. ``ValueError`` for a
        malformed id (checked before it becomes a path)."""
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not an export job id")
        job = self._exports.get(job_id)
        if job is None:
            job = await asyncio.to_thread(
                ExportJob.load, exports_dir(self._directory(row.id)), job_id
            )
        if job is None or job.recording_id != row.id:
            raise Unavailable("unknown export job")
        return job

    async def cancel_export(self, job: ExportJob) -> bool:
        """Stop ``job`` (waits a few seconds at most, off the loop); whether it is over."""
        return await asyncio.to_thread(self._exports.cancel, job)

    async def export_file(self, job: ExportJob) -> Path | None:
        """The finished MP4 of ``job``; None until it is done (or if it is gone)."""
        done = job.done and await asyncio.to_thread(job.file.is_file)
        return job.file if done else None

    def _directory(self, rid: str) -> Path:
        return recording_dir(self._data_dir, rid)


def _segment(row: RecordingRow, seq: int) -> SegmentRow:
    segment = next((s for s in row.segments if s.seq == seq), None)
    if segment is None:
        raise Unavailable("unknown segment")
    return segment
