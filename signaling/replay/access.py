"""Who may replay what (docs/replay.md): an admin whose token covers the consultation, or a
member of the recording's consultation whose token carries ``may_replay``; the media routes also
take a short-lived media token (``?t=``) made for one recording.

Checks run in this order: token (401), id shape (400, before anything touches the index or the
disk), replay right (403), recording exists (404), consultation matches (403). What writes or
sends the patient's identity (the DICOM export) is the coordinator's (``admin=True``): the
replay right is not enough, the surgeon's live link carries it.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from recorder.index import RecordingRow
from signaling.auth.grants import Forbidden, Grant, TokenInvalid, TokenWithdrawn
from signaling.auth.media_tokens import MEDIA_QUERY
from signaling.auth.request import authenticate
from signaling.db.audit import AuditAction
from signaling.http.errors import ApiError
from signaling.keys import REPLAY, REVOCATIONS
from signaling.replay import audit


def _valid_id(request: web.Request) -> str:
    rid = request.match_info["rid"]
    if not request.app[REPLAY].library.valid_id(rid):
        raise ApiError(400, "bad-request", "not a recording id")
    return rid


async def authorised(request: web.Request, admin: bool = False) -> tuple[Grant, RecordingRow]:
    """The caller's grant and the recording, in the order of the module doc; ``admin``: an admin
    token covering the recording's consultation instead of the replay right."""
    grant = authenticate(request)
    rid = _valid_id(request)
    grant.ensure_admin() if admin else grant.ensure_replay_somewhere()
    row = await request.app[REPLAY].library.recording(rid)
    cid = row.consultation_id
    grant.ensure_admin_of(cid) if admin else grant.ensure_replay(cid)
    return grant, row


async def media_access(request: web.Request) -> RecordingRow:
    """Bearer (checked like every replay route) or the ``?t=`` media token of this recording."""
    if hdrs.AUTHORIZATION in request.headers:
        grant, row = await authorised(request)
        try:
            first_bytes = request.http_range.start in (None, 0)
        except ValueError:  # a malformed Range: FileResponse answers 416
            first_bytes = False
        if first_bytes:
            await audit.record(request, grant, row, AuditAction.REPLAY, f"media {request.path}")
        return row
    if MEDIA_QUERY in request.query:
        media = request.app[REPLAY].tokens.verify(request.query[MEDIA_QUERY])
        rid = _valid_id(request)
        if media.recording_id != rid:
            raise Forbidden("this media token is for another recording")
        row = await request.app[REPLAY].library.recording(rid)
        refusal = request.app[REVOCATIONS].withdrawn(
            row.consultation_id, media.identity, media.issued_at
        )
        if refusal is not None:
            raise TokenWithdrawn(refusal)
        return row
    raise TokenInvalid("missing bearer token (or media token from .../media-token)")


async def get_media_token(request: web.Request) -> web.Response:
    """A short-lived token for the ``<video>`` element (see signaling/auth/media_tokens.py).
    Issuing one is what the audit trail records as a replay."""
    grant, row = await authorised(request)
    token, expires_at = request.app[REPLAY].tokens.issue(grant, row.id)
    await audit.record(request, grant, row, AuditAction.REPLAY, "media token")
    base = f"/api/recordings/{row.id}/media"
    return web.json_response(
        {
            "token": token,
            "expires_at": expires_at,
            "media": [
                {
                    "segment": s.seq,
                    "url": f"{base}/{s.seq}?{MEDIA_QUERY}={token}",
                    "talkback": f"{base}/{s.seq}/talkback?{MEDIA_QUERY}={token}",
                }
                for s in row.segments
            ],
        },
        headers={"Cache-Control": "no-store"},
    )
