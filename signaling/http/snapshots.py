"""Snapshots: PNG stills of the annotated endoscope picture, stored with the consultation.

    POST /api/consultations/{cid}/snapshots           PNG ≤ 8 MiB → 201 {id, url, by, created_at}
    GET  /api/consultations/{cid}/snapshots           → 200 {"snapshots": [...]}, oldest first
    GET  /api/consultations/{cid}/snapshots/{id}.png  → the image

Uploading needs ``may_annotate``; reading needs membership. Storage is ``recorder/snapshots.py``
(snapshots are recorded material); this module only checks who may do what, and the body. The
app-wide body limit is 64 KiB, so uploads are read with their own limit.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from aiohttp import web

from recorder.snapshots import (
    SNAPSHOT_ID,
    BadImage,
    ImageTooLarge,
    Snapshot,
    SnapshotStore,
    TooManySnapshots,
    check_png,
)
from recorder.storage import DiskFull
from relay import ConsultationId
from signaling.auth.request import authenticate, path_cid
from signaling.db.audit import AuditAction
from signaling.db.snapshot_audit import snapshot_detail
from signaling.http.api import find_consultation
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.http.serving import body_deadline
from signaling.keys import HUB, SETTINGS, STORE
from signaling.ws.messages import SnapshotAdded

logger = logging.getLogger(__name__)

PNG = "image/png"
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/consultations/{cid}/snapshots", upload_snapshot)
    app.router.add_get("/api/consultations/{cid}/snapshots", list_snapshots)
    app.router.add_get(
        f"/api/consultations/{{cid}}/snapshots/{{sid:{SNAPSHOT_ID.pattern}}}.png", get_snapshot
    )


def snapshot_url(cid: ConsultationId, snapshot_id: str) -> str:
    return f"/api/consultations/{cid}/snapshots/{snapshot_id}.png"


def snapshot_json(cid: ConsultationId, snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as pages see it: the stored fields and where to fetch the image."""
    return {**snapshot.to_json(), "url": snapshot_url(cid, snapshot.id)}


def _store(request: web.Request) -> SnapshotStore:
    settings = request.app[SETTINGS]
    return SnapshotStore(settings.data_dir, settings.recording_min_free_mb)


async def upload_snapshot(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_annotate(cid)
    await find_consultation(request.app[STORE], cid)
    if request.content_type != PNG:
        raise ApiError(415, "unsupported-media-type", f"send the snapshot as Content-Type: {PNG}")
    async with body_deadline(request, request.app[SETTINGS].body_timeout_s):
        data = await _read_limited(request, MAX_SNAPSHOT_BYTES)
    try:
        check_png(data)  # the declared size, before anyone decodes it (a browser would)
    except BadImage as exc:
        raise ApiError(400, "bad-image", str(exc)) from None
    except ImageTooLarge as exc:
        raise ApiError(413, "image-too-large", str(exc)) from None
    try:
        snapshot = await _store(request).add(cid, grant.identity, data)
    except TooManySnapshots as exc:
        raise ApiError(409, "too-many-snapshots", str(exc)) from None
    except DiskFull as exc:
        raise ApiError(507, "disk-full", str(exc)) from None
    logger.info("Snapshot %s stored [consultation:%s] (%d bytes)", snapshot.id, cid, len(data))
    # The PNG's hash in the chained trail: a later edit of the file shows (`audit verify --files`).
    detail = snapshot_detail(snapshot.id, hashlib.sha256(data).hexdigest())
    await record_action(request, grant, cid, AuditAction.SNAPSHOT, detail)
    body = snapshot_json(cid, snapshot)
    request.app[HUB].broadcast(cid, SnapshotAdded(body))
    return web.json_response(body, status=201)


async def list_snapshots(request: web.Request) -> web.Response:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    snapshots = await _store(request).list(cid)
    return web.json_response({"snapshots": [snapshot_json(cid, s) for s in snapshots]})


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    snapshot_id = request.match_info["sid"]  # matched SNAPSHOT_ID: safe as a file name
    store = _store(request)
    if not await store.exists(cid, snapshot_id):
        raise ApiError(404, "not-found", "unknown snapshot")
    return web.FileResponse(
        store.path(cid, snapshot_id),
        headers={
            "Content-Type": PNG,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=3600",
        },
    )


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all first."""
    too_large = ApiError(413, "too-large", f"snapshots are at most {limit // (1024 * 1024)} MiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
