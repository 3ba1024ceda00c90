"""``GET /api/recordings/{rid}/fhir``: the recording as a FHIR R4 Bundle (``fhir.py``) for the
hospital's record, validated with ``fhir.resources``' R4B models before it is sent.

The Bundle holds the patient's identity, so it is the coordinator's: an admin token covering
the recording's consultation (admins hold the replay right). The replay right alone is not
enough: the surgeon's live link carries it. Checks in the order of ``signaling/replay/access.py``:
token (401), id shape (400), admin (403), recording exists (404), consultation (403). No patient
details → 422: a record that names no patient cannot be filed, and a document without a subject
would be filed nowhere (or in the wrong chart). Reading it is audited (``fhir``) before the
Bundle is assembled, so the Bundle carries its own read.

The SHA-1 and size of what the download sends are kept per finished recording (``DigestCache``):
hashing reads every byte of a recording, and the Bundle is asked for again and again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web
from fhir.resources.R4B.bundle import Bundle

from persistence.times import utc_now_iso
from signaling.auth.request import authenticate
from signaling.db.audit import AuditAction, AuditEntry
from signaling.db.patients import PATIENT_NEEDED, no_patient
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.keys import AUDIT, PATIENTS, REPLAY, SETTINGS, STORE
from signaling.records.fhir import RECORDING_ACTIONS, RecordFacts, VideoFile, bundle
from signaling.replay.download import Download, digest, download_of

FHIR_JSON = "application/fhir+json"


class DigestCache:
    """SHA-1 and size of a finished recording's download, per recording id. Keyed by every sent
    file's path, size and modification time: a repaired or replaced file is hashed anew. A
    recording still being written is never kept. Blocking (stats, reads): call it in a thread."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._known: OrderedDict[str, tuple[object, tuple[bytes, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, rid: str, sent: Download, ended: bool) -> tuple[bytes, int]:
        key = _files_key(sent)
        with self._lock:
            known = self._known.get(rid)
        if known is not None and known[0] == key:
            return known[1]
        result = digest(sent)
        if ended and _files_key(sent) == key:  # unchanged while it was read
            with self._lock:
                self._known[rid] = (key, result)
                self._known.move_to_end(rid)
                while len(self._known) > self._limit:
                    self._known.popitem(last=False)
        return result


def add_routes(app: web.Application) -> None:
    digests = DigestCache()

    async def get(request: web.Request) -> web.Response:
        return await get_bundle(request, digests)

    app.router.add_get("/api/recordings/{rid}/fhir", get)


async def get_bundle(request: web.Request, digests: DigestCache) -> web.Response:
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
        raise ApiError(422, PATIENT_NEEDED, no_patient(cid))
    sent = await download_of(library, row)
    sha1, size = await asyncio.to_thread(digests.digest, rid, sent, row.ended_at is not None)
    await record_action(request, grant, cid, AuditAction.FHIR, "bundle", rid)
    entries = await request.app[AUDIT].actions(cid, RECORDING_ACTIONS, recording_id=rid)
    facts = RecordFacts(
        base_url=request.app[SETTINGS].base_url.rstrip("/"),
        recording=row,
        patient=details.patient,
        video=VideoFile(sent.content_type, sent.filename, sha1, size),
        consents=await request.app[STORE].consent_history(cid),
        audit=sorted(entries, key=_seq),
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


def _files_key(sent: Download) -> list[tuple[Path, int, int]]:
    stats = [(path, path.stat()) for _, path in sent.entries]
    return [(path, st.st_size, st.st_mtime_ns) for path, st in stats]


def _disposition(rid: str) -> str:
    return f'inline; filename="endolink-{rid}.fhir.json"'
