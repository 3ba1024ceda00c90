"""What the HTTP edge writes to the audit trail: members' actions (``record_action``, committed
before the answer) and refused tokens (counted by ``refusals.RefusedTokens``, at most one entry
per address a minute)."""

from __future__ import annotations

from aiohttp import web

from signaling.auth.grants import Grant, TokenInvalid
from signaling.db.audit import AuditAction, AuditRecord
from signaling.http.client_address import limit_key
from signaling.http.errors import Handler
from signaling.keys import AUDIT, REFUSED_TOKENS


async def record_action(
    request: web.Request,
    grant: Grant,
    cid: str,
    action: AuditAction,
    detail: str | None = None,
    recording_id: str | None = None,
) -> None:
    """``grant``'s ``action`` in consultation ``cid``, committed (a failure fails the request).
    Also what the consultation revocation records (``AuditAction.REVOKE``)."""
    await request.app[AUDIT].record(
        AuditRecord(cid, grant.identity, grant.name, str(grant.role), action, recording_id, detail)
    )


def note_refused_token(request: web.Request) -> None:
    """Count a request (or WebSocket) refused for its token. The route's pattern, never the
    raw path or the token, says where."""
    route = request.match_info.route.resource
    where = f"{request.method} {route.canonical if route is not None else 'unknown path'}"
    request.app[REFUSED_TOKENS].refused(limit_key(request), where)


@web.middleware
async def refused_token_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TokenInvalid:
        note_refused_token(request)
        raise
