"""Serving the app, with the read deadlines aiohttp lacks: a slowloris client is cut early.

aiohttp (3.13, 3.14) has no header-read timeout: its only connection timer is the keep-alive one
(``keepalive_timeout``, 3630 s since 3.12, armed at connection start and between requests), so a
client sending its headers one byte at a time holds a connection and its task for an hour; a body
is read with no deadline at all. Here:

- **headers**: ``GuardedRequestHandler`` arms a timer at the first byte of a request's headers and
  cancels it when aiohttp has parsed them; at ``header_timeout_s`` it answers 408 and closes. An
  idle keep-alive connection (no byte sent) keeps aiohttp's own timer;
- **bodies**: ``body_deadline`` (``read_body``) reads one under ``asyncio.timeout``
  (``body_timeout_s``, more for a declared large body); past it the answer is 408 and aiohttp
  closes the connection after ``LINGERING_S``.

``GuardedRunner`` is ``web.AppRunner`` making its protocol objects that way; ``run_app`` is
``web.run_app`` (signals, cleanup) on it. The subclassing reads aiohttp's private
``RequestHandler`` state (``_request_count``, ``_waiter``, ``_upgraded``) and ``Server``'s
constructor arguments; ``tests/signaling/test_slowloris.py`` checks them on every upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from signaling.http.client_address import ClientAccessLogger
from signaling.http.errors import ApiError

logger = logging.getLogger(__name__)

MIN_BODY_BYTES_PER_S = 64 * 1024
"The slowest upload a large body is given time for (0.5 Mbit/s), on top of the body timeout."
LINGERING_S = 2.0
"How long aiohttp keeps reading a body the handler did not read (aiohttp's default is 10 s)."
_TOO_SLOW = json.dumps(
    {"error": "too-slow", "reason": "the request headers arrived too slowly; send them again"}
).encode()


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol object plus a deadline for each request's headers."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # Waiting for the next request: not in a handler, not reading a body left unread
        # (aiohttp's lingering), not a WebSocket.
        awaiting_headers = self._waiter is not None and not self._waiter.done()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed or self._upgraded:
            self._cancel_deadline()
        elif awaiting_headers and self._header_deadline is None:
            self._header_deadline = self._loop.call_later(
                self._header_timeout_s, self._headers_too_slow
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport is None:
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
    """``web.AppRunner`` whose connections have the header deadline."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, lingering_time=LINGERING_S, **kwargs)
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
) -> None:
    """Serve until SIGINT/SIGTERM, as ``web.run_app`` does; ``listening`` once bound.

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
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
            listening()
            await stop.wait()
        finally:
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
