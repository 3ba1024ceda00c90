"""Replay of recordings: listing, detail with the annotation timeline, media with HTTP Range,
thumbnails, download of the originals, annotated exports, and the audit trail (docs/replay.md).

    GET  /api/recordings[?consultation=&since=&until=]      list
    GET  /api/recordings/{id}                               manifest, integrity, timeline, snapshots
    GET  /api/recordings/{id}/media-token                   short-lived token for <video src>
    GET  /api/recordings/{id}/media/{segment}[?t=]          one segment file (Range → 206)
    GET  /api/recordings/{id}/media/{segment}/talkback[?t=] its talk-back track (audio/webm)
    GET  /api/recordings/{id}/thumbnail.jpg                 first keyframe, made once
    GET  /api/recordings/{id}/download                      the original file (several: a zip)
    POST /api/recordings/{id}/exports                       → 202 {job}: annotated MP4
    GET  /api/recordings/{id}/exports/{job}[/file]          progress / the MP4
    GET  /api/consultations/{cid}/audit                     the audit trail (admin)

Access: an admin (whose token covers the consultation), or a member of the recording's
consultation whose token carries ``may_replay``. Checks run in this order: token (401), id shape
(400, before anything touches the index or the disk), replay right (403), recording exists (404),
consultation matches (403). Every file name served comes from the index or is made here — never
from request text. Disk, hashing and PyAV work run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import shutil
import threading
import zipfile
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from recorder.annotation_log import FILENAME as ANNOTATION_LOG
from recorder.annotation_log import read_annotation_log
from recorder.export import JOB_ID, ExportJob, ExportJobs, ExportSource, JobState, exports_dir
from recorder.index import RecordingRow, SegmentRow
from recorder.manifest import (
    MANIFEST,
    Manifest,
    read_manifest,
    recording_dir,
    valid_recording_id,
)
from recorder.storage import consultation_dir
from recorder.thumbnail import THUMBNAIL, extract_talkback, make_thumbnail, talkback_filename
from recorder.timeline import RecordingClock, Timeline, build_timeline
from recorder.verify import RecordingCheck, verify_recording
from relay import ConsultationId
from signaling.auth.grants import Forbidden, Grant, TokenInvalid
from signaling.auth.media_tokens import MEDIA_QUERY, MediaTokens, install_access_log_redaction
from signaling.auth.request import authenticate, path_cid
from signaling.auth.secret import load_or_create_secret
from signaling.db.audit import AuditAction, AuditTrail
from signaling.db.store import DB_FILENAME
from signaling.http.api import find_consultation
from signaling.http.errors import ApiError
from signaling.http.snapshots import load_snapshots, snapshot_dir
from signaling.keys import RECORDINGS, SETTINGS, STORE

logger = logging.getLogger(__name__)

MIME_TYPES = {"webm": "video/webm", "mp4": "video/mp4"}
_SEGMENT_FILE = re.compile(r"segment-[0-9]{3}(?:\.repaired)?\.(webm|mp4)")
ZIP_CHUNK = 1 << 20
ZIP_CHUNKS_IN_FLIGHT = 8
INTEGRITY_CACHE = 256


class ReplayState:
    """Per-app replay plumbing: media tokens, audit trail, export jobs, caches."""

    def __init__(self, tokens: MediaTokens, audit: AuditTrail, exports: ExportJobs) -> None:
        self.tokens = tokens
        self.audit = audit
        self.exports = exports
        self.file_locks: dict[str, asyncio.Lock] = {}
        self.integrity: OrderedDict[str, tuple[Any, RecordingCheck]] = OrderedDict()


REPLAY = web.AppKey("replay", ReplayState)


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    secret = settings.secret or load_or_create_secret(settings.data_dir)
    app[REPLAY] = ReplayState(
        MediaTokens(secret), AuditTrail(settings.data_dir / DB_FILENAME), ExportJobs()
    )
    app.on_cleanup.append(_close)
    install_access_log_redaction()
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_get("/api/recordings/{rid}", get_recording)
    app.router.add_get("/api/recordings/{rid}/media-token", get_media_token)
    app.router.add_get("/api/recordings/{rid}/media/{seq:[0-9]{1,4}}", get_media)
    app.router.add_get("/api/recordings/{rid}/media/{seq:[0-9]{1,4}}/talkback", get_talkback)
    app.router.add_get("/api/recordings/{rid}/thumbnail.jpg", get_thumbnail)
    app.router.add_get("/api/recordings/{rid}/download", download)
    app.router.add_post("/api/recordings/{rid}/exports", start_export)
    app.router.add_get("/api/recordings/{rid}/exports/{job}", get_export)
    app.router.add_get("/api/recordings/{rid}/exports/{job}/file", get_export_file)
    app.router.add_get("/api/consultations/{cid}/audit", get_audit)


async def _close(app: web.Application) -> None:
    state = app[REPLAY]
    await asyncio.to_thread(state.exports.close)
    await state.audit.close()


# -- access --------------------------------------------------------------------------------------


def _valid_id(request: web.Request) -> str:
    rid = request.match_info["rid"]
    if not valid_recording_id(rid):
        raise ApiError(400, "bad-request", "not a recording id")
    return rid


async def _row(request: web.Request, rid: str) -> RecordingRow:
    row = await request.app[RECORDINGS].index.get(rid)
    if row is None:
        raise ApiError(404, "not-found", "unknown recording")
    return row


async def _authorised(request: web.Request) -> tuple[Grant, RecordingRow]:
    """The caller's grant and the recording, in the order of the module doc."""
    grant = authenticate(request)
    rid = _valid_id(request)
    grant.ensure_replay_somewhere()
    row = await _row(request, rid)
    grant.ensure_replay(row.consultation_id)
    return grant, row


async def _audit(
    request: web.Request,
    grant: Grant,
    row: RecordingRow,
    action: AuditAction,
    detail: str | None = None,
) -> None:
    await request.app[REPLAY].audit.record(
        row.consultation_id, grant.identity, grant.name, str(grant.role), action, row.id, detail
    )


def _directory(request: web.Request, rid: str) -> Path:
    return recording_dir(request.app[SETTINGS].data_dir, rid)


# -- list and detail -----------------------------------------------------------------------------


async def list_recordings(request: web.Request) -> web.Response:
    grant = authenticate(request)
    grant.ensure_replay_somewhere()
    asked = request.query.get("consultation")
    cid = None if asked is None else ConsultationId(asked)
    since = _date_bound(request.query.get("since"), "since", end=False)
    until = _date_bound(request.query.get("until"), "until", end=True)
    if cid is not None:
        grant.ensure_replay(cid)
    elif not grant.sees_every_consultation:
        cid = grant.cid  # everyone but an all-consultations admin: their own
    rows = await request.app[RECORDINGS].index.list(cid)
    rows = [
        row
        for row in rows
        if grant.covers(row.consultation_id) and _within(row.started_at, since, until)
    ]
    rows.sort(key=lambda r: r.started_at, reverse=True)  # newest first
    data_dir = request.app[SETTINGS].data_dir
    manifests = await asyncio.to_thread(
        lambda: [read_manifest(recording_dir(data_dir, r.id)) for r in rows]
    )
    return web.json_response(
        {"recordings": [_summary(row, m) for row, m in zip(rows, manifests, strict=True)]}
    )


def _date_bound(value: str | None, name: str, end: bool) -> float | None:
    """``YYYY-MM-DD`` (a whole UTC day: ``until`` includes it) or an ISO 8601 date-time."""
    if value is None or value == "":
        return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return (day + timedelta(days=1) if end else day).timestamp()
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            400, "bad-request", f"{name} must be a date (YYYY-MM-DD) or ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _within(started_at: str, since: float | None, until: float | None) -> bool:
    try:
        at = datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return False
    return (since is None or at >= since) and (until is None or at < until)


def _summary(row: RecordingRow, manifest: Manifest | None) -> dict[str, Any]:
    base = f"/api/recordings/{row.id}"
    consultation = dict(manifest.consultation) if manifest else {"id": row.consultation_id}
    return {
        "id": row.id,
        "consultation": {"id": row.consultation_id, "title": consultation.get("title")},
        "status": row.status,
        "stop_reason": row.stop_reason,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": row.duration_s,
        "bytes": row.bytes,
        "segments": len(row.segments),
        "video_codec": row.video_codec,
        "container": row.container,
        "mime_type": MIME_TYPES[row.container],
        "participants": [
            {k: p.get(k) for k in ("identity", "name", "role")}
            for p in (manifest.participants if manifest else [])
        ],
        "url": base,
        "thumbnail": f"{base}/thumbnail.jpg",
    }


async def get_recording(request: web.Request) -> web.Response:
    _, row = await _authorised(request)
    data_dir = request.app[SETTINGS].data_dir
    directory = recording_dir(data_dir, row.id)
    manifest = await asyncio.to_thread(read_manifest, directory)
    check = await _integrity(request, row)
    timeline, snapshots = await asyncio.to_thread(_timeline_and_snapshots, data_dir, row, manifest)
    base = f"/api/recordings/{row.id}"
    talkback = (
        {s.seq: s.audio_packets.get("talkback", 0) > 0 for s in manifest.segments}
        if manifest
        else {}
    )
    return web.json_response(
        {
            "recording": _summary(row, manifest),
            "manifest": manifest.to_json() if manifest else None,
            "integrity": check.to_json(),
            "media": [
                {
                    "segment": s.seq,
                    "url": f"{base}/media/{s.seq}",
                    "mime_type": MIME_TYPES[row.container],
                    "status": s.status,
                    "started_at": s.started_at,
                    "offset_s": s.offset_s,
                    "duration_s": s.duration_s,
                    "bytes": s.bytes,
                    "repaired": s.repaired_file is not None,
                    "talkback": f"{base}/media/{s.seq}/talkback"
                    if talkback.get(s.seq, True) and s.status != "open"
                    else None,
                }
                for s in row.segments
            ],
            "gaps": manifest.gaps() if manifest else [],
            "timeline": timeline.to_json() if timeline else {"marks": [], "freezes": []},
            "snapshots": snapshots,
            "links": {
                "media_token": f"{base}/media-token",
                "thumbnail": f"{base}/thumbnail.jpg",
                "download": f"{base}/download",
                "exports": f"{base}/exports",
            },
        }
    )


def _timeline_and_snapshots(
    data_dir: Path, row: RecordingRow, manifest: Manifest | None
) -> tuple[Timeline | None, list[dict[str, Any]]]:
    """The recording's annotation timeline and its consultation's snapshots taken during it
    (blocking: the log and snapshot files are read here)."""
    if manifest is None:
        return None, []
    cid = row.consultation_id
    entries = read_annotation_log(consultation_dir(data_dir, cid) / ANNOTATION_LOG)
    timeline = build_timeline(entries, manifest)
    clock = RecordingClock(manifest)
    upper = float("inf") if row.status == "recording" else clock.span_s + 1.0
    snapshots = []
    for snapshot in load_snapshots(snapshot_dir(data_dir, cid)):
        t = clock.wall(snapshot.created_at)
        if t is not None and -1.0 <= t <= upper:
            snapshots.append({**snapshot.to_json(cid), "t": round(t, 3)})
    return timeline, snapshots


async def _integrity(request: web.Request, row: RecordingRow) -> RecordingCheck:
    """``recorder.verify`` of the recording, re-hashed only when a file changed: the cache key
    holds each file's size, mtime, ctime and inode (ctime cannot be set back by a user) and the
    index row, so any write to a file — or to the index — makes the next answer re-check."""
    state = request.app[REPLAY]
    data_dir = request.app[SETTINGS].data_dir
    directory = recording_dir(data_dir, row.id)

    def signature() -> tuple[Any, ...]:
        names = [MANIFEST] + [s.file for s in row.segments]
        names += [s.repaired_file for s in row.segments if s.repaired_file]
        stats = []
        for name in names:
            try:
                st = os.stat(directory / name)
                stats.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            except OSError:
                stats.append((name, None))
        return (row, tuple(stats))

    key = await asyncio.to_thread(signature)
    cached = state.integrity.get(row.id)
    if cached is not None and cached[0] == key:
        state.integrity.move_to_end(row.id)
        return cached[1]
    check = await asyncio.to_thread(verify_recording, data_dir, row)
    state.integrity[row.id] = (key, check)
    while len(state.integrity) > INTEGRITY_CACHE:
        state.integrity.popitem(last=False)
    if not check.ok:
        failed = [f.file for f in check.files if f.verdict.failed]
        logger.warning("Recording %s fails verification: %s", row.id, ", ".join(failed))
    return check


# -- media ---------------------------------------------------------------------------------------


async def get_media_token(request: web.Request) -> web.Response:
    """A short-lived token for the ``<video>`` element (see signaling/media_tokens.py). Issuing
    one is what the audit trail records as a replay."""
    grant, row = await _authorised(request)
    token, expires_at = request.app[REPLAY].tokens.issue(grant, row.id)
    await _audit(request, grant, row, AuditAction.REPLAY, "media token")
    base = f"/api/recordings/{row.id}/media"
    return web.json_response(
        {
            "token": token,
            "expires_at": expires_at,
            "media": [
                {
                    "segment": s.seq,
                    "url": f"{base}/{s.seq}?{MEDIA_QUERY}={token}",
                    "talkback": f"{base}/{s.seq}/talkback?{MEDIA_QUERY}={token}",
                }
                for s in row.segments
            ],
        },
        headers={"Cache-Control": "no-store"},
    )


async def _media_access(request: web.Request) -> RecordingRow:
    """Bearer (checked like every replay route) or the ``?t=`` media token of this recording."""
    if hdrs.AUTHORIZATION in request.headers:
        grant, row = await _authorised(request)
        try:
            first_bytes = request.http_range.start in (None, 0)
        except ValueError:  # a malformed Range: FileResponse answers 416
            first_bytes = False
        if first_bytes:
            await _audit(request, grant, row, AuditAction.REPLAY, f"media {request.path}")
        return row
    if MEDIA_QUERY in request.query:
        media = request.app[REPLAY].tokens.verify(request.query[MEDIA_QUERY])
        rid = _valid_id(request)
        if media.recording_id != rid:
            raise Forbidden("this media token is for another recording")
        return await _row(request, rid)
    raise TokenInvalid("missing bearer token (or media token from .../media-token)")


def _segment(request: web.Request, row: RecordingRow) -> SegmentRow:
    seq = int(request.match_info["seq"])
    segment = next((s for s in row.segments if s.seq == seq), None)
    if segment is None:
        raise ApiError(404, "not-found", "unknown segment")
    return segment


_MEDIA_HEADERS = {
    hdrs.CACHE_CONTROL: "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Disposition": "inline",
}


async def get_media(request: web.Request) -> web.StreamResponse:
    """One segment file, with HTTP Range (``FileResponse``: 206 + Content-Range, 416 past the
    end). The finalized ``.repaired`` copy of an interrupted segment is served when there is one
    (it has a duration and a seek index); the original stays what ``download`` gives."""
    row = await _media_access(request)
    segment = _segment(request, row)
    directory = _directory(request, row.id)
    for name in (segment.repaired_file, segment.file):
        path = _segment_path(directory, name)
        if path is not None and await asyncio.to_thread(path.is_file):
            return web.FileResponse(
                path, headers={hdrs.CONTENT_TYPE: MIME_TYPES[row.container], **_MEDIA_HEADERS}
            )
    raise ApiError(404, "not-found", "this segment has no file (nothing was recorded in it)")


async def get_talkback(request: web.Request) -> web.StreamResponse:
    """The segment's talk-back track (the surgeon's microphone) as audio-only WebM, with Range.
    A ``<video>`` plays only a file's default audio track (the clinic's), so the page plays this
    in an ``<audio>`` element kept at the video's time. Stream-copied once, kept beside the
    recording as ``talkback-NNN.webm``."""
    row = await _media_access(request)
    segment = _segment(request, row)
    directory = _directory(request, row.id)
    target = directory / talkback_filename(segment.seq)
    source = next(
        (
            path
            for name in (segment.repaired_file, segment.file)
            if (path := _segment_path(directory, name)) is not None
        ),
        None,
    )
    if source is None or segment.status == "open":
        raise ApiError(404, "not-found", "no talk-back for this segment (yet)")
    lock = request.app[REPLAY].file_locks.setdefault(f"{row.id}/{target.name}", asyncio.Lock())
    async with lock:
        if not await asyncio.to_thread(target.is_file):
            if not await asyncio.to_thread(source.is_file) or not await asyncio.to_thread(
                extract_talkback, source, target
            ):
                raise ApiError(404, "not-found", "the surgeon did not speak in this segment")
    return web.FileResponse(target, headers={hdrs.CONTENT_TYPE: "audio/webm", **_MEDIA_HEADERS})


def _segment_path(directory: Path, name: str | None) -> Path | None:
    """``directory/name`` for a name of the recorder's shape only (the index is trusted, but a
    damaged row must not become a path elsewhere)."""
    if name is None or not _SEGMENT_FILE.fullmatch(name):
        return None
    return directory / name


async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    _, row = await _authorised(request)
    state = request.app[REPLAY]
    directory = _directory(request, row.id)
    target = directory / THUMBNAIL
    lock = state.file_locks.setdefault(f"{row.id}/{THUMBNAIL}", asyncio.Lock())
    async with lock:
        if not await asyncio.to_thread(target.is_file):
            sources = _playable_files(directory, row.segments)
            if not await asyncio.to_thread(make_thumbnail, sources, target):
                raise ApiError(404, "not-found", "the recording has no picture yet")
    return web.FileResponse(
        target,
        headers={
            hdrs.CONTENT_TYPE: "image/jpeg",
            hdrs.CACHE_CONTROL: "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _playable_files(directory: Path, segments: tuple[SegmentRow, ...]) -> list[Path]:
    files = []
    for segment in segments:
        for name in (segment.repaired_file, segment.file):
            path = _segment_path(directory, name)
            if path is not None:
                files.append(path)
                break
    return files


# -- download ------------------------------------------------------------------------------------


async def download(request: web.Request) -> web.StreamResponse:
    """The original file of a one-segment recording; otherwise a zip (stored, not compressed:
    media does not compress) of ``manifest.json`` and every segment in order, each finalized
    ``.repaired`` copy after its original."""
    grant, row = await _authorised(request)
    directory = _directory(request, row.id)

    def present() -> list[Path]:
        paths = []
        for segment in row.segments:
            for name in (segment.file, segment.repaired_file):
                path = _segment_path(directory, name)
                if path is not None and path.is_file():
                    paths.append(path)
        return paths

    files = await asyncio.to_thread(present)
    if not files:
        raise ApiError(404, "not-found", "the recording has no media file yet")
    await _audit(request, grant, row, AuditAction.DOWNLOAD, ", ".join(p.name for p in files))
    if len(files) == 1:
        extension = files[0].suffix
        return web.FileResponse(
            files[0],
            headers={
                hdrs.CONTENT_TYPE: MIME_TYPES[row.container],
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="endolink-{row.id}{extension}"',
                hdrs.CACHE_CONTROL: "private, no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
    entries = [(MANIFEST, directory / MANIFEST)] + [(p.name, p) for p in files]
    return await _stream_zip(request, f"endolink-{row.id}.zip", entries)


class _ChunkWriter(io.RawIOBase):
    """A write-only, unseekable file handing its bytes to the event loop in bounded chunks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        self._loop = loop
        self._queue = queue
        self._buffer = bytearray()
        self.room = threading.Semaphore(ZIP_CHUNKS_IN_FLIGHT)
        self.aborted = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.aborted:
            raise OSError("the client went away")
        self._buffer += data
        if len(self._buffer) >= ZIP_CHUNK:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self.room.acquire()
            if self.aborted:
                raise OSError("the client went away")
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def finish(self) -> None:
        self._hand_over()


async def _stream_zip(
    request: web.Request, filename: str, entries: list[tuple[str, Path]]
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    writer = _ChunkWriter(loop, queue)

    def produce() -> None:
        try:
            with zipfile.ZipFile(writer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, path in entries:
                    info = zipfile.ZipInfo(name, _zip_time(path))
                    with (
                        path.open("rb") as source,
                        archive.open(info, "w", force_zip64=True) as sink,
                    ):
                        shutil.copyfileobj(source, sink, ZIP_CHUNK)
            writer.finish()
        except OSError as exc:
            if not writer.aborted:
                logger.warning("zip of %s failed: %s", filename, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "application/zip",
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}"',
            hdrs.CACHE_CONTROL: "private, no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    thread = threading.Thread(target=produce, name=f"zip {filename}", daemon=True)
    thread.start()
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
            writer.room.release()
    finally:
        writer.aborted = True
        for _ in range(ZIP_CHUNKS_IN_FLIGHT + 1):
            writer.room.release()  # unblock the producer so it sees ``aborted`` and stops
    await response.write_eof()
    return response


def _zip_time(path: Path) -> tuple[int, int, int, int, int, int]:
    with contextlib.suppress(OSError):
        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if at.year >= 1980:
            return (at.year, at.month, at.day, at.hour, at.minute, at.second)
    return (1980, 1, 1, 0, 0, 0)


# -- annotated export ----------------------------------------------------------------------------


async def start_export(request: web.Request) -> web.Response:
    grant, row = await _authorised(request)
    if not any(s.frames or s.status == "open" for s in row.segments):
        raise ApiError(409, "nothing-to-export", "the recording has no video")
    data_dir = request.app[SETTINGS].data_dir
    directory = recording_dir(data_dir, row.id)

    def prepare() -> tuple[list[ExportSource], Timeline]:
        manifest = read_manifest(directory)
        if manifest is None:
            raise ValueError("the recording's manifest is missing")
        timeline, _ = _timeline_and_snapshots(data_dir, row, manifest)
        assert timeline is not None
        frames = {s.seq: s.frames for s in manifest.segments}
        sources = []
        for segment in row.segments:
            for name in (segment.repaired_file, segment.file):
                path = _segment_path(directory, name)
                if path is not None and path.is_file():
                    sources.append(ExportSource(path, segment.offset_s, frames.get(segment.seq, 0)))
                    break
        if not sources:
            raise ValueError("the recording has no media file")
        return sources, timeline

    try:
        job = request.app[REPLAY].exports.start(row.id, directory, grant.identity, prepare)
    except RuntimeError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    await _audit(request, grant, row, AuditAction.EXPORT, f"job {job.id}")
    body = _job_json(job)
    return web.json_response({"job": body}, status=202, headers={hdrs.LOCATION: body["status_url"]})


async def _job(request: web.Request, row: RecordingRow) -> ExportJob:
    job_id = request.match_info["job"]
    if not JOB_ID.fullmatch(job_id):
        raise ApiError(400, "bad-request", "not an export job id")
    job = request.app[REPLAY].exports.get(job_id)
    if job is None:
        directory = exports_dir(_directory(request, row.id))
        job = await asyncio.to_thread(ExportJob.load, directory, job_id)
    if job is None or job.recording_id != row.id:
        raise ApiError(404, "not-found", "unknown export job")
    return job


def _job_json(job: ExportJob) -> dict[str, Any]:
    base = f"/api/recordings/{job.recording_id}/exports/{job.id}"
    return {
        **job.to_json(),
        "status_url": base,
        "url": f"{base}/file" if job.state is JobState.DONE else None,
    }


async def get_export(request: web.Request) -> web.Response:
    _, row = await _authorised(request)
    job = await _job(request, row)
    return web.json_response({"job": _job_json(job)}, headers={"Cache-Control": "no-store"})


async def get_export_file(request: web.Request) -> web.StreamResponse:
    grant, row = await _authorised(request)
    job = await _job(request, row)
    if job.state is not JobState.DONE or not await asyncio.to_thread(job.file.is_file):
        raise ApiError(409, "not-ready", f"the export is {job.state}")
    await _audit(request, grant, row, AuditAction.EXPORT_DOWNLOAD, f"job {job.id}")
    return web.FileResponse(
        job.file,
        headers={
            hdrs.CONTENT_TYPE: "video/mp4",
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="endolink-{row.id}-annotated.mp4"',
            hdrs.CACHE_CONTROL: "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- audit trail ---------------------------------------------------------------------------------


async def get_audit(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin()
    grant.ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    trail = await request.app[REPLAY].audit.trail(cid)
    return web.json_response({"audit": [entry.to_json() for entry in trail]})
