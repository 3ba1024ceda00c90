"""Snapshots: PNGs of the annotated endoscope picture (and the clinic's JPEG stills, uploaded by
``signaling/http/stills.py``), stored with the consultation.

    POST /api/consultations/{cid}/snapshots           PNG ≤ 8 MiB → 201 {id, url, by, kind, …}
    GET  /api/consultations/{cid}/snapshots           → 200 {"snapshots": [...]}, oldest first
    GET  /api/consultations/{cid}/snapshots/{id}.png  → the image (a still: {id}.jpg)

Uploading needs ``may_annotate``; reading needs membership. Storage is ``recorder/snapshots.py``
(snapshots are recorded material); this module only checks who may do what, and the body. The
app-wide body limit is 64 KiB, so uploads are read with their own limit.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from recorder.snapshots import (
    SNAPSHOT,
    SNAPSHOT_ID,
    STILL,
    SUFFIXES,
    BadImage,
    ImageTooLarge,
    Snapshot,
    SnapshotStore,
    TooManySnapshots,
    UnsupportedImage,
    check_jpeg,
    check_png,
)
from recorder.storage import DiskFull
from relay import ConsultationId
from signaling.auth.grants import Grant
from signaling.auth.request import authenticate, path_cid
from signaling.db.audit import AuditAction
from signaling.db.snapshot_audit import snapshot_detail
from signaling.http.api import find_consultation
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.http.serving import body_deadline
from signaling.keys import HUB, SETTINGS, STORE
from signaling.ws.messages import SnapshotAdded, snapshot_url

logger = logging.getLogger(__name__)

PNG = "image/png"
JPEG = "image/jpeg"
_FORMATS: dict[str, tuple[str, Callable[[bytes], tuple[int, int]]]] = {
    SNAPSHOT: (PNG, check_png),
    STILL: (JPEG, check_jpeg),
}
"Each kind's media type and header check."
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/consultations/{cid}/snapshots", upload_snapshot)
    app.router.add_get("/api/consultations/{cid}/snapshots", list_snapshots)
    for kind, suffix in SUFFIXES.items():
        path = f"/api/consultations/{{cid}}/snapshots/{{sid:{SNAPSHOT_ID.pattern}}}{suffix}"
        app.router.add_get(path, functools.partial(get_snapshot, kind=kind))


def snapshot_json(cid: ConsultationId, snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as pages see it: the stored fields and where to fetch the image."""
    return {**snapshot.to_json(), "url": snapshot_url(cid, snapshot.id, snapshot.kind)}


def _store(request: web.Request) -> SnapshotStore:
    settings = request.app[SETTINGS]
    return SnapshotStore(settings.data_dir, settings.recording_min_free_mb)


async def upload_snapshot(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_annotate(cid)
    await find_consultation(request.app[STORE], cid)
    snapshot = await store_image(request, grant, cid, SNAPSHOT)
    body = snapshot_json(cid, snapshot)
    request.app[HUB].broadcast(cid, SnapshotAdded(body))
    return web.json_response(body, status=201)


async def store_image(
    request: web.Request, grant: Grant, cid: ConsultationId, kind: str
) -> Snapshot:
    """The body checked (type, size, the image's real header), stored as ``kind`` and audited
    with its SHA-256; every refusal a readable 4xx (or 507)."""
    media_type, check = _FORMATS[kind]
    if request.content_type != media_type:
        raise ApiError(
            415, "unsupported-media-type", f"send the {kind} as Content-Type: {media_type}"
        )
    async with body_deadline(request, request.app[SETTINGS].body_timeout_s):
        data = await _read_limited(request, MAX_SNAPSHOT_BYTES)
    try:
        # The declared size, before anyone decodes it (a browser would); a worker thread, as the
        # header walk is Python over up to 8 MiB.
        await asyncio.to_thread(check, data)
    except UnsupportedImage as exc:
        raise ApiError(415, "unsupported-image", str(exc)) from None
    except BadImage as exc:
        raise ApiError(400, "bad-image", str(exc)) from None
    except ImageTooLarge as exc:
        raise ApiError(413, "image-too-large", str(exc)) from None
    try:
        snapshot = await _store(request).add(cid, grant.identity, data, kind=kind)
    except TooManySnapshots as exc:
        raise ApiError(409, "too-many-snapshots", str(exc)) from None
    except DiskFull as exc:
        raise ApiError(507, "disk-full", str(exc)) from None
    logger.info(
        "%s %s stored [consultation:%s] (%d bytes)", kind.capitalize(), snapshot.id, cid, len(data)
    )
    # The image's hash in the chained trail: a later edit shows (`audit verify --files`).
    detail = snapshot_detail(snapshot.id, hashlib.sha256(data).hexdigest())
    await record_action(request, grant, cid, AuditAction.SNAPSHOT, detail)
    return snapshot


async def list_snapshots(request: web.Request) -> web.Response:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    snapshots = await _store(request).list(cid)
    return web.json_response({"snapshots": [snapshot_json(cid, s) for s in snapshots]})


async def get_snapshot(request: web.Request, kind: str) -> web.StreamResponse:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    snapshot_id = request.match_info["sid"]  # matched SNAPSHOT_ID: safe as a file name
    store = _store(request)
    if await store.kind(cid, snapshot_id) != kind:
        raise ApiError(404, "not-found", f"unknown {kind}")
    return web.FileResponse(
        store.path(cid, snapshot_id, kind),
        headers={
            "Content-Type": _FORMATS[kind][0],
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=3600",
        },
    )


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all first."""
    too_large = ApiError(413, "too-large", f"pictures are at most {limit // (1024 * 1024)} MiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
