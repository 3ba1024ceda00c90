"""``/healthz``, ``/readyz`` and ``/metrics``, and the middleware that counts every answer.

Health needs no token and says nothing sensitive (no path, no id, no version); ``/readyz``'s
database and disk probe runs once at a time, its answer reused for a second (``Readiness``).
``/metrics`` is read with ``ENDOLINK_METRICS_TOKEN`` as a bearer token (a wrong one spends the
address's failed-authentication budget); without that setting only a server listening on a
loopback address, with no trusted proxy set, serves it, and only to a loopback client that did
not come through a proxy: a proxy that adds no ``X-Forwarded-For`` (nginx's bare
``proxy_pass``) cannot be told from a local client (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from persistence.database import DATABASE_ERRORS
from recorder.recordings import Recordings
from signaling.db.store import ConsultationStore
from signaling.http.client_address import client_address
from signaling.http.errors import ApiError, Handler
from signaling.keys import CLUSTER, HUB, METRICS, RECORDINGS, RELAY, SETTINGS, STORE, THROTTLE
from signaling.ops.metrics import error_kind

logger = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 2.0
PROBE_FRESH_S = 1.0
_PROXY_HEADERS = (hdrs.FORWARDED, hdrs.X_FORWARDED_FOR, "X-Real-IP")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", Readiness(app[STORE], app[RECORDINGS]).readyz)
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


class Readiness:
    """``/readyz``. Its database ping and ``statvfs`` run in the executor every request shares:
    one probe runs at a time and its answer serves every request for ``PROBE_FRESH_S``, and a
    ping the database has not answered stays the only one until it returns, so probes against a
    stuck database cannot pile threads up there."""

    def __init__(self, store: ConsultationStore, recordings: Recordings) -> None:
        self._store = store
        self._recordings = recordings
        self._ping: asyncio.Future[None] | None = None
        self._probe: asyncio.Future[dict[str, str]] | None = None
        self._problems: dict[str, str] = {}
        self._probed_at = -PROBE_FRESH_S

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready to serve consultations: database readable, disk above the recording floor,
        and not shutting down. 503 names what is not ready, in words. In a cluster, the link
        to Redis too: without it the node is ``degraded`` (200), its live consultations go on."""
        problems = dict(await self._problems_now())
        if request.app[RELAY].closed or request.app[HUB].closing:
            problems["server"] = "the server is shutting down"
        checks = {name: problems.get(name, "ok") for name in ("database", "disk", "server")}
        body: dict[str, object] = {"status": "not-ready" if problems else "ready"}
        if (cluster := request.app.get(CLUSTER)) is not None:
            # Not a reason to take the node out: its live consultations go on without Redis.
            checks["cluster"] = cluster.problem or ("draining" if cluster.draining else "ok")
            if cluster.problem is not None and not problems:
                body["status"] = "degraded"
        body["checks"] = checks
        return web.json_response(body, status=503 if problems else 200)

    async def _problems_now(self) -> dict[str, str]:
        if time.monotonic() - self._probed_at < PROBE_FRESH_S:
            return self._problems
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._run_probe())
        return await asyncio.shield(self._probe)  # a client leaving does not end it

    async def _run_probe(self) -> dict[str, str]:
        try:
            problems: dict[str, str] = {}
            if database := await self._database():
                problems["database"] = database
            if await self._recordings.low_disk():
                problems["disk"] = "free disk space is below the recording floor"
            self._problems, self._probed_at = problems, time.monotonic()
            return problems
        finally:
            self._probe = None

    async def _database(self) -> str | None:
        """What is wrong with the database, in words, or None."""
        if self._ping is None:
            self._ping = asyncio.ensure_future(self._store.ping())
            self._ping.add_done_callback(self._pinged)
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                await asyncio.shield(self._ping)
        except TimeoutError:
            logger.warning("readyz: the database did not answer within %g s", DATABASE_TIMEOUT_S)
            return "the database is slow to answer"
        except DATABASE_ERRORS as exc:
            logger.warning("readyz: database not readable (%s)", type(exc).__name__)
            return "the database cannot be read"
        return None

    def _pinged(self, ping: asyncio.Future[None]) -> None:
        self._ping = None
        if not ping.cancelled():
            ping.exception()  # read here too: a ping that failed after its probe gave up


async def metrics(request: web.Request) -> web.Response:
    _ensure_may_read(request)
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


def _ensure_may_read(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.metrics_token:
        given = request.headers.get(hdrs.AUTHORIZATION, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {settings.metrics_token}".encode()):
            if hdrs.AUTHORIZATION in request.headers:  # a guess: 429 once over the budget
                request.app[THROTTLE].auth_failed(client_address(request))
            raise ApiError(
                401,
                "unauthorized",
                "metrics need the metrics token (ENDOLINK_METRICS_TOKEN) as a bearer token",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return
    if not _loopback(settings.host) or settings.trusted_proxies:
        raise ApiError(
            403,
            "forbidden",
            "this server is reachable from other machines (or through a proxy), so metrics need "
            "a token: set ENDOLINK_METRICS_TOKEN and scrape with it as a bearer token",
        )
    if not _loopback(request.remote) or any(h in request.headers for h in _PROXY_HEADERS):
        raise ApiError(
            403,
            "forbidden",
            "metrics are served to this machine only; set ENDOLINK_METRICS_TOKEN to read them "
            "from elsewhere",
        )


def _loopback(address: str | None) -> bool:
    if address == "localhost":
        return True
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:  # a Unix socket, or a host name
        return False
