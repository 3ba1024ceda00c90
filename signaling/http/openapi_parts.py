"""Building blocks of the OpenAPI document (signaling/http/openapi.py): operations, parameters,
the error responses. Every refusal is the ``Error`` schema, ``{"error", "reason"}``."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
VERSION = "1"

REASONS = {
    101: "Switching protocols (the WebSocket)",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    206: "Partial content (Range)",
    307: "A cluster's node that does not own the consultation: the same request to its owner",
    400: "Bad request: a field, parameter or id is malformed",
    401: "No token, or an invalid or expired one",
    403: "The token does not allow this",
    404: "Unknown consultation, recording, session or file",
    408: "The request body arrived too slowly",
    409: "Conflict with the current state",
    410: "The link was withdrawn or has expired",
    412: "If-Match does not match the session",
    413: "Body too large",
    415: "Wrong Content-Type",
    416: "Range not satisfiable",
    422: "Unprocessable: no codec or track layout in common, an ICE restart, or the patient's"
    " details a hospital record (DICOM, FHIR) needs are missing",
    428: "If-Match is required",
    429: "Too many requests: see Retry-After",
    503: "Full or busy (or a cluster that cannot tell who serves it): try again later",
    507: "Not enough free disk space on the server",
}
CID = {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}}
RID = {"name": "rid", "in": "path", "required": True, "schema": {"type": "string"}}
SEQ = {
    "name": "seq",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"},
}
JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}
SID = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
MEDIA_TOKEN = {
    "name": "t",
    "in": "query",
    "description": "media token from .../media-token (instead of a Bearer header)",
    "schema": {"type": "string"},
}
AUTH = (401,)
MEMBER = (401, 403)
REPLAY = (400, 401, 403, 404)
SESSION = (401, 403, 404, 429)
NETCHECK = (200, 400, *MEMBER, 413, 429)
"A network test transfer: a bad size, too large, or too often."


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    return param


def json_object(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object body: no other fields are accepted."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STR = {"type": "string"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64}
ANY = {"type": "object"}
BINARY = {"type": "string", "format": "binary"}


def operation(
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
            content = {answer: {"schema": ANY if answer == JSON else STR}} if answer else {}
            responses[str(status)] = {"description": REASONS[status], "content": content}
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


def member_read(summary: str, *refusals: int) -> dict[str, Any]:
    """A member's ``GET`` of something of the consultation ``{cid}``."""
    return {"get": operation(summary, (200, *MEMBER, *refusals), params=(CID,))}


def media(summary: str, answer: str) -> dict[str, Any]:
    """A recorded file with HTTP Range, by Bearer or media token."""
    return {
        "get": operation(
            summary, (200, 206, *REPLAY, 416), params=(RID, SEQ, MEDIA_TOKEN), answer=answer
        )
    }


def page(summary: str, params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return operation(
        summary, (200, 404), params=params, answer="text/html", auth=False, tag="pages"
    )


SDP = {"type": "string", "description": "an SDP offer (RFC 9725)"}
WHEP_QUERY = (
    query("feed", {"type": "string", "enum": ["endoscope", "talkback"]}),
    query("annotated", {"type": "string", "enum": ["0", "1"]}),
    query(
        "quality",
        {"type": "string", "enum": ["auto", "original", "540p", "360p"], "default": "auto"},
        "the endoscope video as forwarded (original) or a lower rendition (540p, 360p) of the "
        "quality ladder, or chosen by the viewer's connection (auto); the answer's "
        "EndoLink-Quality header repeats the choice",
    ),
)


def session_routes(kind: str) -> dict[str, dict[str, Any]]:
    """The WHIP (``kind="whip"``) or WHEP routes: the endpoint and its sessions (RFC 9725)."""
    base = f"/{kind}/{{cid}}"
    post_params = WHEP_QUERY if kind == "whep" else ()
    publish = "publish (clinic: endoscope; surgeon: talk-back)" if kind == "whip" else "view"
    return {
        base: {
            "post": operation(
                f"{kind.upper()}: {publish}; answer SDP, Location, ETag, Link ice-server",
                (201, 307, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
                params=(CID, *post_params),
                body=SDP,
                body_type="application/sdp",
                answer="application/sdp",
            ),
            "get": operation(
                "no content (RFC 9725 §4.1); Content-Type application/sdp says what POST takes "
                "(HEAD too: WHEP discoverability)",
                (200, *MEMBER, 404),
                params=(CID,),
                answer="",
            ),
            "options": operation(
                "CORS preflight; with a Bearer token also Link ice-server (RFC 9725 §4.6)",
                (200, 401, 403),
                params=(CID,),
                answer="",
                auth=False,
            ),
        },
        f"{base}/sessions/{{sid}}": {
            "patch": operation(
                "trickle ICE candidates (If-Match: the session ETag or *)",
                (204, 400, 412, 413, 415, 422, 428, *SESSION),
                params=(CID, SID),
                body=STR,
                body_type="application/trickle-ice-sdpfrag",
                answer="",
            ),
            "delete": operation("end the session", (200, *SESSION), params=(CID, SID), answer=""),
            "get": operation(
                "no content while the session lasts (RFC 9725 §4.1; HEAD too)",
                (204, *SESSION),
                params=(CID, SID),
                answer="",
            ),
            "options": operation(
                "CORS preflight", (200,), params=(CID, SID), answer="", auth=False
            ),
        },
    }
