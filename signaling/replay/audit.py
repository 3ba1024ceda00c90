"""The audit trail over HTTP: what the replay routes record (``record``), and admins reading a
consultation's trail a page at a time, with whether the trail is intact (``verified``: the entries
added since the last page's check, on top of a full check at start-up and every ten minutes;
``AuditTrail.verify_new``)."""

from __future__ import annotations

import re

from aiohttp import web

from recorder.index import RecordingRow
from signaling.auth.grants import Grant
from signaling.auth.request import authenticate, path_cid
from signaling.db.audit import MAX_PAGE, PAGE, AuditAction
from signaling.http.api import find_consultation
from signaling.http.audit_edge import record_action
from signaling.http.errors import ApiError
from signaling.keys import AUDIT, STORE

_COUNT = re.compile(r"[0-9]{1,12}")


async def record(
    request: web.Request,
    grant: Grant,
    row: RecordingRow,
    action: AuditAction,
    detail: str | None = None,
) -> None:
    """A replay, download or export of ``row``, committed before the answer."""
    await record_action(request, grant, row.consultation_id, action, detail, row.id)


async def get_audit(request: web.Request) -> web.Response:
    """``?after=<seq>`` (default 0) and ``?limit=`` (1–1000, default 500); ``next`` is the
    ``after`` of the following page, null on the last one."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin()
    grant.ensure_member(cid)
    await find_consultation(request.app[STORE], cid)
    after = _count(request, "after", 0)
    limit = _count(request, "limit", PAGE)
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "bad-request", f"limit must be 1 to {MAX_PAGE}")
    trail = request.app[AUDIT]
    page = await trail.trail(cid, after, limit)
    verdict = await trail.verify_new()
    return web.json_response(
        {
            "audit": [entry.to_json() for entry in page],
            "next": page[-1].seq if len(page) == limit else None,
            "verified": verdict.to_json(),
        },
        headers={"Cache-Control": "no-store"},
    )


def _count(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _COUNT.fullmatch(text):
        raise ApiError(400, "bad-request", f"{name} must be a whole number")
    return int(text)
