"""The web edge of a cluster: requests for a consultation another node owns are sent there.

WHIP and WHEP answer ``307 Temporary Redirect`` to the owner (RFC 9725 §4.5 lets an endpoint
redirect; ``endolink publish`` follows it). Browsers drop ``Authorization`` on a redirect to
another origin, so the pages ask ``GET /api/session`` first and send their offers to the
``media_url`` it names. A WebSocket cannot be redirected: it is bridged to the owner
(``bridge``), so one consultation is one room whichever node a page's socket reached.
"""

from __future__ import annotations

import logging

from aiohttp import WSCloseCode, web
from redis.exceptions import RedisError

from relay import ConsultationId
from signaling.cluster.bridge import bridge
from signaling.cluster.cluster import ClusterUnavailable
from signaling.db.store import valid_consultation_id
from signaling.http.errors import ApiError
from signaling.keys import CLUSTER, HUB

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"How soon a client asks again while the cluster cannot tell who serves a consultation."


async def owner_url(request: web.Request, cid: ConsultationId) -> str | None:
    """The base URL of the node that serves ``cid`` when that is not this one; None when this
    node does (or there is no cluster). 503 while the cluster cannot tell."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return None
    try:
        return await cluster.route(cid)
    except ClusterUnavailable as exc:
        raise ApiError(
            503, "cluster-unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_S)}
        ) from None


async def ensure_here(request: web.Request, cid: ConsultationId, headers: dict[str, str]) -> None:
    """Serve ``cid`` here, or ``307`` to its owner with the same path and query."""
    url = await owner_url(request, cid)
    if url is not None:
        raise web.HTTPTemporaryRedirect(url + request.path_qs, headers=headers)


async def place(request: web.Request, cid: ConsultationId, region: str | None) -> str | None:
    """Placement of a new consultation: the chosen node's id, or None without a cluster. Redis
    away only postpones it: the first request for the consultation places it."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return None
    try:
        return (await cluster.place(cid, region)).id
    except (RedisError, OSError) as exc:
        logger.warning("consultation %s not placed yet: %s", cid, type(exc).__name__)
        return None


async def bridged(request: web.Request, cid: ConsultationId) -> web.WebSocketResponse | None:
    """``/ws/{cid}`` of a consultation another node owns, bridged there; None to serve it here.
    While the cluster cannot tell, the page is closed with 1013 (try again later) and a reason,
    and reconnects."""
    cluster = request.app.get(CLUSTER)
    if cluster is None or not valid_consultation_id(cid):
        return None
    try:
        url = await cluster.route(cid)
    except ClusterUnavailable as exc:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=str(exc).encode())
        return ws
    if url is None:
        return None
    return await bridge(request, url, cluster.http(), tracker=request.app[HUB])
