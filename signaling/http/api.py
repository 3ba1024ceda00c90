"""REST routes ``/api/...`` (docs/architecture.md, "HTTP API").

Handlers authenticate first, check the Grant against the consultation in the URL before looking
it up (a token for another consultation learns nothing about which ids exist), then validate the
JSON body. Every failure is an ``ApiError`` / ``TokenInvalid`` / ``Forbidden`` that the error
middleware turns into ``{"error", "reason"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, TypeVar

from aiohttp import web

from persistence.times import utc_iso
from relay import ConsultationId
from signaling.auth.grants import ANY_CONSULTATION, Role
from signaling.auth.invites import INVITE_ROLES, issue_invite, token_for, with_links
from signaling.auth.names import InvalidName, display_name
from signaling.auth.request import authenticate, path_cid
from signaling.cluster.edge import media_urls, place
from signaling.db.audit import AuditAction
from signaling.db.invites import InviteRecord
from signaling.db.patients import InvalidPatient, Patient
from signaling.db.store import DEFAULT_TITLE, Consultation, ConsultationStore, UnknownConsultation
from signaling.http.audit_edge import record_action
from signaling.http.client_address import limit_key
from signaling.http.errors import ApiError
from signaling.http.json_input import JsonInputError, holds_lone_surrogate, load_json
from signaling.http.serving import read_body
from signaling.http.throttle import too_many
from signaling.keys import (
    CLUSTER,
    FAILED_JOINS,
    HUB,
    ICE_SERVERS,
    INVITES,
    PATIENTS,
    RECORDINGS,
    REVOCATIONS,
    SETTINGS,
    STORE,
    TOKENS,
)
from signaling.ws.messages import ConsentUpdate, RecordingUpdate

logger = logging.getLogger(__name__)

NAME_FIELDS: dict[str, Role] = {
    "clinic_name": Role.CLINIC,
    "surgeon_name": Role.SURGEON,
    "observer_name": Role.OBSERVER,
}
"Who each role's link of a new consultation is for (optional; a page without one asks)."
MIN_INVITE_TTL_S = 60
MAX_INVITE_TTL_S = 7 * 24 * 3600

T = TypeVar("T")
_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer"}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/consultations", create_consultation)
    app.router.add_get("/api/consultations/{cid}", get_consultation)
    app.router.add_post("/api/consultations/{cid}/consent", record_consent)
    app.router.add_post("/api/consultations/{cid}/invites", create_invite)
    app.router.add_delete("/api/consultations/{cid}/invites/{invite}", revoke_invite)
    app.router.add_post("/api/consultations/{cid}/revoke", revoke_consultation)
    app.router.add_post("/api/join", join)
    app.router.add_get("/api/consultations/{cid}/recording", get_recording)
    app.router.add_post("/api/consultations/{cid}/recording", set_recording)
    app.router.add_get("/api/session", get_identity)
    app.router.add_put("/api/consultations/{cid}/patient", set_patient)
    app.router.add_get("/api/consultations/{cid}/patient", get_patient)


async def create_consultation(request: web.Request) -> web.Response:
    grant = authenticate(request)
    grant.ensure_admin_everywhere()
    body = await json_body(
        request,
        {"title", "consent_by", "video_codec", "patient", "region", "cascade", *NAME_FIELDS},
    )
    region = _optional(body, "region", str)
    cascade = body.get("cascade", False)
    if not isinstance(cascade, bool):
        raise _bad_request("cascade must be true or false")
    names = {
        role: _name(body, key) for key, role in NAME_FIELDS.items() if body.get(key) is not None
    }
    patient = _patient(body["patient"]) if body.get("patient") is not None else None
    settings = request.app[SETTINGS]
    with _invalid_input():
        consultation = await request.app[STORE].create(
            title=_optional(body, "title", str) or DEFAULT_TITLE,
            video_codec=_optional(body, "video_codec", str) or settings.video_codec,
            consent_by=_optional(body, "consent_by", str),
            recorded_by=grant.identity,
        )
    if patient is not None:
        await request.app[PATIENTS].record(consultation.id, patient, grant.identity)
        await record_action(request, grant, consultation.id, AuditAction.PATIENT, "recorded")
    answer = await with_links(
        request.app[INVITES], settings.base_url, consultation, settings.token_ttl_s, names
    )
    if (node := await place(request, consultation.id, region, cascade)) is not None:
        answer["node"] = node
    return web.json_response(answer, status=201)


async def get_consultation(request: web.Request) -> web.Response:
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    consultation = await find_consultation(request.app[STORE], cid)
    return web.json_response(consultation.to_json())


async def record_consent(request: web.Request) -> web.Response:
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_record_consent(cid)
    body = await json_body(request, {"confirmed_by", "method"})
    confirmed_by = _required(body, "confirmed_by", str)
    method = _required(body, "method", str)
    with _invalid_input():
        try:
            consent = await request.app[STORE].record_consent(
                cid, confirmed_by, method, recorded_by=grant.identity
            )
        except UnknownConsultation as exc:
            raise _not_found() from exc
    await record_action(request, grant, cid, AuditAction.CONSENT, f"method {method}")
    request.app[HUB].broadcast(cid, ConsentUpdate(consent.to_json()))
    return web.json_response(consent.to_json(), status=201)


async def set_patient(request: web.Request) -> web.Response:
    """The patient's details for the hospital record (the coordinator's): they supersede earlier
    ones. Never logged; the audit entry says only that they were recorded."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin_of(cid)
    patient = _patient(await json_body(request, {f.name for f in fields(Patient)}))
    await find_consultation(request.app[STORE], cid)
    record = await request.app[PATIENTS].record(cid, patient, grant.identity)
    await record_action(request, grant, cid, AuditAction.PATIENT, "recorded")
    return web.json_response({"patient": record.to_json()})


async def get_patient(request: web.Request) -> web.Response:
    """The current details (``null`` when none were given): the coordinator's admin token only.
    The replay right is not enough: the surgeon's live link carries it, and the patient's
    identity stays off the live side (docs/architecture.md, "Into the hospital record")."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin_of(cid)
    await find_consultation(request.app[STORE], cid)
    record = await request.app[PATIENTS].latest(cid)
    await record_action(request, grant, cid, AuditAction.PATIENT, "read")
    return web.json_response({"patient": record.to_json() if record else None})


def _patient(body: Any) -> Patient:
    try:
        return Patient.from_json(body)
    except InvalidPatient as exc:  # the code lets the coordinator's page say it in its language
        raise ApiError(400, f"patient-{exc.problem}", str(exc)) from None


async def create_invite(request: web.Request) -> web.Response:
    cid = path_cid(request)
    authenticate(request).ensure_admin_of(cid)
    body = await json_body(request, {"role", "ttl_s", "name"})
    role_name = _required(body, "role", str)
    if role_name not in INVITE_ROLES:
        raise _bad_request(f"role must be one of {', '.join(INVITE_ROLES)}")
    name = _name(body, "name") if body.get("name") is not None else ""
    ttl_s = _optional(body, "ttl_s", int)
    if ttl_s is not None and not MIN_INVITE_TTL_S <= ttl_s <= MAX_INVITE_TTL_S:
        raise _bad_request(
            f"ttl_s must be between {MIN_INVITE_TTL_S} and {MAX_INVITE_TTL_S} seconds"
        )
    await find_consultation(request.app[STORE], cid)
    settings = request.app[SETTINGS]
    invite = await issue_invite(
        request.app[INVITES],
        settings.base_url,
        cid,
        Role(role_name),
        ttl_s or settings.token_ttl_s,
        name=name,
    )
    return web.json_response(invite.to_json(), status=201)


async def revoke_invite(request: web.Request) -> web.Response:
    """Withdraw an invite: its short link stops opening, and whoever joined through it loses
    their access at once (their token refused, their sockets and media sessions ended)."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin_of(cid)
    book = request.app[INVITES]
    invite = await book.get(request.match_info["invite"])
    if invite is None or invite.consultation_id != cid:
        raise ApiError(404, "not-found", "unknown invite")
    await book.revoke(invite.id)
    await record_action(request, grant, cid, AuditAction.REVOKE, f"{invite.role} link {invite.id}")
    await request.app[REVOCATIONS].refresh()
    return web.json_response((await book.get(invite.id) or invite).to_json())


async def revoke_consultation(request: web.Request) -> web.Response:
    """Withdraw every link of a consultation and every token issued for it until now (the
    caller's own included): sockets close with 4410, media sessions end. The consultation
    stays; new invites work (docs/architecture.md, "Withdrawing access")."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_admin_of(cid)
    await find_consultation(request.app[STORE], cid)
    invites = await request.app[INVITES].revoke_all(cid)
    revoked_at = await request.app[STORE].revoke_access(cid)
    await record_action(request, grant, cid, AuditAction.REVOKE, f"every link ({invites} open)")
    await request.app[REVOCATIONS].refresh()
    return web.json_response(
        {"consultation": cid, "revoked_at": utc_iso(revoked_at), "invites_withdrawn": invites}
    )


async def join(request: web.Request) -> web.Response:
    """A short link's code → its token and page. Failed lookups are rate-limited per client
    address: over its budget an address gets 429 for every code that does not work, but a
    working link still opens (a hospital behind one NAT is not locked out by one mistyped link;
    sixty bits of code stay out of reach of guessing either way). The code is never logged (the
    error middleware logs only the path)."""
    budget = request.app[FAILED_JOINS]
    client = limit_key(request)
    try:
        code = _required(await json_body(request, {"code"}), "code", str)
    except ApiError:
        budget.spend(client)
        raise
    invite = await request.app[INVITES].find(code)
    if invite is None or invite.revoked_at is not None or invite.expired():
        wait_s = budget.retry_after(client)
        budget.spend(client)
        if wait_s:
            raise too_many(
                "too-many-attempts",
                f"Too many links that did not work were tried from this network. "
                f"Wait {wait_s} seconds, then open the link again.",
                wait_s,
            )
        raise _join_refusal(invite)
    return web.json_response(
        {
            "token": token_for(request.app[TOKENS], invite),
            "page": invite.page,
            "role": str(invite.role),
            "expires_at": invite.expires_at,
        }
    )


def _join_refusal(invite: InviteRecord | None) -> ApiError:
    """Why a short link does not open, in words for the person holding it."""
    if invite is None:
        return ApiError(
            404,
            "unknown-link",
            "This link is not known. Check that it was copied whole, "
            "or ask the consultation coordinator for a new one.",
        )
    ask = "Ask the consultation coordinator for a new one."
    if invite.revoked_at is not None:
        return ApiError(410, "link-withdrawn", f"This link was withdrawn. {ask}")
    return ApiError(410, "link-expired", f"This link has expired. {ask}")


async def get_recording(request: web.Request) -> web.Response:
    """The consultation's recording switch and what is being recorded now."""
    cid = path_cid(request)
    authenticate(request).ensure_member(cid)
    enabled = await request.app[STORE].recording_enabled(cid)
    if enabled is None:
        raise _not_found()
    return web.json_response(_recording_json(request, cid, enabled))


async def set_recording(request: web.Request) -> web.Response:
    """Switch recording on or off (clinic or admin); off stops a running recording at once."""
    cid = path_cid(request)
    grant = authenticate(request)
    grant.ensure_switch_recording(cid)
    enabled = (await json_body(request, {"enabled"})).get("enabled")
    if not isinstance(enabled, bool):
        raise _bad_request("enabled must be true or false")
    try:
        await request.app[STORE].set_recording_enabled(cid, enabled)
    except UnknownConsultation as exc:
        raise _not_found() from exc
    await request.app[RECORDINGS].set_enabled(cid, enabled)
    await record_action(request, grant, cid, AuditAction.RECORDING, "on" if enabled else "off")
    return web.json_response(_recording_json(request, cid, enabled))


def _recording_json(request: web.Request, cid: ConsultationId, enabled: bool) -> dict[str, Any]:
    state = RecordingUpdate.of(request.app[RECORDINGS].state(cid))
    return {"enabled": enabled, **state.body()}


async def get_identity(request: web.Request) -> web.Response:
    """What the page needs to start: who the token says you are, and how to reach the relay."""
    grant = authenticate(request)
    ice_servers = request.app[ICE_SERVERS].for_identity(grant.identity)
    # In a cluster: the node that serves this consultation's media, when it is another one
    # (browsers drop the token on a redirect to another origin, so they are told beforehand).
    cluster: dict[str, str | None] = {}
    if request.app.get(CLUSTER) is not None and grant.cid != ANY_CONSULTATION:
        cluster = await media_urls(request, grant.cid)
    return web.json_response(
        {
            **cluster,
            "identity": grant.identity,
            "name": grant.name,
            "role": str(grant.role),
            "consultation": grant.cid,
            "may_publish": grant.may_publish,
            "may_annotate": grant.may_annotate,
            "may_replay": grant.may_replay,
            "expires_at": grant.expires_at,
            "ice_servers": [server.to_json() for server in ice_servers],
            "replay_idle_s": request.app[SETTINGS].replay_idle_s,
        }
    )


async def find_consultation(store: ConsultationStore, cid: ConsultationId) -> Consultation:
    """The consultation, or a 404 (after the caller checked the grant: see the module doc)."""
    consultation = await store.get(cid)
    if consultation is None:
        raise _not_found()
    return consultation


async def json_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object (an empty body counts as ``{}``); unknown keys are refused so
    a misspelt field fails loudly instead of being silently ignored."""
    raw = await read_body(request, request.app[SETTINGS].body_timeout_s)  # 413 past the limit
    if not raw.strip():
        return {}
    try:
        body = load_json(raw)
    except JsonInputError as exc:
        raise _bad_request(f"request body is {exc}") from None
    if not isinstance(body, dict):
        raise _bad_request("request body must be a JSON object")
    if holds_lone_surrogate(body):
        raise _bad_request("request body holds text that is not Unicode (a lone surrogate)")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad_request(f"unknown field(s): {', '.join(unknown)}")
    return body


def _optional(body: dict[str, Any], key: str, kind: type[T]) -> T | None:
    """``body[key]`` if it has the right JSON type; ``null`` counts as absent."""
    value = body.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python, but true is no number of seconds.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _bad_request(f"{key} must be {_TYPE_NAMES[kind]}")
    return value


def _name(body: dict[str, Any], key: str) -> str:
    """A display name field, trimmed; 400 saying what is wrong with it (never quoting it)."""
    try:
        return display_name(body.get(key), key)
    except InvalidName as exc:
        raise _bad_request(str(exc)) from None


def _required(body: dict[str, Any], key: str, kind: type[T]) -> T:
    value = _optional(body, key, kind)
    if value is None:
        raise _bad_request(f"{key} is required")
    return value


@contextmanager
def _invalid_input() -> Iterator[None]:
    """The store rejects bad values (empty name, unknown codec...) with ValueError: a 400."""
    try:
        yield
    except ValueError as exc:
        raise _bad_request(str(exc)) from exc


def _bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad-request", reason)


def _not_found() -> ApiError:
    return ApiError(404, "not-found", "unknown consultation")
