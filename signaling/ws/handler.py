"""``GET /ws/{cid}``: the consultation's WebSocket, protocol v1 (docs/architecture.md).

Every failure upgrades first and then closes with a 44xx code: browsers cannot read the HTTP status
of a refused handshake, but they do get the close code and reason. Messages are parsed by
``protocol`` and handled by one small function per type; all sending goes through the hub.

Annotation ops and pointer moves have their own rate limits (a pen stroke streams as updates):
over them a message is refused with ``rate-limited``, and each refusal also counts against the
general allowance, so a client that keeps flooding is still closed with 4429. The board's
messages (annotation ops, pointer moves, freezes) are handled in ``annotations``, the others
here. Joining makes no media state: the Router is made by the first mark or freeze (or by media),
and ``welcome`` shows an empty board and offline feeds while there is none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, hdrs, web

from relay import AnnotationBoard, ConsultationId
from signaling.auth.grants import Forbidden, Grant, TokenInvalid
from signaling.auth.request import authenticate, path_cid
from signaling.cluster.edge import bridged
from signaling.db.store import Consultation, valid_consultation_id
from signaling.http.audit_edge import note_refused_token
from signaling.http.errors import ApiError
from signaling.keys import (
    ANNOTATION_LOGS,
    CHAT_HISTORY,
    HUB,
    PICTURES,
    PRIVACY,
    RECORDINGS,
    RELAY,
    SETTINGS,
    STILLS,
    STORE,
    THROTTLE,
    TOKENS,
)
from signaling.ws.annotations import freeze_state, on_annotation, on_freeze, on_pointer
from signaling.ws.connection import Connection
from signaling.ws.frames import (
    CLOSE_BAD_NAME,
    CLOSE_FLOOD,
    CLOSE_FORBIDDEN,
    CLOSE_MALFORMED,
    CLOSE_TIMEOUT,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_CONSULTATION,
    HEARTBEAT_S,
    MAX_MESSAGE_BYTES,
    ClientGone,
    Rejected,
    next_text,
)
from signaling.ws.hub import (
    ANNOTATION_OPS_PER_S,
    POINTER_MOVES_PER_S,
    Participant,
    TokenBucket,
    close_socket,
)
from signaling.ws.messages import (
    ChatHistoryMessage,
    ErrorReply,
    MediaClockUpdate,
    Pong,
    RecordingUpdate,
    Stats,
    Welcome,
    You,
)
from signaling.ws.protocol import (
    BAD_NAME,
    INVALID,
    RATE_LIMITED,
    AnnotationMessage,
    AuthMessage,
    ChatMessage,
    ClientMessage,
    FreezeMessage,
    PingMessage,
    PointerMessage,
    ProtocolError,
    StatsMessage,
    StillsRequestMessage,
    parse_client_message,
)
from signaling.ws.stills import on_stills_request

logger = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/{cid}", websocket_handler)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    cid = path_cid(request)
    if (elsewhere := await bridged(request, cid)) is not None:  # another node's consultation
        return elsewhere
    label = cid if valid_consultation_id(cid) else "<invalid id>"  # never log raw URL text
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    hub.track(ws)
    participant: Participant | None = None
    code: int = WSCloseCode.OK
    reason = ""
    lost = True  # unless a close is seen: aiohttp cancels this handler when the TCP link dies
    try:
        grant, chosen_name = await _authenticate(request, ws)
        consultation = await _admit(request, grant, cid)
        # A name on the link (the coordinator's) wins over one typed on the page.
        name = grant.name or chosen_name or ""
        participant = Participant(grant.identity, name, grant.role, ws)
        chats = request.app[CHAT_HISTORY]
        history = await chats.recent(cid)  # no await from here to join: no message lost or doubled
        hub.join(cid, participant)
        hub.send(cid, participant, _welcome(request, grant, consultation, name))
        hub.send(cid, participant, ChatHistoryMessage(history))
        relay, log = request.app[RELAY], request.app[ANNOTATION_LOGS].get(cid)
        if (router := relay.find(cid)) is not None:  # its video sessions, for anchored marks
            for clock in router.media_clocks(grant.identity):
                hub.send(cid, participant, MediaClockUpdate.of(clock))
        connection = Connection(
            hub,
            cid,
            participant,
            grant,
            relay,
            consultation.video_codec,
            log,
            chats,
            request.app[SETTINGS].data_dir,
            request.app[SETTINGS].ws_frame_deadline_s,
            request.app[STILLS],
        )
        await _until_expiry(grant, _serve(connection))
    except Rejected as exc:
        logger.info(
            "WebSocket [consultation:%s] closing %s with %d: %s",
            label,
            _who(participant),
            exc.code,
            exc.reason,
        )
        code, reason, lost = exc.code, exc.reason, False
    except ClientGone as exc:
        lost = exc.lost
        if exc.error is not None:
            logger.info(
                "WebSocket [consultation:%s] %s dropped: %s", label, _who(participant), exc.error
            )
    finally:
        if participant is not None:
            hub.leave(cid, participant, lost=lost)
        hub.untrack(ws)
        await close_socket(ws, code, reason, hub.close_timeout_s)
    return ws


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Grant, str | None]:
    """The Bearer header if sent, else the first message (browsers; with a name typed there)."""
    throttle = request.app[THROTTLE]
    try:
        if hdrs.AUTHORIZATION in request.headers:
            return throttle.verify(request, authenticate, request), None
        message = await _auth_message(request, ws)
        return throttle.verify(request, request.app[TOKENS].verify, message.token), message.name
    except ApiError as exc:  # too many refused tokens from this address
        raise Rejected(CLOSE_FLOOD, exc.reason) from None
    except TokenInvalid as exc:
        note_refused_token(request)
        raise Rejected(exc.close_code, str(exc)) from None


async def _auth_message(request: web.Request, ws: web.WebSocketResponse) -> AuthMessage:
    timeout = request.app[SETTINGS].ws_auth_timeout_s
    try:
        async with asyncio.timeout(timeout):  # one deadline for the whole phase: pongs or
            text = await next_text(ws, None)  # pings do not restart it
    except TimeoutError:
        raise Rejected(CLOSE_TIMEOUT, f"no auth message within {timeout:g} s") from None
    try:
        message = parse_client_message(text)
    except ProtocolError as exc:
        if exc.fatal:
            raise Rejected(CLOSE_MALFORMED, exc.reason) from None
        if exc.code == BAD_NAME:
            raise Rejected(CLOSE_BAD_NAME, exc.reason) from None
        raise Rejected(CLOSE_UNAUTHORIZED, exc.reason) from None
    if not isinstance(message, AuthMessage):
        raise Rejected(CLOSE_UNAUTHORIZED, "missing token: the first message must be auth")
    return message


async def _admit(request: web.Request, grant: Grant, cid: ConsultationId) -> Consultation:
    try:
        grant.ensure_member(cid)
    except Forbidden as exc:
        raise Rejected(CLOSE_FORBIDDEN, str(exc)) from None
    consultation = await request.app[STORE].get(cid)
    if consultation is None:
        raise Rejected(CLOSE_UNKNOWN_CONSULTATION, "unknown consultation")
    return consultation


def _welcome(request: web.Request, grant: Grant, consultation: Consultation, name: str) -> Welcome:
    relay = request.app[RELAY]
    router = relay.find(consultation.id)
    board = router.board if router is not None else AnnotationBoard()
    return Welcome(
        You.of(grant, name),
        request.app[HUB].participants(consultation.id),
        relay.feed_states(consultation.id),
        consultation.consent.to_json() if consultation.consent else None,
        [a.to_json() for a in board.visible(time.time())],
        freeze_state(consultation.id, board),
        RecordingUpdate.of(request.app[RECORDINGS].state(consultation.id)),
        len(board.archived),
        request.app[STILLS].state(consultation.id),
        request.app[PRIVACY].out_of_body(consultation.id),
        picture=request.app[PICTURES].state(consultation.id),
    )


async def _until_expiry(grant: Grant, serving: Coroutine[Any, Any, None]) -> None:
    """A socket lives no longer than its token: an invite that expires mid-connection ends it."""
    try:
        async with asyncio.timeout(max(0.0, grant.expires_at - time.time())):
            await serving
    except TimeoutError:
        raise Rejected(CLOSE_UNAUTHORIZED, "token expired: open your invite link again") from None


async def _serve(connection: Connection) -> None:
    """Read until the client leaves; malformed frames and floods end the connection."""
    participant = connection.participant
    while True:
        text = await next_text(participant.ws, connection.frame_deadline_s)
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            if not participant.allow_message():
                raise Rejected(CLOSE_FLOOD, "message flood") from None
            if exc.fatal:
                raise Rejected(CLOSE_MALFORMED, exc.reason) from None
            connection.refuse(exc.code, exc.reason)
            continue
        own_limit = _OWN_LIMITS.get(type(message))
        if own_limit is None or not own_limit(participant).take():
            if not participant.allow_message():
                raise Rejected(CLOSE_FLOOD, "message flood")
            if own_limit is not None:
                connection.refuse(RATE_LIMITED, _RATE_REASONS[type(message)])
                continue
        connection.hub.counts.received[type(message).__name__.removesuffix("Message").lower()] += 1
        await _HANDLERS[type(message)](connection, message)


def _who(participant: Participant | None) -> str:
    return participant.identity if participant else "unauthenticated client"


async def _on_chat(connection: Connection, message: ChatMessage) -> None:
    """Stored with the consultation (history, replay), then to everyone, the sender too."""
    p, router = connection.participant, connection.relay.find(connection.cid)
    chat = await connection.chats.add(
        connection.cid,
        p.identity,
        p.name,
        p.role,
        message.text,
        connection.log,
        router.media_pts() if router is not None else None,
    )
    connection.hub.broadcast(connection.cid, chat)


async def _on_stats(connection: Connection, message: StatsMessage) -> None:
    p = connection.participant
    connection.hub.broadcast(
        connection.cid,
        Stats(p.identity, p.device, p.role, message.stats),
        exclude=p,
    )


async def _on_ping(connection: Connection, message: PingMessage) -> None:
    connection.reply(Pong())


async def _on_auth(connection: Connection, message: AuthMessage) -> None:
    connection.reply(ErrorReply(INVALID, "already authenticated"))


_HANDLERS: dict[type[ClientMessage], Callable[[Connection, Any], Awaitable[None]]] = {
    ChatMessage: _on_chat,
    StatsMessage: _on_stats,
    PingMessage: _on_ping,
    AuthMessage: _on_auth,
    AnnotationMessage: on_annotation,
    PointerMessage: on_pointer,
    FreezeMessage: on_freeze,
    StillsRequestMessage: on_stills_request,
}
_OWN_LIMITS: dict[type[ClientMessage], Callable[[Participant], TokenBucket]] = {
    AnnotationMessage: lambda p: p.annotation_ops,
    PointerMessage: lambda p: p.pointer_moves,
}
_RATE_REASONS: dict[type[ClientMessage], str] = {
    AnnotationMessage: f"at most {ANNOTATION_OPS_PER_S:g} annotation messages per second",
    PointerMessage: f"at most {POINTER_MOVES_PER_S:g} pointer messages per second",
}
