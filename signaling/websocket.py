"""``GET /ws/{cid}``: the consultation's WebSocket, protocol v1 (docs/architecture.md).

Every failure upgrades first and then closes with a 44xx code: browsers cannot read the HTTP status
of a refused handshake, but they do get the close code and reason. Messages are parsed by
``protocol`` and handled by one small function per type; all sending goes through the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, hdrs, web

from relay import FeedName, FeedState

from .auth import authenticate
from .grants import Forbidden, Grant, TokenInvalid
from .hub import Hub, Participant, close_socket, utc_timestamp
from .keys import HUB, RELAY, SETTINGS, STORE, TOKENS
from .protocol import (
    INVALID,
    AuthMessage,
    ChatMessage,
    ClientMessage,
    PingMessage,
    ProtocolError,
    StatsMessage,
    parse_client_message,
)
from .store import Consultation, valid_consultation_id

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
HEARTBEAT_S = 2.0
"Ping interval; a client that does not answer within half of it is dropped (~3 s in all)."
AUTH_TIMEOUT_S = 5.0
"Default for ``settings.extra['ws_auth_timeout_s']``: time to send the auth message."

CLOSE_MALFORMED = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_CONSULTATION = 4404
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_FLOOD = 4429


class Rejected(Exception):
    """Ends the connection with a close code and a reason the client can show."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ClientGone(Exception):
    """The socket is closed: by the client, by the hub, or by aiohttp after ``error`` (an
    oversized frame, already answered with 1009, or unanswered heartbeat pings)."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class Session:
    """What a message handler needs: where it is and on whose behalf."""

    hub: Hub
    cid: str
    participant: Participant

    def reply(self, message: dict[str, Any]) -> None:
        self.hub.send(self.cid, self.participant, message)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/{cid}", websocket_handler)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    cid = request.match_info["cid"]
    label = cid if valid_consultation_id(cid) else "<invalid id>"  # never log raw URL text
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    hub.track(ws)
    participant: Participant | None = None
    code, reason = WSCloseCode.OK, ""
    try:
        grant = await _authenticate(request, ws)
        consultation = await _admit(request, grant, cid)
        participant = Participant(grant.identity, grant.name, grant.role, ws)
        hub.join(cid, participant)
        hub.send(cid, participant, _welcome(request, cid, grant, consultation))
        await _serve(Session(hub, cid, participant), label)
    except Rejected as exc:
        logger.info(
            "WebSocket [consultation:%s] closing %s with %d: %s",
            label,
            _who(participant),
            exc.code,
            exc.reason,
        )
        code, reason = exc.code, exc.reason
    except ClientGone as exc:
        if exc.error is not None:
            logger.info(
                "WebSocket [consultation:%s] %s dropped: %s", label, _who(participant), exc.error
            )
    finally:
        if participant is not None:
            hub.leave(cid, participant)
        hub.untrack(ws)
        await close_socket(ws, code, reason, hub.close_timeout_s)
    return ws


async def _authenticate(request: web.Request, ws: web.WebSocketResponse) -> Grant:
    """Bearer header if sent (clients that can set headers), else the first message (browsers)."""
    try:
        if hdrs.AUTHORIZATION in request.headers:
            return authenticate(request)
        return request.app[TOKENS].verify(await _auth_message(request, ws))
    except TokenInvalid as exc:
        raise Rejected(CLOSE_UNAUTHORIZED, str(exc)) from None


async def _auth_message(request: web.Request, ws: web.WebSocketResponse) -> str:
    timeout = float(request.app[SETTINGS].extra.get("ws_auth_timeout_s", AUTH_TIMEOUT_S))
    try:
        text = await _next_text(ws, timeout)
    except TimeoutError:
        raise Rejected(CLOSE_AUTH_TIMEOUT, f"no auth message within {timeout:g} s") from None
    try:
        message = parse_client_message(text)
    except ProtocolError as exc:
        if exc.fatal:
            raise Rejected(CLOSE_MALFORMED, exc.reason) from None
        raise Rejected(CLOSE_UNAUTHORIZED, exc.reason) from None
    if not isinstance(message, AuthMessage):
        raise Rejected(CLOSE_UNAUTHORIZED, "missing token: the first message must be auth")
    return message.token


async def _admit(request: web.Request, grant: Grant, cid: str) -> Consultation:
    try:
        grant.ensure_member(cid)
    except Forbidden as exc:
        raise Rejected(CLOSE_FORBIDDEN, str(exc)) from None
    consultation = await request.app[STORE].get(cid)
    if consultation is None:
        raise Rejected(CLOSE_UNKNOWN_CONSULTATION, "unknown consultation")
    return consultation


def _welcome(
    request: web.Request, cid: str, grant: Grant, consultation: Consultation
) -> dict[str, Any]:
    router = request.app[RELAY].find(cid)
    if router is not None:
        feeds: dict[str, dict[str, str | None]] = router.feed_states()
    else:
        feeds = {
            str(name): {"state": str(FeedState.OFFLINE), "identity": None} for name in FeedName
        }
    return {
        "type": "welcome",
        "you": {
            "identity": grant.identity,
            "name": grant.name,
            "role": str(grant.role),
            "may_publish": grant.may_publish,
            "may_annotate": grant.may_annotate,
        },
        "participants": request.app[HUB].participants(cid),
        "feeds": feeds,
        "consent": consultation.consent.to_json() if consultation.consent else None,
    }


async def _serve(session: Session, label: str) -> None:
    """Read until the client leaves; malformed frames and floods end the connection."""
    participant = session.participant
    while True:
        text = await _next_text(participant.ws)
        if not participant.allow_message():
            raise Rejected(CLOSE_FLOOD, "message flood")
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            if exc.fatal:
                raise Rejected(CLOSE_MALFORMED, exc.reason) from None
            logger.info(
                "WebSocket [consultation:%s] %s message rejected: %s",
                label,
                participant.identity,
                exc.reason,
            )
            session.reply({"type": "error", "code": exc.code, "reason": exc.reason})
            continue
        _HANDLERS[type(message)](session, message)


async def _next_text(ws: web.WebSocketResponse, timeout: float | None = None) -> str:
    """The next text frame; raises ``Rejected`` for binary frames, ``ClientGone`` once the
    socket is closed."""
    msg = await ws.receive(timeout)
    if msg.type is WSMsgType.TEXT:
        return msg.data
    if msg.type is WSMsgType.BINARY:
        raise Rejected(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
    raise ClientGone(msg.data if msg.type is WSMsgType.ERROR else None)


def _who(participant: Participant | None) -> str:
    return participant.identity if participant else "unauthenticated client"


def _on_chat(session: Session, message: ChatMessage) -> None:
    p = session.participant
    session.hub.broadcast(
        session.cid,
        {
            "type": "chat",
            "from": p.identity,
            "name": p.name,
            "role": str(p.role),
            "text": message.text,
            "ts": utc_timestamp(),
        },
    )


def _on_stats(session: Session, message: StatsMessage) -> None:
    p = session.participant
    session.hub.broadcast(
        session.cid,
        {"type": "stats", "from": p.identity, "role": str(p.role), "stats": message.stats},
        exclude=p,
    )


def _on_ping(session: Session, message: PingMessage) -> None:
    session.reply({"type": "pong"})


def _on_auth(session: Session, message: AuthMessage) -> None:
    session.reply({"type": "error", "code": INVALID, "reason": "already authenticated"})


_HANDLERS: dict[type[ClientMessage], Callable[[Session, Any], None]] = {
    ChatMessage: _on_chat,
    StatsMessage: _on_stats,
    PingMessage: _on_ping,
    AuthMessage: _on_auth,
}
