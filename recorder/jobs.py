"""Export jobs: annotated exports (``recorder/export.py``) and DICOM exports
(``recorder/dicom_export.py``) run in the background.

``ExportJobs`` runs exports one at a time in a worker thread (never on the event loop), at a lower
CPU priority than the live relay, with progress (0–100 %) and an estimate of the time left readable
at any time. A job can be cancelled: queued, it never starts; running, the export stops within a
packet's work (``CANCEL_WAIT_S`` bounds the wait), its partial file is removed and the recording
is never touched (an export only reads it). The result is
stored beside the recording: ``<recording>/exports/<job>.mp4`` (annotated) or ``<job>.zip``
(DICOM; written as ``.partial`` and renamed when complete) plus ``<job>.json`` (state, who asked,
when, size, and the kind's own result such as the archive's answer).

A foreseeable failure (an archive that cannot be reached, a file too large for DICOM) is a
``JobFailed``: its message is the job's readable error and one warning line, no traceback.

Retention: one export per recording and kind (``annotated``, ``dicom``). When an export is
done, the recording's earlier exports (done, failed or cancelled) are removed — their MP4 and
their ``.json`` — so a recording exported again does not pile up copies; a failed new export
leaves the previous one in place.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from persistence.files import Sync, write_json_atomic
from persistence.times import utc_now_iso

from .export import ExportCancelled, ExportSource, export_annotated
from .timeline import Timeline

logger = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{12}")
NICE = 10
"Export threads run this much nicer than the server: the live relay keeps its CPU."
CANCEL_WAIT_S = 5.0
"How long ``cancel`` waits for a running export to stop (one packet's work, normally ms)."
ETA_AFTER = 2.0
"Progress (%) before the time left is estimated: the first frames say little about the rest."


class JobKind(StrEnum):
    ANNOTATED = "annotated"
    "The recording re-encoded with the marks burned in (MP4)."
    DICOM = "dicom"
    "The recording as DICOM objects for a hospital archive (ZIP, and sent if asked)."


_SUFFIX = {JobKind.ANNOTATED: ".mp4", JobKind.DICOM: ".zip"}


class JobFailed(Exception):
    """A failure foreseen by the job's work: the message is for a person, no traceback logged."""


class JobBusy(Exception):
    """An export of the recording to this kind runs with other parameters: the message says so."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    "Someone cancelled it: no file was made."


_ACTIVE = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class JobOutcome:
    """What a job's work made: the file's size, the video's length, the kind's own result."""

    bytes: int
    duration_s: float | None = None
    frames: int = 0
    result: dict[str, Any] | None = None


@dataclass
class ExportJob:
    id: str
    recording_id: str
    requested_by: str
    created_at: str
    kind: JobKind = JobKind.ANNOTATED
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    "0–100 %."
    finished_at: str | None = None
    bytes: int | None = None
    duration_s: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    "The kind's own result (DICOM: the instances made, where they were sent)."
    directory: Path = field(default=Path("."), repr=False)
    same: str = field(default="", repr=False)
    "What makes two requests the same export (a digest of their parameters; never saved)."
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    "Set once the worker is done with the job (finished, failed, cancelled or never started)."
    _running_since: float | None = field(default=None, repr=False)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the speed so far; None before ``ETA_AFTER`` % or when not running."""
        since = self._running_since
        if self.state is not JobState.RUNNING or since is None or self.progress < ETA_AFTER:
            return None
        elapsed = time.monotonic() - since
        return max(0.0, elapsed * (100.0 - self.progress) / self.progress)

    @property
    def file(self) -> Path:
        return self.directory / f"{self.id}{_SUFFIX[self.kind]}"

    def report(self, fraction: float) -> None:
        """Progress from the work, 0–1."""
        self.progress = 100.0 * fraction

    def cancelled(self) -> bool:
        """Asked by the work between steps: stop (raise ``ExportCancelled``) when True."""
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.state is JobState.DONE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recording_id": self.recording_id,
            "kind": str(self.kind),
            "requested_by": self.requested_by,
            "created_at": self.created_at,
            "state": str(self.state),
            "progress": round(self.progress, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "finished_at": self.finished_at,
            "bytes": self.bytes,
            "duration_s": self.duration_s,
            "error": self.error,
            "result": self.result,
        }

    def save(self, **changes: Any) -> None:
        """Write ``<job>.json`` atomically (blocking), with ``changes`` applied to the file only
        (a finished job is saved first and only then shown finished, so a client that saw it
        done finds it done on disk too)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {**self.to_json(), **{k: str(v) if k == "state" else v for k, v in changes.items()}}
        write_json_atomic(self.directory / f"{self.id}.json", data, sync=Sync.NONE)

    @classmethod
    def load(cls, directory: Path, job_id: str) -> ExportJob | None:
        """A job from its file (blocking); None if there is none. A job found ``queued`` or
        ``running`` on disk belonged to a server that stopped: it failed."""
        if not JOB_ID.fullmatch(job_id):
            return None
        try:
            data = json.loads((directory / f"{job_id}.json").read_text(encoding="utf-8"))
            job = cls(
                id=data["id"],
                recording_id=data["recording_id"],
                requested_by=data["requested_by"],
                created_at=data["created_at"],
                kind=JobKind(data.get("kind", JobKind.ANNOTATED)),
                state=JobState(data["state"]),
                progress=float(data.get("progress", 0.0)),
                finished_at=data.get("finished_at"),
                bytes=data.get("bytes"),
                duration_s=data.get("duration_s"),
                error=data.get("error"),
                result=data.get("result"),
                directory=directory,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if job.state in _ACTIVE:
            job.state, job.error = JobState.FAILED, "the server stopped during the export"
        if job.state is JobState.DONE and not job.file.is_file():
            job.state, job.error = JobState.FAILED, "the exported file is gone"
        return job


def exports_dir(recording_directory: Path) -> Path:
    return recording_directory / EXPORTS_DIR


class ExportJobs:
    """Background exports, one at a time, in a worker thread."""

    def __init__(self, workers: int = 1) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="export", initializer=_lower_priority
        )
        self._jobs: dict[str, ExportJob] = {}
        self._closed = False
        self._lock = threading.Lock()
        "Orders a cancel of a queued job against the worker taking it up."

    def start(
        self,
        recording_id: str,
        recording_directory: Path,
        requested_by: str,
        prepare: Callable[[], tuple[list[ExportSource], Timeline]],
        include_out_of_body: bool = False,
    ) -> ExportJob:
        """Queue an annotated export (returns at once). ``prepare`` runs in the worker and
        returns the sources and timeline (reading the manifest and the annotation log is file
        work too). ``include_out_of_body``: the spans filmed outside the body stay unblurred."""

        def work(job: ExportJob) -> JobOutcome:
            sources, timeline = prepare()
            result = export_annotated(
                sources,
                timeline,
                job.file,
                job.report,
                job.cancelled,
                include_out_of_body=include_out_of_body,
            )
            return JobOutcome(result.bytes, result.duration_s, result.frames)

        same = "out-of-body" if include_out_of_body else ""
        return self.start_work(
            recording_id, recording_directory, requested_by, work, JobKind.ANNOTATED, same
        )

    def start_work(
        self,
        recording_id: str,
        recording_directory: Path,
        requested_by: str,
        work: Callable[[ExportJob], JobOutcome],
        kind: JobKind = JobKind.ANNOTATED,
        same: str = "",
    ) -> ExportJob:
        """Queue ``work`` (run in the worker: it writes ``job.file``, reports progress and asks
        ``job.cancelled()``). A recording already being exported to this kind gets that job back
        if ``same`` (its parameters) matches, else ``JobBusy``: never a second one alongside."""
        if self._closed:
            raise RuntimeError("the server is stopping")
        running = self.running(recording_id, kind)
        if running is not None:
            if running.same != same:
                raise JobBusy("an export of this recording is running")
            return running
        job = ExportJob(
            id=secrets.token_urlsafe(9),
            recording_id=recording_id,
            requested_by=requested_by,
            created_at=utc_now_iso(),
            kind=kind,
            directory=exports_dir(recording_directory),
            same=same,
        )
        self._jobs[job.id] = job
        self._pool.submit(self._run, job, work)
        return job

    def running(self, recording_id: str, kind: JobKind) -> ExportJob | None:
        """The recording's queued or running export to ``kind`` (not one being cancelled)."""
        for job in list(self._jobs.values()):  # the worker may forget a replaced job meanwhile
            cancelled = job._cancel.is_set()
            if job.recording_id == recording_id and job.kind is kind:
                if job.state in _ACTIVE and not cancelled:
                    return job
        return None

    def get(self, job_id: str) -> ExportJob | None:
        """A job of this server run (None: look on disk with ``ExportJob.load``)."""
        return self._jobs.get(job_id)

    def cancel(self, job: ExportJob) -> bool:
        """Stop ``job`` (blocking, at most ``CANCEL_WAIT_S``: call it off the loop); whether it is
        over. A job that already ended is left as it is."""
        with self._lock:
            if job.state not in _ACTIVE:
                return True
            job._cancel.set()
            if job.state is JobState.QUEUED:  # the worker is busy with another: end it here
                self._cancelled(job)
                job._ended.set()
                return True
        return job._ended.wait(CANCEL_WAIT_S)

    def close(self, wait: bool = True) -> None:
        """Cancel running and queued exports (their partial files are removed)."""
        self._closed = True
        for job in self._jobs.values():
            job._cancel.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _run(self, job: ExportJob, work: Callable[[ExportJob], JobOutcome]) -> None:
        try:
            self._export(job, work)
        finally:
            job._ended.set()

    def _export(self, job: ExportJob, work: Callable[[ExportJob], JobOutcome]) -> None:
        with self._lock:
            if job._cancel.is_set():
                if job.state is JobState.QUEUED:  # else cancel() has already ended it
                    self._cancelled(job)
                return
            job.state = JobState.RUNNING
        started = job._running_since = time.monotonic()
        try:
            job.save()
            outcome = work(job)
            job.bytes, job.duration_s = outcome.bytes, outcome.duration_s
            job.result = outcome.result
            job.finished_at = utc_now_iso()
            job.save(state=JobState.DONE, progress=100.0)
            self._replace_older(job)  # before it shows done: whoever sees it done sees them gone
            job.progress, job.state = 100.0, JobState.DONE
            logger.info(
                "Export %s (%s) of recording %s done: %d frames, %.1f s of video in %.1f s",
                job.id,
                job.kind,
                job.recording_id,
                outcome.frames,
                outcome.duration_s or 0.0,
                time.monotonic() - started,
            )
        except ExportCancelled:
            self._cancelled(job)
            return
        except JobFailed as exc:
            logger.warning("Export %s of recording %s failed: %s", job.id, job.recording_id, exc)
            job.state, job.error = JobState.FAILED, str(exc)
        except Exception as exc:
            logger.exception("Export %s of recording %s failed", job.id, job.recording_id)
            job.state, job.error = JobState.FAILED, f"{type(exc).__name__}: {exc}"
        if job.state is JobState.FAILED:
            job.finished_at = utc_now_iso()
            with contextlib.suppress(OSError):
                job.save()

    def _replace_older(self, job: ExportJob) -> None:
        """Remove the recording's other exports (none of them is active: ``start`` hands an
        active one back instead of making a second)."""
        for path in job.directory.glob("*.json"):
            other = path.stem
            if other == job.id or not JOB_ID.fullmatch(other):
                continue
            earlier = ExportJob.load(job.directory, other)
            if earlier is not None and earlier.kind is not job.kind:
                continue
            with self._lock:
                self._jobs.pop(other, None)
            files = [job.directory / f"{other}{suffix}" for suffix in _SUFFIX.values()]
            for file in (*files, path):
                try:
                    file.unlink(missing_ok=True)
                except OSError as exc:  # the new export stands; the old one stays behind
                    logger.warning("Export %s could not be removed: %s", other, exc)
            logger.info("Export %s of recording %s replaced by %s", other, job.recording_id, job.id)

    def _cancelled(self, job: ExportJob) -> None:
        """Cancelled by someone, or by the server stopping (then it failed)."""
        if self._closed:
            job.state, job.error = JobState.FAILED, "cancelled: the server is stopping"
        else:
            job.state = JobState.CANCELLED
            logger.info("Export %s of recording %s cancelled", job.id, job.recording_id)
        job.finished_at = utc_now_iso()
        with contextlib.suppress(OSError):
            job.save()


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
