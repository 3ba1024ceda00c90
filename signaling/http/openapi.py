"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json`` (no token).

Written as data: one ``_op`` per route with its parameters, request body, security and every
status it can answer (each refusal with the ``Error`` schema, ``{"error", "reason"}``).
tests/signaling/test_openapi.py holds it to the router both ways (every route described, nothing
described that is not routed), and the property-based run (test_http_fuzz.py) generates requests
from it and fails on any status it does not list. ``HEAD`` is aiohttp's automatic twin of each
``GET``; pages and static files are listed with the ``pages`` tag. The document holds no secret
and nothing about this server's data: it is the same for every server of this version.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from recorder.snapshots import SNAPSHOT_ID
from signaling.auth.invites import INVITE_ROLES

JSON = "application/json"
VERSION = "1"

_REASONS = {
    101: "Switching protocols (the WebSocket)",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    206: "Partial content (Range)",
    400: "Bad request: a field, parameter or id is malformed",
    401: "No token, or an invalid or expired one",
    403: "The token does not allow this",
    404: "Unknown consultation, recording, session or file",
    406: "No codec in common",
    408: "The request body arrived too slowly",
    409: "Conflict with the current state",
    410: "The link was withdrawn or has expired",
    412: "If-Match does not match the session",
    413: "Body too large",
    415: "Wrong Content-Type",
    416: "Range not satisfiable",
    422: "Unprocessable (ICE restart)",
    428: "If-Match is required",
    429: "Too many requests: see Retry-After",
    503: "Full or busy: try again later",
}
_CID = {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}}
_RID = {"name": "rid", "in": "path", "required": True, "schema": {"type": "string"}}
_SEQ = {
    "name": "seq",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"},
}
_JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}
_SID = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
_MEDIA_TOKEN = {
    "name": "t",
    "in": "query",
    "description": "media token from .../media-token (instead of a Bearer header)",
    "schema": {"type": "string"},
}
_AUTH = (401,)
_MEMBER = (401, 403)
_REPLAY = (400, 401, 403, 404)
_SESSION = (401, 403, 404, 429)
_NETCHECK = (200, 400, *_MEMBER, 413, 429)
"A network test transfer: a bad size, too large, or too often."


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    return param


def _object(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object body: no other fields are accepted."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
_ANY = {"type": "object"}
_BINARY = {"type": "string", "format": "binary"}


def _op(
    summary: str,
    statuses: tuple[int, ...],
    *,
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    body_type: str = JSON,
    answer: str = JSON,
    auth: bool = True,
    tag: str = "api",
) -> dict[str, Any]:
    """One operation; ``statuses`` lists every status it answers (the first is success). Any
    request may also get 429 (a token presented from an address over its failure budget,
    signaling/http/throttle.py), and one with a body 408 (sent too slowly)."""
    responses: dict[str, Any] = {}
    slow = (408,) if body is not None else ()
    for status in dict.fromkeys((*statuses, *slow, 429)):
        if status < 300:
            content = {answer: {"schema": _ANY if answer == JSON else _STR}} if answer else {}
            responses[str(status)] = {"description": _REASONS[status], "content": content}
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {
            "required": body_type != JSON,
            "content": {body_type: {"schema": body}},
        }
    op["security"] = [{"bearer": []}] if auth else []
    return op


def _read(summary: str, *refusals: int) -> dict[str, Any]:
    """A member's ``GET`` of something of the consultation ``{cid}``."""
    return {"get": _op(summary, (200, *_MEMBER, *refusals), params=(_CID,))}


def _media(summary: str, answer: str) -> dict[str, Any]:
    """A recorded file with HTTP Range, by Bearer or media token."""
    return {
        "get": _op(
            summary, (200, 206, *_REPLAY, 416), params=(_RID, _SEQ, _MEDIA_TOKEN), answer=answer
        )
    }


def _page(summary: str, params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return _op(summary, (200, 404), params=params, answer="text/html", auth=False, tag="pages")


_CONSULTATION = _object(
    title=_STR,
    consent_by=_STR,
    video_codec={"type": "string", "enum": ["VP8", "H264"]},
    clinic_name=_NAME,
    surgeon_name=_NAME,
    observer_name=_NAME,
)
_SDP = {"type": "string", "description": "an SDP offer (RFC 9725)"}
_WHEP_QUERY = (
    _query("feed", {"type": "string", "enum": ["endoscope", "talkback"]}),
    _query("annotated", {"type": "string", "enum": ["0", "1"]}),
)


def _session_routes(kind: str) -> dict[str, dict[str, Any]]:
    base = f"/{kind}/{{cid}}"
    post_params = _WHEP_QUERY if kind == "whep" else ()
    publish = "publish (clinic: endoscope; surgeon: talk-back)" if kind == "whip" else "view"
    return {
        base: {
            "post": _op(
                f"{kind.upper()}: {publish}; answer SDP, Location, ETag, Link ice-server",
                (201, 400, 401, 403, 404, 406, 409, 413, 415, 422, 429, 503),
                params=(_CID, *post_params),
                body=_SDP,
                body_type="application/sdp",
                answer="application/sdp",
            ),
            "options": _op(
                "CORS preflight; with a Bearer token also Link ice-server (RFC 9725 §4.6)",
                (204, 401, 403),
                params=(_CID,),
                answer="",
                auth=False,
            ),
        },
        f"{base}/sessions/{{sid}}": {
            "patch": _op(
                "trickle ICE candidates (If-Match: the session ETag or *)",
                (204, 400, 412, 413, 415, 422, 428, *_SESSION),
                params=(_CID, _SID),
                body=_STR,
                body_type="application/trickle-ice-sdpfrag",
                answer="",
            ),
            "delete": _op("end the session", (200, *_SESSION), params=(_CID, _SID), answer=""),
            "options": _op("CORS preflight", (204,), params=(_CID, _SID), answer="", auth=False),
        },
    }


PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/openapi.json": {"get": _op("this document", (200,), auth=False)},
    "/api/session": {"get": _op("who the token says you are, ICE servers", (200, *_AUTH))},
    "/api/consultations": {
        "post": _op(
            "create a consultation with invite links (admin)",
            (201, 400, 401, 403, 413),
            body=_CONSULTATION,
        )
    },
    "/api/consultations/{cid}": _read("the consultation (members)", 404),
    "/api/consultations/{cid}/consent": {
        "post": _op(
            "record the patient's consent (clinic or admin)",
            (201, 400, *_MEMBER, 404, 413),
            params=(_CID,),
            body=_object(("confirmed_by", "method"), confirmed_by=_STR, method=_STR),
        )
    },
    "/api/consultations/{cid}/invites": {
        "post": _op(
            "a new invite link (admin)",
            (201, 400, *_MEMBER, 404, 413),
            params=(_CID,),
            body=_object(
                ("role",),
                role={"type": "string", "enum": list(INVITE_ROLES)},
                ttl_s={"type": "integer", "minimum": 60, "maximum": 604800},
                name=_NAME,
            ),
        )
    },
    "/api/consultations/{cid}/invites/{invite}": {
        "delete": _op(
            "withdraw an invite (admin)",
            (200, *_MEMBER, 404),
            params=(_CID, {**_JOB, "name": "invite"}),
        )
    },
    "/api/consultations/{cid}/revoke": {
        "post": _op(
            "withdraw every link and token of the consultation (its admin)",
            (200, *_MEMBER, 404),
            params=(_CID,),
        )
    },
    "/api/join": {
        "post": _op(
            "a short link's code for its token and page (failures rate-limited per address)",
            (200, 400, 404, 410, 413, 429),
            body=_object(("code",), code={"type": "string", "maxLength": 64}),
            auth=False,
        )
    },
    "/api/consultations/{cid}/recording": {
        "get": _op("the recording switch and state", (200, *_MEMBER, 404), params=(_CID,)),
        "post": _op(
            "switch recording on or off (clinic or admin)",
            (200, 400, *_MEMBER, 404, 413),
            params=(_CID,),
            body=_object(("enabled",), enabled={"type": "boolean"}),
        ),
    },
    "/api/consultations/{cid}/snapshots": {
        "get": _op("the consultation's snapshots", (200, *_MEMBER, 404), params=(_CID,)),
        "post": _op(
            "store a PNG snapshot (may_annotate)",
            (201, 400, *_MEMBER, 404, 409, 413, 415),
            params=(_CID,),
            body=_BINARY,
            body_type="image/png",
        ),
    },
    "/api/consultations/{cid}/snapshots/{sid}.png": {
        "get": _op(
            "one snapshot",
            (200, *_MEMBER, 404),
            params=(_CID, {**_SID, "schema": {"type": "string", "pattern": SNAPSHOT_ID.pattern}}),
            answer="image/png",
        )
    },
    "/api/consultations/{cid}/netcheck": _read("network test thresholds", 429),
    "/api/consultations/{cid}/netcheck/download": {
        "get": _op(
            "download test: random bytes",
            _NETCHECK,
            params=(_CID, _query("bytes", {"type": "integer", "minimum": 0}, "how many")),
            answer="application/octet-stream",
        )
    },
    "/api/consultations/{cid}/netcheck/upload": {
        "post": _op(
            "upload test: counts the bytes",
            _NETCHECK,
            params=(_CID,),
            body=_BINARY,
            body_type="application/octet-stream",
        )
    },
    "/api/consultations/{cid}/audit": _read("the audit trail (admin)", 404),
    "/api/recordings": {
        "get": _op(
            "recordings the token may replay, newest first",
            (200, 400, *_MEMBER),
            params=(
                _query("consultation", _STR),
                _query("since", _STR, "YYYY-MM-DD or ISO 8601 time"),
                _query("until", _STR, "YYYY-MM-DD (the whole day) or ISO 8601 time"),
            ),
        )
    },
    "/api/recordings/{rid}": {
        "get": _op("manifest, integrity, timeline, snapshots", (200, *_REPLAY), params=(_RID,))
    },
    "/api/recordings/{rid}/media-token": {
        "get": _op("a short-lived media token for <video src>", (200, *_REPLAY), params=(_RID,))
    },
    "/api/recordings/{rid}/media/{seq}": _media("a segment's media (Range)", "video/webm"),
    "/api/recordings/{rid}/media/{seq}/talkback": _media(
        "a segment's talk-back audio (Range)", "audio/webm"
    ),
    "/api/recordings/{rid}/thumbnail.jpg": {
        "get": _op("first keyframe", (200, *_REPLAY), params=(_RID,), answer="image/jpeg")
    },
    "/api/recordings/{rid}/download": {
        "get": _op(
            "the original file(s)", (200, *_REPLAY), params=(_RID,), answer="application/zip"
        )
    },
    "/api/recordings/{rid}/exports": {
        "post": _op("start an annotated export", (202, *_REPLAY, 409, 503), params=(_RID,))
    },
    "/api/recordings/{rid}/exports/{job}": {
        "get": _op("an export's progress", (200, *_REPLAY), params=(_RID, _JOB)),
        "delete": _op("cancel an export", (200, *_REPLAY, 409, 503), params=(_RID, _JOB)),
    },
    "/api/recordings/{rid}/exports/{job}/file": {
        "get": _op(
            "the exported MP4", (200, *_REPLAY, 409), params=(_RID, _JOB), answer="video/mp4"
        )
    },
    **_session_routes("whip"),
    **_session_routes("whep"),
    "/ws/{cid}": {
        "get": _op(
            "the consultation's WebSocket (101; protocol v1 and close codes: docs/architecture.md)",
            (101, 400),
            params=(_CID,),
            answer="",
            auth=False,
            tag="websocket",
        )
    },
    "/": {"get": _page("landing page")},
    "/clinic": {"get": _page("clinic page")},
    "/surgeon": {"get": _page("surgeon and observer page")},
    "/replay": {"get": _page("replay page")},
    "/j/{code}": {
        "get": _page(
            "a short invite link's page",
            ({"name": "code", "in": "path", "required": True, "schema": _STR},),
        )
    },
    "/static/{path}": {
        "get": _page(
            "the pages' modules, styles and catalogues",
            ({"name": "path", "in": "path", "required": True, "schema": _STR},),
        )
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "EndoLink",
        "version": VERSION,
        "description": "Remote endoscopy: consultations, WHIP/WHEP media, replay. Every refusal "
        'is {"error": code, "reason": sentence}.',
    },
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {
            "Error": _object(
                ("error", "reason"),
                error={"type": "string", "description": "machine-readable code"},
                reason={"type": "string", "description": "a sentence a person can read"},
            )
        },
        "responses": {
            f"E{status}": {
                "description": reason,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for status, reason in _REASONS.items()
            if status >= 300
        },
    },
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", get_document)


async def get_document(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
