"""Snapshots: PNG stills of the annotated endoscope picture, stored with the consultation.

    POST /api/consultations/{cid}/snapshots           PNG ≤ 8 MiB → 201 {id, url, by, created_at}
    GET  /api/consultations/{cid}/snapshots           → 200 {"snapshots": [...]}, oldest first
    GET  /api/consultations/{cid}/snapshots/{id}.png  → the image

Uploading needs ``may_annotate``; reading needs membership. Files live in
``<data>/consultations/<cid>/snapshots/`` as ``<id>.png`` plus ``<id>.json`` (who, when); ids are
made here and file names are only ever built from them, never from request text. The app-wide
body limit is 64 KiB, so uploads are read with their own limit. Disk work runs in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from recorder.storage import consultation_dir
from relay import ConsultationId
from signaling.auth.request import authenticate, path_cid
from signaling.http.api import find_consultation
from signaling.http.errors import ApiError
from signaling.keys import HUB, SETTINGS, STORE
from signaling.ws.hub import utc_timestamp
from signaling.ws.messages import SnapshotAdded
from signaling.ws.protocol import SNAPSHOT_ID

logger = logging.getLogger(__name__)

PNG = "image/png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOTS = 500
"Per consultation: bounds the disk a consultation can fill (500 × 8 MiB)."
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Snapshot:
    id: str
    by: str
    created_at: str

    def to_json(self, cid: ConsultationId) -> dict[str, Any]:
        return {**asdict(self), "url": snapshot_url(cid, self.id)}


class TooManySnapshots(Exception):
    pass


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/consultations/{cid}/snapshots", upload_snapshot)
    app.router.add_get("/api/consultations/{cid}/snapshots", list_snapshots)
    app.router.add_get(
        f"/api/consultations/{{cid}}/snapshots/{{sid:{SNAPSHOT_ID.pattern}}}.png", get_snapshot
    )


def snapshot_url(cid: ConsultationId, snapshot_id: str) -> str:
    return f"/api/consultations/{cid}/snapshots/{snapshot_id}.png"


def snapshot_dir(data_dir: Path, cid: ConsultationId) -> Path:
    return consultation_dir(data_dir, cid) / "snapshots"


async def snapshot_exists(data_dir: Path, cid: ConsultationId, snapshot_id: str) -> bool:
    """For ``freeze``: does this (well-formed) id name a stored snapshot?"""
    return await asyncio.to_thread((snapshot_dir(data_dir, cid) / f"{snapshot_id}.png").is_file)


async def upload_snapshot(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_annotate(cid)
    await find_consultation(request.app[STORE], cid)
    if request.content_type != PNG:
        raise ApiError(415, "unsupported-media-type", f"send the snapshot as Content-Type: {PNG}")
    data = await _read_limited(request, MAX_SNAPSHOT_BYTES)
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ApiError(400, "bad-image", "body is not a PNG image")
    snapshot = Snapshot(secrets.token_urlsafe(12), grant.identity, utc_timestamp())
    directory = snapshot_dir(request.app[SETTINGS].data_dir, cid)
    try:
        await asyncio.to_thread(_store, directory, snapshot, data)
    except TooManySnapshots:
        raise ApiError(
            409, "too-many-snapshots", f"a consultation keeps at most {MAX_SNAPSHOTS} snapshots"
        ) from None
    logger.info("Snapshot %s stored [consultation:%s] (%d bytes)", snapshot.id, cid, len(data))
    body = snapshot.to_json(cid)
    request.app[HUB].broadcast(cid, SnapshotAdded(body))
    return web.json_response(body, status=201)


async def list_snapshots(request: web.Request) -> web.Response:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    directory = snapshot_dir(request.app[SETTINGS].data_dir, cid)
    snapshots = await asyncio.to_thread(load_snapshots, directory)
    return web.json_response({"snapshots": [s.to_json(cid) for s in snapshots]})


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    snapshot_id = request.match_info["sid"]  # matched SNAPSHOT_ID: safe as a file name
    path = snapshot_dir(request.app[SETTINGS].data_dir, cid) / f"{snapshot_id}.png"
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not-found", "unknown snapshot")
    return web.FileResponse(
        path,
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


def _store(directory: Path, snapshot: Snapshot, data: bytes) -> None:
    """Image first, then its metadata (which is what lists it), each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    if sum(1 for _ in directory.glob("*.json")) >= MAX_SNAPSHOTS:
        raise TooManySnapshots
    _write_atomically(directory / f"{snapshot.id}.png", data)
    _write_atomically(directory / f"{snapshot.id}.json", json.dumps(asdict(snapshot)).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


def load_snapshots(directory: Path) -> list[Snapshot]:
    snapshots = []
    for path in directory.glob("*.json"):
        try:
            snapshots.append(Snapshot(**json.loads(path.read_bytes())))
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("Snapshot metadata %s unreadable: %s", path.name, exc)
    return sorted(snapshots, key=lambda s: s.created_at)
