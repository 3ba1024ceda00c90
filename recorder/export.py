"""Annotated export: a recording re-encoded as one H.264 MP4 with the marks burned in.

Every segment file is decoded (PyAV), each video frame gets the marks visible at its recording
time drawn into it (``relay/overlay.py``, the live burn-in's drawing, on the 4:2:0 planes), and is
encoded with libx264 (yuv420p, CRF 20, ``veryfast``) into an MP4 whose index sits in front
(``+faststart``: it plays while downloading). The clinic's microphone and the surgeon's talk-back
are decoded and mixed into one AAC track (Opus in MP4 is not what most players expect, and a
second track is one most players never play). During a freeze the picture holds the frame shown
when the surgeon froze it (the live rendition's rule), with the marks drawn during the freeze.

Segments are joined end to end (the time a publisher was away is not reproduced as black video);
each segment's marks are placed with its own ``offset_s`` on the recording clock.

``ExportJobs`` runs exports one at a time in a worker thread (never on the event loop), at a lower
CPU priority than the live relay, with progress (0–100 %) readable at any time. The result is
stored beside the recording: ``<recording>/exports/<job>.mp4`` (written as ``.partial`` and
renamed when complete) plus ``<job>.json`` (state, who asked, when, size).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from persistence.files import Sync, move_into_place, write_json_atomic
from persistence.times import utc_now_iso
from relay.overlay import draw_yuv420
from relay.rendition import plane_array

from .timeline import FreezeSpan, Timeline

logger = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
JOB_ID = re.compile(r"[A-Za-z0-9_-]{12}")
VIDEO_TIME_BASE = Fraction(1, 90_000)
AUDIO_RATE = 48_000
AAC_FRAME = 1024
AUDIO_SETTLE_S = 2.0
"Audio older than this behind the newest demuxed packet is final: mixed, encoded, written."
X264_OPTIONS = {"crf": "20", "preset": "veryfast"}
ENCODER_THREADS = 2
NICE = 10
"Export threads run this much nicer than the server: the live relay keeps its CPU."


class ExportCancelled(Exception):
    pass


@dataclass(frozen=True)
class ExportSource:
    """One segment file and where its time 0 sits on the recording clock."""

    path: Path
    offset_s: float
    frames: int = 0
    "Video frames the manifest counted (for progress; 0 if unknown)."


@dataclass
class ExportResult:
    frames: int = 0
    audio_samples: int = 0
    duration_s: float = 0.0
    bytes: int = 0
    width: int = 0
    height: int = 0


class _Mixer:
    """Sums stereo float audio placed by sample position; hands out finished stretches."""

    def __init__(self) -> None:
        self.base = 0
        self.buffer = np.zeros((2, 0), np.float32)

    def add(self, start: int, samples: np.ndarray) -> None:
        if start < self.base:  # already written out (it came too late): drop the overlap
            samples = samples[:, self.base - start :]
            start = self.base
        if samples.shape[1] == 0:
            return
        end = start - self.base + samples.shape[1]
        if end > self.buffer.shape[1]:
            grown = np.zeros((2, end), np.float32)
            grown[:, : self.buffer.shape[1]] = self.buffer
            self.buffer = grown
        self.buffer[:, start - self.base : end] += samples

    def take(self, until: int) -> np.ndarray:
        """Samples from ``base`` up to ``until`` (silence where nothing was added)."""
        count = max(0, until - self.base)
        out = np.zeros((2, count), np.float32)
        have = min(count, self.buffer.shape[1])
        out[:, :have] = self.buffer[:, :have]
        self.buffer = self.buffer[:, have:]
        self.base = until
        return np.clip(out, -1.0, 1.0)


def _stereo(frame: av.AudioFrame, resampler: av.AudioResampler) -> list[tuple[float, np.ndarray]]:
    """(file time, 2 × n float samples) pieces of a decoded frame at 48 kHz stereo."""
    out, start, done = [], float(frame.time or 0.0), 0
    for piece in resampler.resample(frame):
        data = piece.to_ndarray().astype(np.float32).reshape(2, -1)
        out.append((start + done / AUDIO_RATE, data))
        done += data.shape[1]
    return out


def _first_size(sources: Sequence[ExportSource]) -> tuple[int, int]:
    for source in sources:
        with contextlib.suppress(av.FFmpegError, OSError), av.open(str(source.path)) as container:
            if container.streams.video:
                ctx = container.streams.video[0].codec_context
                if ctx.width and ctx.height:
                    return ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
                for frame in container.decode(video=0):
                    return frame.width - frame.width % 2, frame.height - frame.height % 2
    raise ValueError("the recording has no video to export")


def export_annotated(
    sources: Sequence[ExportSource],
    timeline: Timeline,
    output: Path,
    on_progress: Callable[[float], None] = lambda fraction: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> ExportResult:
    """Write ``output`` (MP4). Blocking and CPU-heavy: call it in a worker thread. The file
    appears only when complete (written as ``<output>.partial`` first)."""
    width, height = _first_size(sources)
    partial = output.with_name(output.name + ".partial")
    expected = sum(s.frames for s in sources)
    result = ExportResult(width=width, height=height)
    out = av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        video = out.add_stream("libx264", rate=30, options=dict(X264_OPTIONS))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = VIDEO_TIME_BASE
        video.codec_context.thread_count = ENCODER_THREADS
        video.time_base = VIDEO_TIME_BASE
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.bit_rate = 128_000
        mixer = _Mixer()
        written_samples = 0
        last_pts = -1
        shift = 0.0  # output time of the current source's time 0 (segments end to end)

        def write_audio(until_s: float, final: bool = False) -> None:
            nonlocal written_samples
            until = int(until_s * AUDIO_RATE)
            usable = until if final else until - (until - mixer.base) % AAC_FRAME
            if final:
                usable += (-(usable - mixer.base)) % AAC_FRAME  # whole AAC frames
            if usable <= mixer.base:
                return
            samples = mixer.take(usable)
            for i in range(0, samples.shape[1], AAC_FRAME):
                chunk = np.ascontiguousarray(samples[:, i : i + AAC_FRAME])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = AUDIO_RATE
                frame.pts = written_samples
                frame.time_base = Fraction(1, AUDIO_RATE)
                written_samples += chunk.shape[1]
                out.mux(audio.encode(frame))

        for source in sources:
            end_s = shift
            with av.open(str(source.path)) as container:
                streams = [s for s in container.streams if s.type in ("video", "audio")]
                resamplers = {
                    s.index: av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
                    for s in streams
                    if s.type == "audio"
                }
                frozen: tuple[FreezeSpan, av.VideoFrame] | None = None
                for packet in container.demux(streams):
                    if cancelled():
                        raise ExportCancelled
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:
                        continue  # a damaged packet (e.g. the torn end of an interrupted file)
                    for frame in frames:
                        if frame.time is None:
                            continue
                        t_file = float(frame.time)
                        if isinstance(frame, av.AudioFrame):
                            for start_s, data in _stereo(frame, resamplers[packet.stream.index]):
                                mixer.add(int(round((shift + start_s) * AUDIO_RATE)), data)
                                end_s = max(end_s, shift + start_s + data.shape[1] / AUDIO_RATE)
                            continue
                        if not isinstance(frame, av.VideoFrame):
                            continue
                        t_recording = source.offset_s + t_file
                        span = timeline.freeze_at(t_recording)
                        if span is None:
                            frozen = None
                        elif frozen is None or frozen[0] is not span:
                            frozen = (span, frame)
                        shown = frozen[1] if frozen is not None else frame
                        picture = _burn_in(shown, width, height, timeline.visible(t_recording))
                        pts = max(last_pts + 1, int(round((shift + t_file) * 90_000)))
                        last_pts = pts
                        picture.pts = pts
                        picture.time_base = VIDEO_TIME_BASE
                        picture.pict_type = av.video.frame.PictureType.NONE
                        out.mux(video.encode(picture))
                        result.frames += 1
                        end_s = max(end_s, shift + t_file + 1 / 30)
                        if expected:
                            on_progress(min(0.99, result.frames / expected))
                    write_audio(max(0.0, end_s - AUDIO_SETTLE_S))
            shift = end_s
        write_audio(shift, final=True)
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
        result.audio_samples = written_samples
        result.duration_s = round(shift, 3)
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    out.close()
    move_into_place(partial, output, sync=Sync.NONE)
    result.bytes = output.stat().st_size
    on_progress(1.0)
    return result


def _burn_in(frame: av.VideoFrame, width: int, height: int, marks: Sequence[Any]) -> av.VideoFrame:
    """A new yuv420p frame of the output size with ``marks`` drawn in (never draws on the decoded
    frame itself: it may be the decoder's reference picture, or the held freeze frame)."""
    source = frame.reformat(width=width, height=height, format="yuv420p")
    picture = av.VideoFrame(width, height, "yuv420p")
    planes = [plane_array(p) for p in picture.planes]
    for target, plane in zip(planes, source.planes, strict=True):
        np.copyto(target, plane_array(plane))
    if marks:
        draw_yuv420(planes, marks)
    return picture


# -- jobs ----------------------------------------------------------------------------------------


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class ExportJob:
    id: str
    recording_id: str
    requested_by: str
    created_at: str
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    "0–100 %."
    finished_at: str | None = None
    bytes: int | None = None
    duration_s: float | None = None
    error: str | None = None
    directory: Path = field(default=Path("."), repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def file(self) -> Path:
        return self.directory / f"{self.id}.mp4"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recording_id": self.recording_id,
            "requested_by": self.requested_by,
            "created_at": self.created_at,
            "state": str(self.state),
            "progress": round(self.progress, 1),
            "finished_at": self.finished_at,
            "bytes": self.bytes,
            "duration_s": self.duration_s,
            "error": self.error,
        }

    def save(self, **changes: Any) -> None:
        """Write ``<job>.json`` atomically (blocking), with ``changes`` applied to the file only
        (a finished job is saved first and only then shown finished, so a client that saw it
        done finds it done on disk too)."""
        self.directory.mkdir(parents=True, exist_ok=True)
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
                state=JobState(data["state"]),
                progress=float(data.get("progress", 0.0)),
                finished_at=data.get("finished_at"),
                bytes=data.get("bytes"),
                duration_s=data.get("duration_s"),
                error=data.get("error"),
                directory=directory,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if job.state in (JobState.QUEUED, JobState.RUNNING):
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

    def start(
        self,
        recording_id: str,
        recording_directory: Path,
        requested_by: str,
        prepare: Callable[[], tuple[list[ExportSource], Timeline]],
    ) -> ExportJob:
        """Queue an export (returns at once). ``prepare`` runs in the worker and returns the
        sources and timeline (reading the manifest and the annotation log is file work too). A
        recording already being exported gets that job back instead of a second one."""
        if self._closed:
            raise RuntimeError("the server is stopping")
        for job in self._jobs.values():
            if job.recording_id == recording_id and job.state in (
                JobState.QUEUED,
                JobState.RUNNING,
            ):
                return job
        job = ExportJob(
            id=secrets.token_urlsafe(9),
            recording_id=recording_id,
            requested_by=requested_by,
            created_at=utc_now_iso(),
            directory=exports_dir(recording_directory),
        )
        self._jobs[job.id] = job
        self._pool.submit(self._run, job, prepare)
        return job

    def get(self, job_id: str) -> ExportJob | None:
        """A job of this server run (None: look on disk with ``ExportJob.load``)."""
        return self._jobs.get(job_id)

    def close(self, wait: bool = True) -> None:
        """Cancel running and queued exports (their partial files are removed)."""
        self._closed = True
        for job in self._jobs.values():
            job._cancel.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _run(self, job: ExportJob, prepare: Callable[[], tuple[list[ExportSource], Timeline]]):
        if job._cancel.is_set():
            return
        started = time.monotonic()
        job.state = JobState.RUNNING
        try:
            job.save()
            sources, timeline = prepare()

            def progress(fraction: float) -> None:
                job.progress = 100.0 * fraction

            result = export_annotated(sources, timeline, job.file, progress, job._cancel.is_set)
            job.bytes, job.duration_s = result.bytes, result.duration_s
            job.finished_at = utc_now_iso()
            job.save(state=JobState.DONE, progress=100.0)
            job.progress, job.state = 100.0, JobState.DONE
            logger.info(
                "Export %s of recording %s done: %d frames, %.1f s of video in %.1f s",
                job.id,
                job.recording_id,
                result.frames,
                result.duration_s,
                time.monotonic() - started,
            )
        except ExportCancelled:
            job.state, job.error = JobState.FAILED, "cancelled: the server is stopping"
        except Exception as exc:
            logger.exception("Export %s of recording %s failed", job.id, job.recording_id)
            job.state, job.error = JobState.FAILED, f"{type(exc).__name__}: {exc}"
        if job.state is JobState.FAILED:
            job.finished_at = utc_now_iso()
            with contextlib.suppress(OSError):
                job.save()


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
