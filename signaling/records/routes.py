"""``GET /api/recordings/{rid}/fhir``: the recording as a FHIR R4 Bundle (``fhir.py``) for the
hospital's record, validated with ``fhir.resources``' R4B models before it is sent.

The Bundle holds the patient's identity, so it is the coordinator's: an admin token covering
the recording's consultation (admins hold the replay right). The replay right alone is not
enough: the surgeon's live link carries it. Checks in the order of ``signaling/replay/access.py``:
token (401), id shape (400), admin (403), recording exists (404), consultation (403). No patient
details → 422: a record that names no patient cannot be filed, and a document without a subject
would be filed nowhere (or in the wrong chart). Reading it is audited (``fhir``) before the
Bundle is assembled, so the Bundle carries its own read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from fhir.resources.R4B.bundle import Bundle

from persistence.times import utc_now_iso
from signaling.auth.request import authenticate
from signaling.db.audit import AuditAction, AuditEntry
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.keys import AUDIT, PATIENTS, REPLAY, SETTINGS, STORE
from signaling.records.fhir import RECORDING_ACTIONS, RecordFacts, VideoFile, bundle
from signaling.replay.download import digest, download_of

FHIR_JSON = "application/fhir+json"
NO_PATIENT = (
    "the patient's details are needed for the hospital record: give at least patient_id "
    "(PUT /api/consultations/{cid}/patient, or endolink consult patient)"
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/recordings/{rid}/fhir", get_bundle)


async def get_bundle(request: web.Request) -> web.Response:
    grant = authenticate(request)
    rid = request.match_info["rid"]
    library = request.app[REPLAY].library
    if not library.valid_id(rid):
        raise ApiError(400, "bad-request", "not a recording id")
    grant.ensure_admin()
    row = await library.recording(rid)
    cid = row.consultation_id
    grant.ensure_admin_of(cid)
    details = await request.app[PATIENTS].latest(cid)
    if details is None:
        raise ApiError(422, "patient-details-needed", NO_PATIENT.replace("{cid}", cid))
    sent = await download_of(library, row)
    sha1, size = await asyncio.to_thread(digest, sent)
    await record_action(request, grant, cid, AuditAction.FHIR, "bundle", rid)
    trail = request.app[AUDIT]
    entries = await trail.actions(cid, RECORDING_ACTIONS, recording_id=rid)
    live = await trail.actions(
        cid, (AuditAction.VIEW,), since=row.started_at, until=row.ended_at
    )  # who watched live while it was recorded
    exported = [e.at for e in entries if e.action == AuditAction.DICOM_EXPORT]
    facts = RecordFacts(
        base_url=request.app[SETTINGS].base_url.rstrip("/"),
        recording=row,
        patient=details.patient,
        video=VideoFile(sent.content_type, sent.filename, sha1, size),
        consents=await request.app[STORE].consent_history(cid),
        audit=sorted([*entries, *live], key=_seq),
        dicom_exported_at=exported[0] if exported else None,
        assembled_at=utc_now_iso(),
    )
    text = await asyncio.to_thread(_validated, bundle(facts))
    return web.Response(
        text=text,
        content_type=FHIR_JSON,
        headers={"Cache-Control": "no-store", "Content-Disposition": _disposition(rid)},
    )


def _validated(data: dict[str, Any]) -> str:
    """The Bundle as JSON once the R4B models accept it (a failure is a bug: it raises)."""
    Bundle.model_validate(data)
    return json.dumps(data, ensure_ascii=False)


def _seq(entry: AuditEntry) -> int:
    return entry.seq


def _disposition(rid: str) -> str:
    return f'inline; filename="endolink-{rid}.fhir.json"'
