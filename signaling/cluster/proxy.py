"""A recording another node wrote, served through the node a request reached.

A recording's files stay in the data dir of the node that wrote them (unless the nodes share
that storage); the index, shared, names that node. A replay, download or export request for it
that reaches another node is passed to the writer and its answer streamed back as it comes
(ranges, downloads, export jobs alike), so pages and clients need not know where files are.
The request's token goes along: it is the writer that checks it. The writer not running: 503.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from recorder.library import Unavailable
from signaling.cluster import nodes
from signaling.http.client_address import client_address
from signaling.http.errors import ApiError
from signaling.keys import CLUSTER, REPLAY

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=60)
"Streams may be long (a download); a writer silent for a minute is given up on."
_ASKED = (
    hdrs.AUTHORIZATION,
    hdrs.ACCEPT,
    hdrs.ACCEPT_LANGUAGE,
    hdrs.CONTENT_TYPE,
    hdrs.RANGE,
    hdrs.IF_RANGE,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MODIFIED_SINCE,
)
_ANSWERED = (
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_LENGTH,
    hdrs.CONTENT_RANGE,
    hdrs.CONTENT_DISPOSITION,
    hdrs.ACCEPT_RANGES,
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
    hdrs.CACHE_CONTROL,
    hdrs.RETRY_AFTER,
    hdrs.LOCATION,
    hdrs.WWW_AUTHENTICATE,
)


@web.middleware
async def recordings_on_their_node(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/api/recordings/{rid}...`` of a recording another node wrote: answered by that node."""
    cluster = request.app.get(CLUSTER)
    rid = request.match_info.get("rid")
    if cluster is None or rid is None or not request.path.startswith("/api/recordings/"):
        return await handler(request)
    library = request.app[REPLAY].library
    try:
        row = await library.recording(rid) if library.valid_id(rid) else None
    except Unavailable:
        row = None
    if row is None or row.node in (None, cluster.me.id):
        return await handler(request)  # here, or unknown: the handler answers as always
    try:
        writer = await nodes.read(cluster.redis, row.node)
    except (RedisError, OSError):
        writer = None
    if writer is None:
        raise ApiError(
            503,
            "recording-elsewhere",
            "this recording is kept by a server that is not running now; try again later",
            {hdrs.RETRY_AFTER: "30"},
        )
    return await _proxied(request, writer.url, cluster.http())


async def _proxied(
    request: web.Request, base_url: str, http: aiohttp.ClientSession
) -> web.StreamResponse:
    headers = {k: v for k in _ASKED if (v := request.headers.get(k)) is not None}
    forwarded = request.headers.get(hdrs.X_FORWARDED_FOR)
    address = client_address(request)
    headers[hdrs.X_FORWARDED_FOR] = f"{forwarded}, {address}" if forwarded else str(address)
    body = await request.read() if request.can_read_body else None
    response: web.StreamResponse | None = None
    try:
        async with http.request(
            request.method,
            base_url + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=TIMEOUT,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k in _ANSWERED if (v := upstream.headers.get(k)) is not None},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("recording request passed to %s failed: %s", base_url, type(exc).__name__)
        if response is not None and response.prepared:  # cut short: the client must see it
            response.force_close()
            if request.transport is not None:
                request.transport.abort()
            return response
        raise ApiError(
            503,
            "recording-elsewhere",
            "the server that keeps this recording did not answer; try again later",
            {hdrs.RETRY_AFTER: "5"},
        ) from None
