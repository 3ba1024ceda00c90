"""``/healthz``, ``/readyz`` and ``/metrics``, and the middleware that counts every answer.

Health needs no token and says nothing sensitive (no path, no id, no version). ``/metrics`` is
read with ``ENDOLINK_METRICS_TOKEN`` as a bearer token; without that setting only a client on
the loopback interface that did not come through a proxy may read it, so a server bound to a
public address never shows it to the world by default (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import sqlite3

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from signaling.http.errors import ApiError, Handler
from signaling.keys import HUB, METRICS, RECORDINGS, RELAY, SETTINGS, STORE
from signaling.ops.metrics import error_kind

logger = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 2.0
_PROXY_HEADERS = (hdrs.FORWARDED, hdrs.X_FORWARDED_FOR, "X-Real-IP")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts each answer by route template and status, and refusals by kind. Outermost, so it
    sees what the error middleware made of an exception."""
    counter = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects (the error middleware answers the rest)
        counter.count(request, exc.status, None)
        raise
    except asyncio.CancelledError:  # the client went away: no answer
        raise
    except Exception:
        counter.count(request, 500, "internal")
        raise
    counter.count(request, response.status, error_kind(response))
    return response


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its loop answers; nothing else is checked (cheap)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve consultations: database readable, disk above the recording floor, and
    not shutting down. 503 names what is not ready, in words."""
    app = request.app
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            await app[STORE].ping()
    except (sqlite3.Error, TimeoutError) as exc:
        logger.warning("readyz: database not readable (%s)", type(exc).__name__)
        problems["database"] = "the database cannot be read"
    if await app[RECORDINGS].low_disk():
        problems["disk"] = "free disk space is below the recording floor"
    if app[RELAY].closed or app[HUB].closing:
        problems["server"] = "the server is shutting down"
    checks = {name: problems.get(name, "ok") for name in ("database", "disk", "server")}
    body = {"status": "not-ready" if problems else "ready", "checks": checks}
    return web.json_response(body, status=503 if problems else 200)


async def metrics(request: web.Request) -> web.Response:
    _ensure_may_read(request)
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


def _ensure_may_read(request: web.Request) -> None:
    token = request.app[SETTINGS].metrics_token
    if token:
        given = request.headers.get(hdrs.AUTHORIZATION, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            raise ApiError(
                401,
                "unauthorized",
                "metrics need the metrics token (ENDOLINK_METRICS_TOKEN) as a bearer token",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return
    if not _loopback(request.remote) or any(h in request.headers for h in _PROXY_HEADERS):
        raise ApiError(
            403,
            "forbidden",
            "metrics are served to this machine only; set ENDOLINK_METRICS_TOKEN to read them "
            "from elsewhere",
        )


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:  # a Unix socket has no address
        return False
