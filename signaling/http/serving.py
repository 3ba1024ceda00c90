"""Serving the app, with the read deadlines aiohttp lacks: a slowloris client is cut early.

aiohttp (3.13, 3.14) has no header-read timeout: its only connection timer is the keep-alive one
(``keepalive_timeout``, 3630 s by default since 3.12), so a client sending its headers one byte
at a time, or nothing at all, holds a connection and its task for an hour; a body is read with
no deadline at all. Here:

- **headers**: ``GuardedRequestHandler`` arms a timer when a request's headers are due — at the
  connection's start, and at the first byte of each later request, including one whose first
  bytes came with the end of the request before (``Framing``) — and cancels it when aiohttp has
  parsed them; at ``header_timeout_s`` it answers 408 and closes (a connection that sent nothing
  is just closed);
- **idle keep-alive**: a connection between two requests, no byte sent, is closed after
  ``KEEPALIVE_S`` (aiohttp's own timer; ``web.run_app``'s value);
- **bodies**: ``body_deadline`` (``read_body``) reads one under ``asyncio.timeout``
  (``body_timeout_s``, more for a declared large body); past it the answer is 408 and aiohttp
  closes the connection after ``LINGERING_S``;
- **shutdown**: requests still running when the server stops (a replay stream, a download) get
  ``SHUTDOWN_GRACE_S`` to finish, then are cancelled (aiohttp waits 60 s).

``GuardedRunner`` is ``web.AppRunner`` making its protocol objects that way; ``run_app`` is
``web.run_app`` (signals, cleanup) on it. The subclassing reads aiohttp's private
``RequestHandler`` state (``_request_count``, ``_messages``, ``_waiter``, ``_upgraded``) and
``Server``'s constructor arguments; ``tests/signaling/test_slowloris.py`` checks them on every
upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from signaling.http.client_address import ClientAccessLogger
from signaling.http.errors import ApiError

logger = logging.getLogger(__name__)

MIN_BODY_BYTES_PER_S = 64 * 1024
"The slowest upload a large body is given time for (0.5 Mbit/s), on top of the body timeout."
LINGERING_S = 2.0
"How long aiohttp keeps reading a body the handler did not read (aiohttp's default is 10 s)."
KEEPALIVE_S = 75.0
"How long an idle connection between two requests is kept (aiohttp's default is 3630 s)."
SHUTDOWN_GRACE_S = 5.0
"""At shutdown, how long requests still running are waited for before they are cancelled
(aiohttp's default is 60 s); recordings are finalised before this wait (docs/closures.md)."""
_TOO_SLOW = json.dumps(
    {"error": "too-slow", "reason": "the request headers arrived too slowly; send them again"}
).encode()


class Framing:
    """Where a connection's bytes stand between requests: inside a request's header block or
    not. aiohttp's C parser keeps this to itself, and a packet that ends one request may carry
    the first bytes of the next (pipelining). Header blocks (up to the blank line) and
    ``Content-Length`` bodies are followed; anything else (a chunked body, an upgrade, a parse
    error) ends the following: ``known`` turns False for the rest of the connection."""

    def __init__(self) -> None:
        self.known = True
        self.in_headers = False
        self._carry = b""  # the last bytes of a header block not complete yet
        self._body_left = 0

    def feed(self, data: bytes, messages: list[Any]) -> None:
        """``data`` as received, and the messages aiohttp's parser made of it (its C or its
        Python ``RawRequestMessage``, or its note of a parse error, which has no ``chunked``)."""
        if not self.known:
            return
        pos = min(self._body_left, len(data))
        self._body_left -= pos
        for message in messages:
            if getattr(message, "chunked", True) or message.upgrade:
                self.known = False
                return
            if not self.in_headers:
                pos = _past_blank_lines(data, pos)
            end = (self._carry + data[pos:]).find(b"\r\n\r\n")
            if end < 0:  # a block ended otherwise than llhttp's and ours agree on
                self.known = False
                return
            pos += end + 4 - len(self._carry)
            self._carry, self.in_headers = b"", False
            length = int(message.headers.get(hdrs.CONTENT_LENGTH) or 0)  # checked by the parser
            taken = min(length, len(data) - pos)
            pos += taken
            self._body_left = length - taken
        if self._body_left == 0:
            rest = data[pos:] if self.in_headers else data[_past_blank_lines(data, pos) :]
            if rest:
                self.in_headers = True
                self._carry = (self._carry + rest)[-3:]


def _past_blank_lines(data: bytes, pos: int) -> int:
    """Past the CR/LF bytes a client may send between requests (RFC 9112 2.2)."""
    return len(data) - len(data[pos:].lstrip(b"\r\n"))


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol object plus a deadline for each request's headers, from the moment
    they are due: the connection's start, or the first byte of a later request."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None
        self._framing = Framing()
        self._silent = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_deadline()  # a connection that never sends a byte is cut too

    def data_received(self, data: bytes) -> None:
        awaiting = self._awaiting_headers()
        before = self._request_count
        super().data_received(data)
        self._silent = self._silent and not data
        parsed = self._request_count - before
        if self._upgraded:
            self._framing.known = False
            self._cancel_deadline()
            return
        new = [message for message, _ in list(self._messages)[len(self._messages) - parsed :]]
        self._framing.feed(data, new)
        if parsed:
            self._cancel_deadline()
        if self._framing.in_headers if self._framing.known else awaiting and not parsed:
            self._arm_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        """Waiting for the next request: not in a handler, not reading a body left unread
        (aiohttp's lingering), not a WebSocket."""
        return self._waiter is not None and not self._waiter.done()

    def _arm_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self._loop.call_later(
                self._header_timeout_s, self._headers_too_slow
            )

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport is None:
            return
        if not self._awaiting_headers():  # a pipelined request waits for the one before it
            self._arm_deadline()
            return
        if self._silent:
            logger.debug("nothing sent within %g s: connection closed", self._header_timeout_s)
            self.force_close()
            return
        logger.warning(
            "request headers not complete within %g s: connection closed", self._header_timeout_s
        )
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(_TOO_SLOW)}\r\nConnection: close\r\n\r\n".encode()
            + _TOO_SLOW
        )
        self.force_close()  # the transport sends what it holds, then closes


class GuardedServer(web.Server):
    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections have the header deadline and this module's timers."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(
            app,
            lingering_time=LINGERING_S,
            keepalive_timeout=KEEPALIVE_S,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            **kwargs,
        )
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout_s=self._header_timeout_s,
            **plain._kwargs,
        )


def run_app(
    app: web.Application,
    host: str,
    port: int,
    header_timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    listening: Callable[[], None],
    drain: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, as ``web.run_app`` does; ``listening`` once bound. With
    ``drain`` (a node of a cluster), SIGTERM stops only once ``drain()`` returns (its
    consultations ended); SIGINT, or a second SIGTERM, stops at once.

    The signal only ends the wait: the cleanup (the pages told, sockets closed with 1001,
    recordings finalised: docs/closures.md) runs while every other task is still alive.
    (aiohttp's ``handle_signals`` raises out of the loop instead, and ``asyncio.run`` then
    cancels every task at once: WebSockets cut with 1000, nobody told.)"""

    async def serve() -> None:
        runner = GuardedRunner(
            app, header_timeout_s=header_timeout_s, access_log_class=ClientAccessLogger
        )
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        draining: list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            if drain is None or draining or signum == signal.SIGINT:
                stop.set()
                return
            draining.append(loop.create_task(drain()))
            draining[0].add_done_callback(lambda _: stop.set())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
            listening()
            await stop.wait()
        finally:
            for task in draining:
                task.cancel()
            await runner.cleanup()

    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve())


@contextlib.asynccontextmanager
async def body_deadline(request: web.Request, timeout_s: float) -> AsyncIterator[None]:
    """Around reading a request body: 408 when it is not in within ``timeout_s``, plus the time a
    declared large body (a snapshot, a network-test upload) needs at ``MIN_BODY_BYTES_PER_S``."""
    allowed_s = timeout_s + (request.content_length or 0) / MIN_BODY_BYTES_PER_S
    try:
        async with asyncio.timeout(allowed_s):
            yield
    except TimeoutError:
        raise ApiError(
            408, "too-slow", f"the request body did not arrive within {allowed_s:g} s"
        ) from None


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body (aiohttp's ``client_max_size`` applies) under ``body_deadline``."""
    async with body_deadline(request, timeout_s):
        return await request.read()
