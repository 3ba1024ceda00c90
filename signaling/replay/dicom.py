"""DICOM export over HTTP: ``POST /api/recordings/{id}/dicom`` starts a job (202 + its status URL,
the same as an annotated export's: ``/api/recordings/{id}/exports/{job}``, whose ``/file`` is
the ZIP), optionally sending the files to the hospital archive configured in the settings.

The export writes the patient's identity and files a study under a patient id: it is the
coordinator's, an admin token covering the consultation (``admin=True``), as are the job's status,
ZIP and cancel. ``?include_out_of_body=1`` keeps the spans filmed outside the body unblurred
(``exports.include_out_of_body``). Body: ``{"burned_in": bool, "send": "stow" | "c-store" | null,
"patient": {...} | null}``. The patient's details come from the body (recorded in the
consultation's register first, audited ``patient``), else from the register; without either the
answer is 422 with what is needed. A second request while an export of the recording runs gets that
job back when its parameters are the same, else 409. The audit entries say where the export went,
never who the patient is: ``dicom-export`` when it starts, and ``stored in the archive
(stow|c-store)`` once the archive has accepted every object (written from the export worker, before
the job shows done).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web

from recorder.dicom_send import StoreTarget, StowTarget
from recorder.index import RecordingRow
from recorder.jobs import JobBusy, JobFailed
from recorder.library import Archive
from recorder.storage import DiskFull
from signaling.auth.grants import Grant
from signaling.db.audit import AuditAction, AuditRecord
from signaling.db.patients import PATIENT_NEEDED, InvalidPatient, Patient, no_patient
from signaling.http.api import json_body
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.keys import AUDIT, PATIENTS, REPLAY, SETTINGS
from signaling.records.fhir import STORED_IN_ARCHIVE
from signaling.replay import audit
from signaling.replay.access import authorised
from signaling.replay.exports import KEPT_OUT_OF_BODY, include_out_of_body, job_json
from signaling.settings import SENDS, Settings

BUSY = "an export of this recording is running"
AUDIT_WAIT_S = 10.0
"How long the export worker waits for the ``stored in the archive`` entry to be committed."


def archive_for(settings: Settings, send: str | None) -> Archive | None:
    """The configured archive for ``send``; ``LookupError`` (a sentence) when it is not set up."""
    if send is None:
        return None
    if send == "stow":
        if not settings.pacs_stow_url:
            raise LookupError("no DICOMweb archive is configured (ENDOLINK_PACS_STOW_URL)")
        return StowTarget(settings.pacs_stow_url)
    if settings.pacs_dicom is None:
        raise LookupError("no DICOM archive is configured (ENDOLINK_PACS_DICOM)")
    called, host, port = settings.pacs_dicom
    return StoreTarget(called, host, port, settings.dicom_ae_title)


def stored_detail(send: str) -> str:
    """The audit detail of objects the archive accepted (the FHIR study reference looks for it)."""
    return f"{STORED_IN_ARCHIVE} ({send})"


async def start_dicom_export(request: web.Request) -> web.Response:
    grant, row = await authorised(request, admin=True)
    keep = include_out_of_body(request, grant, row)
    body = await json_body(request, {"burned_in", "send", "patient"})
    burned_in = body.get("burned_in", False)
    if not isinstance(burned_in, bool):
        raise ApiError(400, "bad-request", "burned_in must be true or false")
    send = body.get("send")
    if send is not None and send not in SENDS:
        raise ApiError(400, "bad-request", "send must be stow, c-store or null")
    library = request.app[REPLAY].library
    if not library.has_video(row):
        raise ApiError(409, "nothing-to-export", "the recording has no video")
    given = _given_patient(body.get("patient"))
    patient = given or await _registered_patient(request, row.consultation_id)
    settings = request.app[SETTINGS]
    try:
        archive = archive_for(settings, send)
    except LookupError as exc:
        raise ApiError(422, "no-archive", str(exc)) from None
    try:
        await library.check_export_space()
    except DiskFull as exc:
        raise ApiError(507, "disk-full", str(exc)) from None
    details = patient.to_json()
    same = _same(send, details, burned_in, keep)
    if library.dicom_busy(row, same):
        raise ApiError(409, "export-running", BUSY)
    if given is not None:
        await request.app[PATIENTS].record(row.consultation_id, given, grant.identity)
        await record_action(request, grant, row.consultation_id, AuditAction.PATIENT, "recorded")
    manifest = await library.manifest(row)
    stills = await library.dicom_stills(row, manifest)

    def plan() -> Any:
        return library.dicom_plan(row, details, stills, burned_in, settings.timezone, keep)

    stored = _stored_hook(request, grant, row)
    try:
        job = library.start_dicom_export(row, grant.identity, plan, archive, stored, same)
    except JobBusy as exc:
        raise ApiError(409, "export-running", str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    where = "zip" if archive is None else archive.kind
    kept = f", {KEPT_OUT_OF_BODY}" if keep else ""
    await audit.record(request, grant, row, AuditAction.DICOM_EXPORT, f"job {job.id} {where}{kept}")
    answer = job_json(job)
    return web.json_response(
        {"job": answer}, status=202, headers={hdrs.LOCATION: answer["status_url"]}
    )


def _same(send: str | None, details: dict[str, Any], burned_in: bool, keep: bool) -> str:
    """A digest of the parameters: two requests with it are the same export (never saved)."""
    said = json.dumps([send, details, burned_in, keep], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(said.encode()).hexdigest()


def _stored_hook(request: web.Request, grant: Grant, row: RecordingRow) -> Callable[[str], None]:
    """Called in the export worker once the archive accepted every object: the audit entry,
    committed on the server's loop before the job goes on (and shows done)."""
    loop, trail = asyncio.get_running_loop(), request.app[AUDIT]
    who = (grant.identity, grant.name, str(grant.role))

    def stored(send: str) -> None:
        entry = AuditRecord(
            row.consultation_id, *who, AuditAction.DICOM_EXPORT, row.id, stored_detail(send)
        )
        future = asyncio.run_coroutine_threadsafe(trail.record(entry), loop)
        try:
            future.result(AUDIT_WAIT_S)
        except Exception:
            future.cancel()
            raise JobFailed(
                "the archive stored the DICOM objects, but the audit trail could not record it"
            ) from None

    return stored


def _given_patient(given: Any) -> Patient | None:
    """The body's patient (422 when it could not be filed), None when not given."""
    if given is None:
        return None
    try:
        return Patient.from_json(given)
    except InvalidPatient as exc:
        raise ApiError(422, "invalid-patient", str(exc)) from None


async def _registered_patient(request: web.Request, cid: str) -> Patient:
    """The consultation's latest details; 422 without any."""
    record = await request.app[PATIENTS].latest(cid)
    if record is None:
        raise ApiError(422, PATIENT_NEEDED, no_patient(cid))
    return record.patient
