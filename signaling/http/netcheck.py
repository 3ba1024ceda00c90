"""The clinic's pre-call network check: round trip and throughput between a page and the server.

    GET  …/netcheck                  → 200 what the feed needs (thresholds; also the RTT probe)
    GET  …/netcheck/download?bytes=N → 200 N bytes of noise, N ≤ 2 MiB
    POST …/netcheck/upload           body ≤ 2 MiB → 200 {"received": N}

(``…`` is ``/api/consultations/{cid}``.) Any member of the consultation may measure (Bearer
token). No consultation lookup: a ping must time the network, not the database, and the bytes
say nothing about the consultation. Every valid request spends one token from its identity's
``FailureBudget`` (a bounded token bucket), so the check can run a few times in a row but cannot
be turned into a traffic generator. The noise is made once at import (incompressible, nothing
computed per request) and streamed in chunks, so the loop never waits on a slow reader; uploads
are counted chunk by chunk and dropped, never held whole.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from signaling.auth.grants import Grant
from signaling.auth.request import authenticate, path_cid
from signaling.http.errors import ApiError
from signaling.http.serving import body_deadline
from signaling.keys import NETCHECK_BUDGET, SETTINGS

MAX_BYTES = 2 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
# The clinic's page caps its video sender at 2.5 Mbit/s (web/js/clinic.js, MAX_BITRATE) and
# the server suggests start/floor/ceiling bitrates (ENDOLINK_PUBLISHER_KBPS); the audio adds
# about this much. Headroom: a link runs video well below its measured capacity.
AUDIO_KBPS = 64
HEADROOM = 1.25
# The clinic receives the surgeon's talk-back voice (Opus, ~40 kbit/s) and the marks (WebSocket).
DOWNLOAD_GOOD_KBPS = 512
DOWNLOAD_FAIR_KBPS = 128
# One hop to the server; the surgeon's hop comes on top (docs: 150 ms RTT per hop stays smooth).
RTT_GOOD_MS = 150
RTT_FAIR_MS = 300
# Per identity: a whole check is about a dozen requests, so three checks back to back fit.
BUDGET_BURST = 40
BUDGET_REFILL_S = 3.0

_NOISE = memoryview(os.urandom(MAX_BYTES))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/consultations/{cid}/netcheck", needs)
    app.router.add_get("/api/consultations/{cid}/netcheck/download", download)
    app.router.add_post("/api/consultations/{cid}/netcheck/upload", upload)


def _member(request: web.Request) -> Grant:
    grant = authenticate(request)
    grant.ensure_member(path_cid(request))
    return grant


def _spend(request: web.Request, grant: Grant) -> None:
    """One request from the identity's budget (after the request was found valid)."""
    budget = request.app[NETCHECK_BUDGET]
    wait_s = budget.retry_after(grant.identity)
    if wait_s:
        raise ApiError(
            429,
            "too-many-requests",
            f"The network test was run too often. Wait {wait_s} seconds, then run it again.",
            {"Retry-After": str(wait_s)},
        )
    budget.spend(grant.identity)


def feed_needs(publisher_kbps: tuple[int, int, int]) -> dict[str, Any]:
    """Good / fair thresholds for the check, from what the endoscope feed is set to send."""
    start_kbps, floor_kbps, _ = publisher_kbps
    return {
        "max_bytes": MAX_BYTES,
        "upload_kbps": {
            "good": round((start_kbps + AUDIO_KBPS) * HEADROOM),
            "fair": round((floor_kbps + AUDIO_KBPS) * HEADROOM),
        },
        "download_kbps": {"good": DOWNLOAD_GOOD_KBPS, "fair": DOWNLOAD_FAIR_KBPS},
        "rtt_ms": {"good": RTT_GOOD_MS, "fair": RTT_FAIR_MS},
    }


async def needs(request: web.Request) -> web.Response:
    _spend(request, _member(request))
    return web.json_response(
        feed_needs(request.app[SETTINGS].publisher_kbps), headers={"Cache-Control": "no-store"}
    )


async def download(request: web.Request) -> web.StreamResponse:
    grant = _member(request)
    raw = request.query.get("bytes", "")
    if not (raw.isascii() and raw.isdigit()):  # "²".isdigit() too, but int() refuses it
        raise ApiError(400, "bad-request", "bytes must be a whole number of bytes")
    if len(raw) > 9 or int(raw) > MAX_BYTES:
        raise _too_large("downloads")
    size = int(raw)
    _spend(request, grant)
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"}
    )
    response.content_length = size
    await response.prepare(request)
    try:
        for offset in range(0, size, CHUNK_BYTES):  # write() waits for the socket to drain
            await response.write(_NOISE[offset : min(size, offset + CHUNK_BYTES)])
        await response.write_eof()
    except ConnectionError:
        pass  # the page gave up on a slow link (or closed): nobody left to answer
    return response


async def upload(request: web.Request) -> web.Response:
    grant = _member(request)
    if request.content_length is not None and request.content_length > MAX_BYTES:
        raise _too_large("uploads")
    _spend(request, grant)
    received = 0
    try:
        async with body_deadline(request, request.app[SETTINGS].body_timeout_s):
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                received += len(chunk)
                if received > MAX_BYTES:
                    raise _too_large("uploads")
    except ConnectionError:
        # The page gave up on a slow link (or closed): a plain answer nobody reads, no traceback.
        raise ApiError(400, "cut-short", "the upload was cut short") from None
    return web.json_response({"received": received}, headers={"Cache-Control": "no-store"})


def _too_large(what: str) -> ApiError:
    return ApiError(
        413, "too-large", f"network test {what} are at most {MAX_BYTES // (1024 * 1024)} MiB"
    )
