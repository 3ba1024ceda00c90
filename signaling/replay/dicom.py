"""DICOM export over HTTP: ``POST /api/recordings/{id}/dicom`` starts a job (202 + its status
URL, the same as an annotated export's: ``/api/recordings/{id}/exports/{job}``, whose ``/file`` is
the ZIP), optionally sending the files to the hospital archive configured in the settings.

Body: ``{"burned_in": bool, "send": "stow" | "c-store" | null, "patient": {...} | null}``. The
patient's details come from the body, else from the consultation's register; without either the
answer is 422 with what is needed. They go into the DICOM files only: the audit entry says where
the export went, never who the patient is.
"""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from recorder.dicom_send import StoreTarget, StowTarget
from recorder.library import Archive
from recorder.storage import DiskFull
from signaling.db.audit import AuditAction
from signaling.db.patients import InvalidPatient, Patient
from signaling.http.api import json_body
from signaling.http.errors import ApiError
from signaling.keys import PATIENTS, REPLAY, SETTINGS
from signaling.replay import audit
from signaling.replay.access import authorised
from signaling.replay.exports import job_json
from signaling.settings import Settings

SENDS = ("stow", "c-store")
NO_PATIENT = "the patient's details are needed for the hospital record: give at least patient_id"


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


async def start_dicom_export(request: web.Request) -> web.Response:
    grant, row = await authorised(request)
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
    patient = await _patient(request, row.consultation_id, body.get("patient"))
    try:
        archive = archive_for(request.app[SETTINGS], send)
    except LookupError as exc:
        raise ApiError(422, "no-archive", str(exc)) from None
    try:
        await library.check_export_space()
    except DiskFull as exc:
        raise ApiError(507, "disk-full", str(exc)) from None
    manifest = await library.manifest(row)
    stills = await library.dicom_stills(row, manifest)
    details = patient.to_json()

    def plan() -> Any:
        return library.dicom_plan(row, details, stills, burned_in)

    try:
        job = library.start_dicom_export(row, grant.identity, plan, archive)
    except RuntimeError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    where = "zip" if archive is None else archive.kind
    await audit.record(request, grant, row, AuditAction.DICOM_EXPORT, f"job {job.id} {where}")
    answer = job_json(job)
    return web.json_response(
        {"job": answer}, status=202, headers={hdrs.LOCATION: answer["status_url"]}
    )


async def _patient(request: web.Request, cid: str, given: Any) -> Patient:
    """The body's patient, else the consultation's latest details; 422 without either."""
    if given is not None:
        try:
            return Patient.from_json(given)
        except InvalidPatient as exc:
            raise ApiError(422, "invalid-patient", str(exc)) from None
    record = await request.app[PATIENTS].latest(cid)
    if record is None:
        raise ApiError(422, "patient-needed", NO_PATIENT)
    return record.patient
