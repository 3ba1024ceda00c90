"""Reading a consultation WebSocket: its limits, deadlines and close codes, and the next text
frame (``next_text``). Everything that ends a connection is ``Rejected`` (a close code and a
reason the page can show) or ``ClientGone``.

Two deadlines, neither of which the client can stretch: the auth phase has one wall-clock
deadline (``ENDOLINK_WS_AUTH_TIMEOUT_S``; aiohttp's receive timeout restarts at every pong, so a
client answering pings once held an unauthenticated socket for ever), and an authenticated socket
must complete a frame within ``ENDOLINK_WS_FRAME_DEADLINE_S``: an idle client answers the
heartbeat's pings (each pong is a frame, and restarts aiohttp's receive timeout); a client
trickling an unfinished frame byte by byte keeps resetting the heartbeat, so it gets no pings,
sends no complete frame and is closed with 4408.
"""

from __future__ import annotations

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

MAX_MESSAGE_BYTES = 64 * 1024
HEARTBEAT_S = 2.0
"Ping interval; a client that does not answer within half of it is dropped (~3 s in all)."

CLOSE_MALFORMED = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_CONSULTATION = 4404
CLOSE_TIMEOUT = 4408
"No auth message within the auth deadline, or no complete frame within the frame deadline."
CLOSE_BAD_NAME = 4422
"The name sent with ``auth`` cannot be used (empty, too long, control characters)."
CLOSE_FLOOD = 4429


class Rejected(Exception):
    """Ends the connection with a close code and a reason the client can show."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ClientGone(Exception):
    """The socket is closed: by the client, by the hub, or by aiohttp after ``error`` (an
    oversized frame, already answered with 1009, or unanswered heartbeat pings). ``lost``: the
    connection broke rather than its page closing it (1000, or 1001 when the page is unloaded),
    so the others see the participant as reconnecting for a while."""

    def __init__(self, error: BaseException | None = None, lost: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.lost = lost


async def next_text(ws: web.WebSocketResponse, timeout: float | None) -> str:
    """The next text frame; raises ``Rejected`` for binary frames and for no complete frame
    within ``timeout`` (pongs count), ``ClientGone`` once the socket is closed."""
    try:
        msg = await ws.receive(timeout)
    except TimeoutError:
        raise Rejected(CLOSE_TIMEOUT, f"no complete message within {timeout:g} s") from None
    if msg.type is WSMsgType.TEXT:
        text: str = msg.data
        return text
    if msg.type is WSMsgType.BINARY:
        raise Rejected(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
    if msg.type is WSMsgType.CLOSE:
        raise ClientGone(lost=msg.data not in (WSCloseCode.OK, WSCloseCode.GOING_AWAY))
    if msg.type is WSMsgType.ERROR:  # a protocol violation is no lost connection
        raise ClientGone(msg.data, lost=not isinstance(msg.data, WebSocketError))
    raise ClientGone(lost=True)  # the TCP connection ended without a close frame
