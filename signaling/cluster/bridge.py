"""A consultation WebSocket that landed on a node not owning the consultation, bridged to the
owner's ``/ws/{cid}`` so that one consultation is one room whichever node a page reached (the
room's state lives in the owner's Hub only; this node forwards frames and nothing else).

The bridge speaks no protocol: it forwards text and binary frames as they are (the ``auth``
message included), in both directions, until one side closes, and passes the close code and
reason on (the owner's 4401 reaches the page as 4401). The owner cannot be reached, or goes away
without a close frame (a crashed node): the page gets 1012 and reconnects, and its next
connection is routed to the consultation's new owner.

The owner names the real client from ``X-Forwarded-For`` only if this node's address is in the
owner's ``ENDOLINK_TRUSTED_PROXIES`` (signaling/http/client_address.py): list every node there
(and the load balancer), or per-address limits and the refused-token audit count the node. The
chain received is passed on with this node's peer appended; the owner takes the right-most
address that is no trusted proxy, so what a client wrote left of it is never believed.

Nothing here logs tokens, names or messages: only the consultation id and close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from yarl import URL

from signaling.db.store import valid_consultation_id
from signaling.ws.frames import HEARTBEAT_S, MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
"Connecting to the owner, TCP and TLS and the upgrade: longer and the page waits for nothing."
CLOSE_TIMEOUT_S = 2.0
"A peer that does not answer a close frame in time has its TCP connection cut."
OWNER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The owner is one of ours, but its messages (``welcome``, ``chat_history``) can outgrow the
clients' 64 KiB; this only guards against a runaway, never an attacker."""

UNREACHABLE = "the consultation's server is not reachable; reconnecting"
CLOSE_CLIENT_LOST = 4000
"""To the owner when the page's connection broke without a close frame: the code a page itself
uses when it abandons a dead socket, so the owner holds the participant as reconnecting."""

_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class SocketTracker(Protocol):
    """Where shutdown finds every open socket (``Hub.track`` / ``Hub.untrack``)."""

    def track(self, ws: web.WebSocketResponse) -> None: ...

    def untrack(self, ws: web.WebSocketResponse) -> None: ...


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


@dataclass(frozen=True)
class _Ending:
    """How a bridge ends: what to tell each side (a side already closed is told nothing)."""

    client: _Close
    owner: _Close


_CLOSED = _Close(WSCloseCode.OK, "")  # for a side that closed already: nothing is sent
_OWNER_GONE = _Ending(
    _Close(WSCloseCode.SERVICE_RESTART, UNREACHABLE),
    _Close(WSCloseCode.GOING_AWAY, "owner gone"),
)
_CLIENT_LOST = _Ending(
    _Close(WSCloseCode.SERVICE_RESTART, "server restarting"),  # if the page is there at all
    _Close(CLOSE_CLIENT_LOST, "the client's connection was lost"),
)
_SHUTDOWN = _Ending(  # this node closed the page's socket (``Hub.close_all``)
    _Close(WSCloseCode.SERVICE_RESTART, "server restarting"),
    _Close(WSCloseCode.SERVICE_RESTART, "the client's server is restarting"),
)


def owner_ws_url(owner_url: str, target: URL) -> URL:
    """``owner_url`` (``https://node-a.example:8443``) with ``target``'s path and query, in the
    WebSocket scheme (``https`` → ``wss``)."""
    base = URL(owner_url)
    scheme = _SCHEMES.get(base.scheme)
    if scheme is None or not base.host:
        raise ValueError(f"not an http(s) base URL: {owner_url!r}")
    path = base.raw_path.rstrip("/") + target.raw_path
    query = f"?{target.raw_query_string}" if target.raw_query_string else ""
    return URL(f"{scheme}://{base.raw_authority}{path}{query}", encoded=True)


def forwarded_headers(request: web.Request) -> dict[str, str]:
    """The client's ``Authorization`` (if any) and who the client is, for the owner."""
    chain = [h for h in request.headers.getall(hdrs.X_FORWARDED_FOR, []) if h.strip()]
    if request.remote:
        chain.append(request.remote)
    headers: dict[str, str] = {hdrs.X_FORWARDED_PROTO: request.scheme}  # the hop to this node
    if chain:
        headers[hdrs.X_FORWARDED_FOR] = ", ".join(chain)
    if (authorization := request.headers.get(hdrs.AUTHORIZATION)) is not None:
        headers[hdrs.AUTHORIZATION] = authorization
    return headers


async def bridge(
    request: web.Request,
    owner_url: str,
    session: aiohttp.ClientSession,
    *,
    ssl: ssl_module.SSLContext | bool | None = None,
    tracker: SocketTracker | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> web.WebSocketResponse:
    """Serve ``request`` (an upgrade to ``/ws/{cid}``) by bridging it to the owner node at
    ``owner_url``. ``ssl`` is aiohttp's (a context trusting the nodes' CA, say); ``tracker``
    (the app's Hub) lets shutdown close the page's socket, and the bridge then tells the owner."""
    cid = request.match_info.get("cid", "")
    label = cid if valid_consultation_id(cid) else "<invalid id>"  # never log raw URL text
    url = owner_ws_url(owner_url, request.rel_url)
    client = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await client.prepare(request)
    if tracker is not None:
        tracker.track(client)
    owner: aiohttp.ClientWebSocketResponse | None = None
    pumps: tuple[asyncio.Task[_Ending], ...] = ()
    try:
        owner = await _connect(session, url, forwarded_headers(request), ssl, connect_timeout_s)
        if owner is None:
            logger.info("Bridge [consultation:%s] owner not reachable: closing with 1012", label)
            return client
        pumps = (
            asyncio.create_task(_client_to_owner(client, owner), name="bridge upstream"),
            asyncio.create_task(_owner_to_client(owner, client), name="bridge downstream"),
        )
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Cancelled or not (aiohttp may cancel a handler whose page's TCP link ended), the
        # pumps are stopped and both links closed: nothing outlives the handler.
        ending = await _stop(pumps) if owner is not None else _OWNER_GONE
        closing = [_close(client, ending.client)]
        if owner is not None:
            logger.info(
                "Bridge [consultation:%s] closing: %d to the client, %d to the owner",
                label,
                ending.client.code,
                ending.owner.code,
            )
            closing.append(_close(owner, ending.owner))
        try:
            await asyncio.gather(*closing)
        finally:
            if tracker is not None:
                tracker.untrack(client)
    return client


async def _connect(
    session: aiohttp.ClientSession,
    url: URL,
    headers: dict[str, str],
    ssl: ssl_module.SSLContext | bool | None,
    timeout: float,
) -> aiohttp.ClientWebSocketResponse | None:
    """The owner's socket, or None when it cannot be had in time (refused, no answer, TLS, an
    HTTP answer instead of the upgrade): a network failure, never a traceback."""
    try:
        async with asyncio.timeout(timeout):
            return await session.ws_connect(
                url,
                headers=headers,
                heartbeat=HEARTBEAT_S,  # a half-open link to a dead node ends in ~3 s
                max_msg_size=OWNER_MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                ssl=True if ssl is None else ssl,
            )
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


async def _stop(pumps: tuple[asyncio.Task[_Ending], ...]) -> _Ending:
    """Cancel the pumps still running; how the first one to finish ended the bridge (if none
    did, the handler was cancelled: the page is gone)."""
    ended = [pump for pump in pumps if pump.done()]
    for pump in pumps:
        pump.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    for pump in ended:
        if pump.cancelled():
            continue
        if (error := pump.exception()) is None:
            return pump.result()
        logger.error("Bridge pump failed", exc_info=error)  # a bug: network failures are results
    return _CLIENT_LOST


async def _passed_on(
    msg: aiohttp.WSMessage, to: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
) -> bool:
    """A text or binary frame sent on as it is; False for anything else (a close, an error)."""
    if msg.type is WSMsgType.TEXT:
        await to.send_str(msg.data)
    elif msg.type is WSMsgType.BINARY:
        await to.send_bytes(msg.data)
    else:
        return False
    return True


async def _client_to_owner(
    client: web.WebSocketResponse, owner: aiohttp.ClientWebSocketResponse
) -> _Ending:
    while True:
        msg = await client.receive()
        try:
            if await _passed_on(msg, owner):
                continue
            if msg.type is WSMsgType.CLOSE:  # the page closed: the owner is told the same
                return _Ending(_CLOSED, _Close(_sendable(msg.data), msg.extra or ""))
            elif msg.type is WSMsgType.CLOSING:
                return _SHUTDOWN
            else:  # CLOSED, ERROR: no close frame (or a broken one)
                return _CLIENT_LOST
        except ConnectionError:
            return _OWNER_GONE


async def _owner_to_client(
    owner: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse
) -> _Ending:
    while True:
        msg = await owner.receive()
        try:
            if await _passed_on(msg, client):
                continue
            if msg.type is WSMsgType.CLOSE:  # the owner's verdict (4401...) reaches the page
                return _Ending(_Close(_sendable(msg.data), msg.extra or ""), _CLOSED)
            else:  # CLOSED, ERROR: the owner went away without a word (a crash, a dead link)
                return _OWNER_GONE
        except ConnectionError:
            return _CLIENT_LOST


def _sendable(code: object) -> int:
    """``code`` if a close frame may carry it; a close without a code was a clean one."""
    if isinstance(code, int) and 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015):
        return code
    return WSCloseCode.OK


async def _close(
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, close: _Close
) -> None:
    """Close with a code and reason (RFC 6455: at most 123 bytes); bounded, never raising for a
    peer that is gone. A socket already closed is left as it is."""
    message = close.reason.encode()[:123].decode(errors="ignore").encode()
    with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
        await asyncio.wait_for(ws.close(code=close.code, message=message), CLOSE_TIMEOUT_S)
