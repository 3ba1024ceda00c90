"""Stills: the clinic's sharp full-resolution JPEGs, sent instead of video in stills mode
(``signaling/ws/stills.py``), stored with the consultation's snapshots (kind ``still``).

    POST /api/consultations/{cid}/stills   JPEG ≤ 8 MiB → 201 {id, url, by, created_at, kind}

Only the clinic (the endoscope's publisher) sends stills, and only while stills mode is on: the
surgeon asks for stills over the WebSocket, observers never upload. The body is checked like a
snapshot's (the JPEG's own header: complete, size within the snapshot limits); the still is then
announced as a snapshot and shown through the freeze.
"""

from __future__ import annotations

from aiohttp import web

from recorder.snapshots import STILL
from relay import FeedName
from signaling.auth.grants import Forbidden
from signaling.auth.request import authenticate, path_cid
from signaling.http.api import find_consultation
from signaling.http.errors import ApiError
from signaling.http.snapshots import snapshot_json, store_image
from signaling.keys import HUB, STILLS, STORE
from signaling.ws.messages import SnapshotAdded


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/consultations/{cid}/stills", upload_still)


async def upload_still(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_member(cid)
    if grant.publishes is not FeedName.ENDOSCOPE:
        raise Forbidden("only the clinic sends stills; the surgeon asks for them")
    await find_consultation(request.app[STORE], cid)
    stills = request.app[STILLS]
    if not stills.active(cid):
        raise ApiError(409, "stills-off", "stills are sent only while stills mode is on")
    snapshot = await store_image(request, grant, cid, STILL)
    body = snapshot_json(cid, snapshot)
    request.app[HUB].broadcast(cid, SnapshotAdded(body))
    stills.on_still(cid, snapshot)
    return web.json_response(body, status=201)
