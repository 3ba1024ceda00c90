"""Annotated exports over HTTP: start one (202 + its status URL), follow its progress, fetch the
MP4, cancel it; the same status, file and cancel routes serve DICOM exports (``dicom.py``), for
an admin covering the consultation only (the ZIP holds the patient's identity). The jobs
themselves run in the recorder (``recorder/jobs.py``, through the library).

Both blur the spans filmed outside the body unless the request says ``?include_out_of_body=1``:
a copy that shows the room and the people in it leaves the server, so only an admin covering the
consultation may ask (403 otherwise), and the audit entry says the spans were kept."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from recorder.index import RecordingRow
from recorder.jobs import ExportJob, JobBusy, JobKind, JobState
from recorder.storage import DiskFull
from signaling.auth.grants import Grant
from signaling.db.audit import AuditAction
from signaling.http.errors import ApiError
from signaling.keys import REPLAY
from signaling.replay import audit
from signaling.replay.access import authorised
from signaling.replay.download import attachment_headers

KEPT_OUT_OF_BODY = "out-of-body kept"
"Said in the audit entry of an export that keeps the spans filmed outside the body."


def include_out_of_body(request: web.Request, grant: Grant, row: RecordingRow) -> bool:
    """``?include_out_of_body=1`` (``0`` or absent: blurred); only an admin of the consultation
    may keep those spans."""
    said = request.query.get("include_out_of_body", "0")
    if said not in ("0", "1"):
        raise ApiError(400, "bad-request", "include_out_of_body must be 0 or 1")
    if said == "1":
        grant.ensure_admin_of(row.consultation_id)
    return said == "1"


async def start_export(request: web.Request) -> web.Response:
    grant, row = await authorised(request)
    keep = include_out_of_body(request, grant, row)
    library = request.app[REPLAY].library
    if not library.has_video(row):
        raise ApiError(409, "nothing-to-export", "the recording has no video")
    try:
        await library.check_export_space()
    except DiskFull as exc:
        raise ApiError(507, "disk-full", str(exc)) from None
    try:
        job = library.start_export(row, grant.identity, keep)
    except JobBusy as exc:
        raise ApiError(409, "export-running", str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    detail = f"job {job.id}, {KEPT_OUT_OF_BODY}" if keep else f"job {job.id}"
    await audit.record(request, grant, row, AuditAction.EXPORT, detail)
    body = job_json(job)
    return web.json_response({"job": body}, status=202, headers={hdrs.LOCATION: body["status_url"]})


async def get_export(request: web.Request) -> web.Response:
    grant, row = await authorised(request)
    job = await _job(request, grant, row)
    return web.json_response({"job": job_json(job)}, headers={"Cache-Control": "no-store"})


async def cancel_export(request: web.Request) -> web.Response:
    """DELETE: a queued or running export stops (its partial file removed, the recording
    untouched); answers once it has, with the job (``cancelled``). A finished one: 409."""
    grant, row = await authorised(request)
    job = await _job(request, grant, row)
    if job.state not in (JobState.QUEUED, JobState.RUNNING):
        raise ApiError(409, "not-running", f"the export is already {job.state}")
    if not await request.app[REPLAY].library.cancel_export(job):
        raise ApiError(503, "still-stopping", "the export is still stopping: ask again shortly")
    await audit.record(request, grant, row, AuditAction.EXPORT, f"job {job.id} cancelled")
    return web.json_response({"job": job_json(job)})


async def get_export_file(request: web.Request) -> web.StreamResponse:
    grant, row = await authorised(request)
    job = await _job(request, grant, row)
    file = await request.app[REPLAY].library.export_file(job)
    if file is None:
        raise ApiError(409, "not-ready", f"the export is {job.state}")
    await audit.record(request, grant, row, AuditAction.EXPORT_DOWNLOAD, f"job {job.id}")
    if job.kind is JobKind.DICOM:
        content_type, filename = "application/zip", f"endolink-{row.id}-dicom.zip"
    else:
        content_type, filename = "video/mp4", f"endolink-{row.id}-annotated.mp4"
    return web.FileResponse(file, headers=attachment_headers(content_type, filename))


async def _job(request: web.Request, grant: Grant, row: RecordingRow) -> ExportJob:
    """The job; a DICOM one only for an admin of the consultation (403)."""
    try:
        job = await request.app[REPLAY].library.export_job(row, request.match_info["job"])
    except ValueError as exc:
        raise ApiError(400, "bad-request", str(exc)) from None
    if job.kind is JobKind.DICOM:
        grant.ensure_admin_of(row.consultation_id)
    return job


def job_json(job: ExportJob) -> dict[str, Any]:
    base = f"/api/recordings/{job.recording_id}/exports/{job.id}"
    return {**job.to_json(), "status_url": base, "url": f"{base}/file" if job.done else None}
