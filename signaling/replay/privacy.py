"""``POST /api/recordings/{id}/out-of-body``: a viewer asks to see a part of the recording filmed
outside the body (the room, the people in it), which the replay page shows blurred until then.

Anyone who may replay the recording may look (they could download the original anyway), but not
unseen: the request names the span by its ``start_s`` and is audited as ``replay`` (``showed the
part filmed outside the body at 12.0–20.5 s``) before the page unblurs it. Body ``{"start_s":
number}``; 404 when the recording has no such span."""

from __future__ import annotations

from aiohttp import web

from signaling.db.audit import AuditAction
from signaling.http.api import json_body
from signaling.http.errors import ApiError
from signaling.keys import REPLAY
from signaling.replay import audit
from signaling.replay.access import authorised

MATCH_S = 0.001
"How close ``start_s`` must be to a span's start (the page sends back what it was given)."


async def reveal_out_of_body(request: web.Request) -> web.Response:
    grant, row = await authorised(request)
    body = await json_body(request, {"start_s"})
    start = body.get("start_s")
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise ApiError(400, "bad-request", "start_s must be a number of seconds")
    manifest = await request.app[REPLAY].library.manifest(row)
    spans = manifest.out_of_body if manifest is not None else []
    span = next((s for s in spans if abs(s.start_s - start) <= MATCH_S), None)
    if span is None:
        raise ApiError(404, "not-found", "the recording has no part outside the body there")
    end = "the end" if span.end_s is None else f"{span.end_s:.1f} s"
    detail = f"showed the part filmed outside the body at {span.start_s:.1f} s to {end}"
    await audit.record(request, grant, row, AuditAction.REPLAY, detail)
    return web.json_response({"span": span.to_json()})
