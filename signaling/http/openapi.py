"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json`` (no token).

Written as data: one ``operation`` per route with its parameters, request body, security and every
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
from signaling.db.patients import MAX_PART, SEXES
from signaling.http.openapi_parts import (
    AUTH,
    BINARY,
    CID,
    JOB,
    JSON,
    MEMBER,
    NAME,
    NETCHECK,
    REASONS,
    REPLAY,
    RID,
    SID,
    STR,
    VERSION,
    json_object,
    media,
    member_read,
    operation,
    page,
    query,
    session_routes,
)

_TEXT = {"type": "string", "maxLength": MAX_PART}
_PATIENT = json_object(
    ("patient_id",),
    patient_id={"type": "string", "minLength": 1, "maxLength": MAX_PART},
    issuer=_TEXT,
    family_name=_TEXT,
    given_names=_TEXT,
    birth_date={"type": "string", "format": "date"},
    sex={"type": "string", "enum": list(SEXES)},
)
_CONSULTATION = json_object(
    title=STR,
    patient=_PATIENT,
    consent_by=STR,
    region=STR,
    video_codec={"type": "string", "enum": ["VP8", "H264"]},
    cascade={"type": "boolean"},
    clinic_name=NAME,
    surgeon_name=NAME,
    observer_name=NAME,
)
_PATIENT = json_object(
    ("patient_id",),
    patient_id=NAME,
    issuer=STR,
    family_name=STR,
    given_names=STR,
    birth_date={"type": ["string", "null"], "description": "YYYY-MM-DD"},
    sex={"type": "string", "enum": ["female", "male", "other", "unknown"]},
)
_INCLUDE_OUT_OF_BODY = query(
    "include_out_of_body",
    {"type": "string", "enum": ["0", "1"]},
    "1: keep the parts filmed outside the body unblurred (an admin of the consultation only)",
)
_DICOM_EXPORT = json_object(
    burned_in={"type": "boolean"},
    send={"type": ["string", "null"], "enum": ["stow", "c-store", None]},
    patient={"oneOf": [_PATIENT, {"type": "null"}]},
)


def _image_upload(summary: str, media_type: str) -> dict[str, Any]:
    """A snapshot or still upload: the body is the image itself."""
    statuses = (201, 400, *MEMBER, 404, 409, 413, 415, 507)
    return operation(summary, statuses, params=(CID,), body=BINARY, body_type=media_type)


PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/openapi.json": {"get": operation("this document", (200,), auth=False)},
    "/api/session": {
        "get": operation(
            "who the token says you are, ICE servers; in a cluster media_url (the node that "
            "serves the consultation's media, null for this one) and view_url (where to play "
            "the endoscope original: null for this node, which may serve it by cascade)",
            (200, *AUTH, 503),
        )
    },
    "/api/consultations": {
        "post": operation(
            "create a consultation with invite links (admin)",
            (201, 400, 401, 403, 413),
            body=_CONSULTATION,
        )
    },
    "/api/consultations/{cid}": member_read("the consultation (members)", 404),
    "/api/consultations/{cid}/consent": {
        "post": operation(
            "record the patient's consent (clinic or admin)",
            (201, 400, *MEMBER, 404, 413),
            params=(CID,),
            body=json_object(("confirmed_by", "method"), confirmed_by=STR, method=STR),
        )
    },
    "/api/consultations/{cid}/patient": {
        "put": operation(
            "record the patient's details for the hospital record (its admin)",
            (200, 400, *MEMBER, 404, 413),
            params=(CID,),
            body=_PATIENT,
        ),
        "get": operation(
            "the patient's details, null when none were given (its admin)",
            (200, *MEMBER, 404),
            params=(CID,),
        ),
    },
    "/api/consultations/{cid}/invites": {
        "post": operation(
            "a new invite link (admin)",
            (201, 400, *MEMBER, 404, 413),
            params=(CID,),
            body=json_object(
                ("role",),
                role={"type": "string", "enum": list(INVITE_ROLES)},
                ttl_s={"type": "integer", "minimum": 60, "maximum": 604800},
                name=NAME,
            ),
        )
    },
    "/api/consultations/{cid}/invites/{invite}": {
        "delete": operation(
            "withdraw an invite (admin)",
            (200, *MEMBER, 404),
            params=(CID, {**JOB, "name": "invite"}),
        )
    },
    "/api/consultations/{cid}/revoke": {
        "post": operation(
            "withdraw every link and token of the consultation (its admin)",
            (200, *MEMBER, 404),
            params=(CID,),
        )
    },
    "/api/join": {
        "post": operation(
            "a short link's code for its token and page (failures rate-limited per address)",
            (200, 400, 404, 410, 413, 429),
            body=json_object(("code",), code={"type": "string", "maxLength": 64}),
            auth=False,
        )
    },
    "/api/consultations/{cid}/recording": {
        "get": operation("the recording switch and state", (200, *MEMBER, 404), params=(CID,)),
        "post": operation(
            "switch recording on or off (clinic or admin)",
            (200, 400, *MEMBER, 404, 413),
            params=(CID,),
            body=json_object(("enabled",), enabled={"type": "boolean"}),
        ),
    },
    "/api/consultations/{cid}/snapshots": {
        "get": operation("the consultation's snapshots", (200, *MEMBER, 404), params=(CID,)),
        "post": _image_upload("store a PNG snapshot (may_annotate)", "image/png"),
    },
    **{
        f"/api/consultations/{{cid}}/snapshots/{{sid}}{suffix}": {
            "get": operation(
                f"one {kind} ({media_type})",
                (200, *MEMBER, 404),
                params=(CID, {**SID, "schema": {"type": "string", "pattern": SNAPSHOT_ID.pattern}}),
                answer=media_type,
            )
        }
        for kind, suffix, media_type in (
            ("snapshot", ".png", "image/png"),
            ("still", ".jpg", "image/jpeg"),
        )
    },
    "/api/consultations/{cid}/stills": {
        "post": _image_upload(
            "store a JPEG still (the clinic, in stills mode only: 409 otherwise)", "image/jpeg"
        ),
    },
    "/api/consultations/{cid}/netcheck": member_read("network test thresholds", 429),
    "/api/consultations/{cid}/netcheck/download": {
        "get": operation(
            "download test: random bytes",
            NETCHECK,
            params=(CID, query("bytes", {"type": "integer", "minimum": 0}, "how many")),
            answer="application/octet-stream",
        )
    },
    "/api/consultations/{cid}/netcheck/upload": {
        "post": operation(
            "upload test: counts the bytes",
            NETCHECK,
            params=(CID,),
            body=BINARY,
            body_type="application/octet-stream",
        )
    },
    "/api/consultations/{cid}/audit": {
        "get": operation(
            "the audit trail, a page at a time, and whether its chain verifies (admin)",
            (200, 400, *MEMBER, 404),
            params=(
                CID,
                query("after", {"type": "integer", "minimum": 0}, "entries after this seq"),
                query("limit", {"type": "integer", "minimum": 1}, "entries per page"),
            ),
        )
    },
    "/api/recordings": {
        "get": operation(
            "recordings the token may replay, newest first",
            (200, 400, *MEMBER),
            params=(
                query("consultation", STR),
                query("since", STR, "YYYY-MM-DD or ISO 8601 time"),
                query("until", STR, "YYYY-MM-DD (the whole day) or ISO 8601 time"),
            ),
        )
    },
    "/api/recordings/{rid}": {
        "get": operation("manifest, integrity, timeline, snapshots", (200, *REPLAY), params=(RID,))
    },
    "/api/recordings/{rid}/media-token": {
        "get": operation("a short-lived media token for <video src>", (200, *REPLAY), params=(RID,))
    },
    "/api/recordings/{rid}/media/{seq}": media("a segment's media (Range)", "video/webm"),
    "/api/recordings/{rid}/media/{seq}/talkback": media(
        "a segment's talk-back audio (Range)", "audio/webm"
    ),
    "/api/recordings/{rid}/thumbnail.jpg": {
        "get": operation("first keyframe", (200, *REPLAY), params=(RID,), answer="image/jpeg")
    },
    "/api/recordings/{rid}/download": {
        "get": operation(
            "the original file(s)", (200, *REPLAY), params=(RID,), answer="application/zip"
        )
    },
    "/api/recordings/{rid}/fhir": {
        "get": operation(
            "the recording as a FHIR R4 Bundle for the hospital record (an admin of it)",
            (200, *REPLAY, 422),
            params=(RID,),
            answer="application/fhir+json",
        )
    },
    "/api/recordings/{rid}/exports": {
        "post": operation(
            "start an annotated export (it replaces the recording's earlier one); the parts "
            "filmed outside the body are blurred unless include_out_of_body=1 (an admin of the "
            "consultation only)",
            (202, *REPLAY, 409, 503, 507),
            params=(RID, _INCLUDE_OUT_OF_BODY),
        )
    },
    "/api/recordings/{rid}/out-of-body": {
        "post": operation(
            "show a part filmed outside the body that replay blurs (audited as replay)",
            (200, *REPLAY, 408, 413),
            params=(RID,),
            body=json_object(("start_s",), start_s={"type": "number"}),
        )
    },
    "/api/recordings/{rid}/exports/{job}": {
        "get": operation(
            "an export's progress (a DICOM one: an admin of the consultation only)",
            (200, *REPLAY),
            params=(RID, JOB),
        ),
        "delete": operation("cancel an export", (200, *REPLAY, 409, 503), params=(RID, JOB)),
    },
    "/api/recordings/{rid}/exports/{job}/file": {
        "get": operation(
            "the exported MP4 (annotated) or ZIP (DICOM)",
            (200, *REPLAY, 409),
            params=(RID, JOB),
            answer="application/octet-stream",
        )
    },
    "/api/recordings/{rid}/dicom": {
        "post": operation(
            "start a DICOM export (Video Endoscopic Image, stills, annotations sidecar), "
            "optionally sent to the archive; follow it at the export status URL. An admin of the "
            "consultation only (it writes the patient's identity); 409 while an export of the "
            "recording with other parameters runs",
            (202, *REPLAY, 408, 409, 413, 422, 503, 507),
            params=(RID, _INCLUDE_OUT_OF_BODY),
            body=_DICOM_EXPORT,
        )
    },
    **session_routes("whip"),
    **session_routes("whep"),
    "/ws/{cid}": {
        "get": operation(
            "the consultation's WebSocket (101; protocol v1 and close codes: docs/architecture.md)",
            (101, 400),
            params=(CID,),
            answer="",
            auth=False,
            tag="websocket",
        )
    },
    "/healthz": {"get": operation("the process is alive", (200,), auth=False, tag="ops")},
    "/readyz": {
        "get": operation(
            "ready to serve: database, disk floor, not shutting down (503 names what is not)",
            (200, 503),
            auth=False,
            tag="ops",
        )
    },
    "/metrics": {
        "get": operation(
            "Prometheus metrics: the ENDOLINK_METRICS_TOKEN bearer, else this machine only",
            (200, 401, 403),
            answer="text/plain",
            auth=False,
            tag="ops",
        )
    },
    "/": {"get": page("landing page")},
    "/clinic": {"get": page("clinic page")},
    "/surgeon": {"get": page("surgeon and observer page")},
    "/replay": {"get": page("replay page")},
    "/j/{code}": {
        "get": page(
            "a short invite link's page",
            ({"name": "code", "in": "path", "required": True, "schema": STR},),
        )
    },
    "/static/{path}": {
        "get": page(
            "the pages' modules, styles and catalogues",
            ({"name": "path", "in": "path", "required": True, "schema": STR},),
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
            "Error": json_object(
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
            for status, reason in REASONS.items()
            if status >= 300
        },
    },
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", get_document)


async def get_document(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
