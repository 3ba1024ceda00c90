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

from relay import ConsultationId, Router
from relay.upstream import Upstream
from signaling.cluster.bridge import bridge
from signaling.cluster.cascade import configure, is_node
from signaling.cluster.cluster import ClusterUnavailable
from signaling.cluster.nodes import NodeInfo
from signaling.db.store import valid_consultation_id
from signaling.http.errors import ApiError
from signaling.keys import CASCADES, CLUSTER, HUB

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"How soon a client asks again while the cluster cannot tell who serves a consultation."


async def owner_url(request: web.Request, cid: ConsultationId) -> str | None:
    """The base URL of the node that serves ``cid`` when that is not this one; None when this
    node does (or there is no cluster). 503 while the cluster cannot tell."""
    node = await serving_node(request, cid)
    return None if node is None else node.url


async def serving_node(request: web.Request, cid: ConsultationId) -> NodeInfo | None:
    """The node that serves ``cid`` when that is not this one (``owner_url``)."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return None
    try:
        return await cluster.serving(cid)
    except ClusterUnavailable as exc:
        raise ApiError(
            503, "cluster-unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_S)}
        ) from None


async def media_urls(request: web.Request, cid: ConsultationId) -> dict[str, str | None]:
    """What ``GET /api/session`` tells a page in a cluster, from one look at who serves
    ``cid``: ``media_url``, the owner's base URL (None: this node), and ``view_url``, where to
    play the endoscope original (None: this node, the owner or serving it by cascade)."""
    owner = await serving_node(request, cid)
    if owner is None:
        return {"media_url": None, "view_url": None}
    cascades = request.app.get(CASCADES)
    by_cascade = cascades is not None and (
        cascades.find(cid) is not None or await cascades.applies(cid, owner)
    )
    return {"media_url": owner.url, "view_url": None if by_cascade else owner.url}


async def cascaded(
    request: web.Request, cid: ConsultationId, identity: str
) -> tuple[Upstream, Router] | None:
    """The local Router that serves ``cid``'s endoscope original from its owner when cascade
    applies here (``signaling.cluster.cascade``); None: serve as usual (here, or 307). An
    upstream that cannot be negotiated is logged and the viewer redirected: it still gets
    the feed. A node's own upstream request (``identity``) is never cascaded: it must reach
    the owner, so that nodes form no chain, nor a loop while a lease changes hands."""
    cascades = request.app.get(CASCADES)
    if cascades is None or is_node(identity):
        return None
    if cascades.find(cid) is None:
        owner = await serving_node(request, cid)
        if owner is None or not await cascades.applies(cid, owner):
            return None
    try:
        return await cascades.router(cid)
    except Exception as exc:
        logger.warning(
            "consultation %s: no upstream (%s: %s); redirecting", cid, type(exc).__name__, exc
        )
        return None


async def ensure_here(request: web.Request, cid: ConsultationId, headers: dict[str, str]) -> None:
    """Serve ``cid`` here, or ``307`` to its owner with the same path and query."""
    url = await owner_url(request, cid)
    if url is not None:
        raise web.HTTPTemporaryRedirect(url + request.path_qs, headers=headers)


async def place(
    request: web.Request, cid: ConsultationId, region: str | None, cascade: bool = False
) -> str | None:
    """Placement of a new consultation: the chosen node's id, or None without a cluster. Redis
    away only postpones it: the first request for the consultation places it. ``cascade``:
    viewers reaching another node are served there from the owner's stream (``cascade.py``)."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return None
    if cascade:
        await configure(cluster, cid)
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
