"""WHIP (RFC 9725) publish and WHEP view endpoints.

    POST   /whip/{cid}                       offer → 201 answer + Location + ETag + Link ice-server
    POST   /whep/{cid}?feed=endoscope|talkback   (?annotated=1: the endoscope with marks burned in;
                                             ?quality=auto|original|540p|360p: a rendition of
                                             the viewer quality ladder, relay/ladder.py)
    PATCH  /whip|whep/{cid}/sessions/{sid}   trickle-ice-sdpfrag → 204 (ICE restart → 422)
    DELETE /whip|whep/{cid}/sessions/{sid}   → 200
    GET, HEAD on all of them                 2xx with no content (RFC 9725 §4.1): an endpoint 200
                                             with Content-Type application/sdp (the WHEP draft's
                                             discoverability), a session 204
    OPTIONS on all of them                   200, CORS preflight, Accept-Post; on an endpoint with
                                             a Bearer token also Link ice-server (RFC 9725 §4.6)

How each requirement of RFC 9725 is met, and the test that shows it: docs/rfc9725.md.

A session ends when its token expires, and when its access is withdrawn: a withdrawal ends the
sessions the Router has; one whose offer was still being answered is checked again once it is
(``_still_granted``). It is closed when it has not connected within
``ENDOLINK_CONNECT_DEADLINE_S``; how many sessions a link, a consultation and the server may hold
is the relay's ``Admission`` (429 / 503 with Retry-After). The clinic and the surgeon are never
kept out by observers' sessions.

Who publishes what follows from the token: a clinic publishes the endoscope feed (only once the
patient's consent is on record), a surgeon publishes talk-back audio. Anyone in the consultation
may view; a clinic views talk-back by default.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from relay import ConsultationId, FeedName, IceRestartUnsupported, Peer, PeerRole, Quality, Router
from signaling.auth.grants import Grant, Role, TokenWithdrawn
from signaling.auth.request import authenticate, path_cid
from signaling.cluster.edge import cascaded, ensure_here
from signaling.db.audit import AuditAction, AuditRecord
from signaling.db.store import Consultation
from signaling.http.client_address import limit_key
from signaling.http.errors import ApiError
from signaling.http.serving import read_body
from signaling.keys import (
    AUDIT,
    CASCADES,
    GRANT,
    ICE_SERVERS,
    RELAY,
    REVOCATIONS,
    SETTINGS,
    STORE,
    THROTTLE,
)
from signaling.settings import IceServer

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Location, ETag, Link, Accept-Post, Accept-Patch, EndoLink-Quality"
    ),
}
AUTO = "auto"
"``?quality=auto`` (the default): the relay chooses the viewer's rendition from its feedback."
QUALITIES = (AUTO, *(str(q) for q in Quality))


def add_routes(app: web.Application) -> None:
    for kind in ("whip", "whep"):
        app.router.add_route("OPTIONS", f"/{kind}/{{cid}}", preflight)
        app.router.add_route("OPTIONS", f"/{kind}/{{cid}}/sessions/{{sid}}", preflight)
        app.router.add_get(f"/{kind}/{{cid}}", describe_endpoint)
        app.router.add_get(f"/{kind}/{{cid}}/sessions/{{sid}}", describe_session)
        app.router.add_patch(f"/{kind}/{{cid}}/sessions/{{sid}}", patch_session)
        app.router.add_delete(f"/{kind}/{{cid}}/sessions/{{sid}}", delete_session)
    app.router.add_post("/whip/{cid}", publish)
    app.router.add_post("/whep/{cid}", view)


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight (never authenticated: browsers send no Authorization header on it), and a
    client's request for ICE servers before it offers: with a Bearer token for the consultation
    the answer carries freshly minted TURN credentials (aiortc cannot trickle, so a client needs
    them before it gathers)."""
    response = web.Response(
        status=200,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "600",
            "Accept-Post": SDP,
            "Accept-Patch": SDPFRAG,
        },
    )
    if hdrs.AUTHORIZATION in request.headers and "sid" not in request.match_info:
        grant = authenticate(request)
        grant.ensure_member(path_cid(request))
        _add_ice_server_links(request, response, grant)
    return response


async def describe_endpoint(request: web.Request) -> web.Response:
    """GET or HEAD on an endpoint: it has no representation, so 2xx with no content (RFC 9725
    §4.1). The Content-Type says what a POST takes: a WHEP player may HEAD a URL to learn that
    it is a WHEP endpoint (draft-ietf-wish-whep, discoverability)."""
    grant = authenticate(request)
    await _here(request, grant)
    await _consultation(request, grant)
    headers = {**CORS, "Accept-Post": SDP, hdrs.CONTENT_TYPE: SDP, hdrs.CONTENT_LENGTH: "0"}
    return web.Response(status=200, headers=headers)


async def describe_session(request: web.Request) -> web.Response:
    """GET or HEAD on a session: 204 (RFC 9725 §4.1), for its owner, while it lasts."""
    await _session(request)
    return web.Response(status=204, headers={**CORS, "Accept-Patch": SDPFRAG})


async def publish(request: web.Request) -> web.Response:
    grant, consultation, offer = await _accept_offer(request)
    feed = grant.ensure_publish(consultation.id)
    if feed is FeedName.ENDOSCOPE and consultation.consent is None:
        raise ApiError(
            403,
            "consent-required",
            "patient consent for this remote consultation is not recorded yet",
        )
    router = _router(request, consultation)
    peer = await router.publish(feed, grant.identity, offer, expires_at=grant.expires_at)
    await _audited(request, grant, consultation.id, router, peer, f"feed {feed}")
    await _still_granted(request, grant, router, peer)
    return _created(request, "whip", consultation.id, peer)


async def view(request: web.Request) -> web.Response:
    """In a cluster, a viewer of the endoscope original on a node that does not own the
    consultation may be served here from the owner's stream (``signaling.cluster.cascade``):
    then only its token is checked, this node's store need not know the consultation."""
    grant = authenticate(request)
    cid = path_cid(request)
    grant.ensure_member(cid)
    try:
        feed = FeedName(request.query.get("feed", grant.views))
    except ValueError:
        raise ApiError(400, "bad-feed", "feed must be 'endoscope' or 'talkback'") from None
    annotated = request.query.get("annotated", "0")
    if annotated not in ("0", "1"):
        raise ApiError(400, "bad-request", "annotated must be 0 or 1")
    if annotated == "1" and feed is not FeedName.ENDOSCOPE:
        raise ApiError(400, "bad-feed", "only the endoscope feed has an annotated rendition")
    quality = _quality(request, feed)
    original = feed is FeedName.ENDOSCOPE and annotated == "0" and quality in _ORIGINAL
    cascade = await cascaded(request, cid, grant.identity) if original else None
    if cascade is None:
        await _here(request, grant)
        router = _router(request, await _consultation(request, grant))
    else:
        router = cascade[1]
    peer: Peer | None = None
    try:
        offer = await _offer(request, grant)
        peer = await router.view(
            feed,
            grant.identity,
            offer,
            annotated=annotated == "1",
            priority=grant.role in (Role.CLINIC, Role.SURGEON),
            expires_at=grant.expires_at,
            quality=quality,
        )
    finally:
        if cascade is not None:
            cascade[0].arrived(peer)
    chosen = AUTO if quality is None else str(quality)
    detail = f"feed {feed} annotated {annotated} quality {chosen}"
    detail += " (cascaded)" if cascade is not None else ""
    await _audited(request, grant, cid, router, peer, detail)
    await _still_granted(request, grant, router, peer)
    response = _created(request, "whep", cid, peer)
    response.headers["EndoLink-Quality"] = chosen
    return response


_ORIGINAL = (None, Quality.ORIGINAL)
"Automatic quality starts on the original: a node serving by cascade adapts its own viewers."


def _quality(request: web.Request, feed: FeedName) -> Quality | None:
    """``?quality=``: a pinned rendition, or None for automatic (the default)."""
    raw = request.query.get("quality", AUTO)
    if raw not in QUALITIES:
        raise ApiError(400, "bad-quality", f"quality must be one of {', '.join(QUALITIES)}")
    quality = None if raw == AUTO else Quality(raw)
    if quality not in (None, Quality.ORIGINAL) and feed is not FeedName.ENDOSCOPE:
        raise ApiError(400, "bad-quality", "only the endoscope feed has lower-quality renditions")
    return quality


async def patch_session(request: web.Request) -> web.Response:
    grant, router, peer = await _session(request)
    if request.content_type != SDPFRAG:
        raise ApiError(415, "unsupported-media-type", f"PATCH needs Content-Type: {SDPFRAG}")
    if_match = request.headers.get("If-Match")
    if if_match is None:
        raise ApiError(428, "precondition-required", "PATCH needs an If-Match header")
    if if_match not in ("*", peer.etag):
        raise ApiError(412, "precondition-failed", "If-Match does not match the session ETag")
    body = await _read_body(request)
    try:
        await peer.add_candidates(body)
    except IceRestartUnsupported as exc:
        raise ApiError(422, "ice-restart-unsupported", str(exc)) from exc
    return web.Response(status=204, headers=CORS)


async def delete_session(request: web.Request) -> web.Response:
    grant, router, peer = await _session(request)
    await router.end_session(peer.id)
    logger.info("WHIP/WHEP session %s deleted [consultation:%s]", peer.id[:6], router.cid)
    return web.Response(status=200, headers=CORS)


# -- helpers -----------------------------------------------------------------------------------


async def _accept_offer(request: web.Request) -> tuple[Grant, Consultation, str]:
    grant = authenticate(request)
    await _here(request, grant)
    consultation = await _consultation(request, grant)
    return grant, consultation, await _offer(request, grant)


async def _offer(request: web.Request, grant: Grant) -> str:
    if request.content_type != SDP:
        raise ApiError(415, "unsupported-media-type", f"send the offer as Content-Type: {SDP}")
    request.app[THROTTLE].take_session(grant.identity, limit_key(request))
    return await _read_body(request)


async def _here(request: web.Request, grant: Grant) -> None:
    """In a cluster, offers for a consultation another node owns go there (307): checked after
    the token (nobody learns where a consultation is without one), before anything else."""
    cid = path_cid(request)
    grant.ensure_member(cid)
    await ensure_here(request, cid, CORS)


async def _consultation(request: web.Request, grant: Grant) -> Consultation:
    cid = path_cid(request)
    grant.ensure_member(cid)
    consultation = await request.app[STORE].get(cid)
    if consultation is None:
        raise ApiError(404, "unknown-consultation", "no such consultation")
    return consultation


async def _read_body(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    limit = settings.max_sdp_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too-large", f"body larger than {limit} bytes")
    raw = await read_body(request, settings.body_timeout_s)
    if len(raw) > limit:
        raise ApiError(413, "too-large", f"body larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad-sdp", "body is not UTF-8 text") from None


def _router(request: web.Request, consultation: Consultation) -> Router:
    return request.app[RELAY].router(consultation.id, consultation.video_codec)


async def _session(request: web.Request) -> tuple[Grant, Router, Peer]:
    """A session of a Router fed by cascade is found without this node's store."""
    grant = authenticate(request)
    cid = path_cid(request)
    cascades = request.app.get(CASCADES)
    if cascades is None or not cascades.carries(cid):
        await _consultation(request, grant)
    grant.ensure_member(cid)
    router = request.app[RELAY].find(cid)
    peer = router.peer(request.match_info["sid"]) if router else None
    expected = PeerRole.PUBLISHER if request.path.startswith("/whip/") else PeerRole.VIEWER
    if router is None or peer is None or peer.role is not expected:
        raise ApiError(404, "unknown-session", "no such session")
    grant.ensure_owner(peer.identity)
    return grant, router, peer


async def _audited(
    request: web.Request,
    grant: Grant,
    cid: ConsultationId,
    router: Router,
    peer: Peer,
    detail: str,
) -> None:
    """The session's start, committed before the answer, and its end whenever it comes (the
    relay's close callback: the relay knows nothing of the trail)."""
    publishing = peer.role is PeerRole.PUBLISHER
    trail = request.app[AUDIT]
    detail = f"{detail} session {peer.id[:6]}"

    def entry(action: AuditAction) -> AuditRecord:
        return AuditRecord(cid, grant.identity, grant.name, str(grant.role), action, detail=detail)

    ended = AuditAction.PUBLISH_END if publishing else AuditAction.VIEW_END
    try:
        await trail.submit(entry(AuditAction.PUBLISH if publishing else AuditAction.VIEW))
    except Exception as exc:  # no session the trail does not know of
        await router.end_session(peer.id)
        raise ApiError(
            503, "unavailable", "the server could not record this session; try again shortly"
        ) from exc
    peer.on_closed(lambda _: trail.submit(entry(ended)))


async def _still_granted(request: web.Request, grant: Grant, router: Router, peer: Peer) -> None:
    """The token was checked before the offer was answered. A withdrawal meanwhile ended only
    the sessions the Router had then, not this one: end it and refuse as the token now is."""
    refusal = request.app[REVOCATIONS].refusal(grant)
    if refusal is not None:
        await router.end_session(peer.id)
        raise TokenWithdrawn(refusal)


def _created(request: web.Request, kind: str, cid: ConsultationId, peer: Peer) -> web.Response:
    location = f"/{kind}/{cid}/sessions/{peer.id}"
    headers = {**CORS, "Location": location, "ETag": peer.etag, "Accept-Patch": SDPFRAG}
    response = web.Response(status=201, text=peer.answer_sdp, content_type=SDP, headers=headers)
    _add_ice_server_links(request, response, request[GRANT])
    return response


def _add_ice_server_links(request: web.Request, response: web.Response, grant: Grant) -> None:
    for server in request.app[ICE_SERVERS].for_identity(grant.identity):
        response.headers.add("Link", ice_server_link(server))


def ice_server_link(server: IceServer) -> str:
    """RFC 9725 §4.6: ``<turn:host>; rel="ice-server"; username="…"; credential="…";
    credential-type="password"``, values as RFC 8288 quoted strings."""
    link = f'<{server.url}>; rel="ice-server"'
    if server.username is not None:
        link += f"; username={_quoted(server.username)}"
        link += f"; credential={_quoted(server.credential or '')}"
        link += '; credential-type="password"'
    return link


def _quoted(value: str) -> str:
    """An RFC 7230 quoted-string (what RFC 8288 link parameters use): escape ``\\`` and ``"``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
