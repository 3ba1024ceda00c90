"""The audit trail of replays: each replay, download and export is recorded by the route that
serves it (``record``); admins read a consultation's trail here."""

from __future__ import annotations

from aiohttp import web

from recorder.index import RecordingRow
from signaling.auth.grants import Grant
from signaling.auth.request import authenticate, path_cid
from signaling.db.audit import AuditAction
from signaling.http.api import find_consultation
from signaling.keys import REPLAY, STORE


async def record(
    request: web.Request,
    grant: Grant,
    row: RecordingRow,
    action: AuditAction,
    detail: str | None = None,
) -> None:
    await request.app[REPLAY].audit.record(
        row.consultation_id, grant.identity, grant.name, str(grant.role), action, row.id, detail
    )


async def get_audit(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin()
    grant.ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    trail = await request.app[REPLAY].audit.trail(cid)
    return web.json_response({"audit": [entry.to_json() for entry in trail]})
