"""WHIP/WHEP client for aiortc peers: ``endolink publish`` and the tests use it.

It speaks only the standard exchange (POST offer → 201 answer + Location, DELETE to end), so it
works against any WHIP/WHEP server, not just ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from client.options import SourceOptions
from client.source import SourceError, open_source, shown
from client.testpattern import TestPatternTrack

logger = logging.getLogger(__name__)


VIDEO_BACKLOG = 2
AUDIO_BACKLOG = 10
"Frames a source may hold for a session that is late to read them (audio: 200 ms)."
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=3)
MAX_REDIRECTS = 3
"""A server of a cluster answers an offer for a consultation another node owns with 307 to
it (RFC 9725 §4.5). Followed here, the token sent along: aiohttp would drop it on a redirect
to another host. Only to http(s), and never from https down to http."""


class WhipError(Exception):
    """The server refused the offer; ``status``, the server's readable ``reason`` and, for a
    busy answer, how long it asked us to wait (``Retry-After`` in seconds)."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class WhipClient:
    def __init__(self, endpoint: str, token: str) -> None:
        self.endpoint = endpoint
        self.token = token
        self.location: str | None = None
        self.etag: str | None = None

    async def configuration(self, relay_only: bool = False) -> RTCConfiguration:
        """The ICE servers the endpoint offers this token (RFC 9725 §4.6: ``OPTIONS`` →
        ``Link: rel="ice-server"``), asked before offering: aiortc does not trickle, so they
        must be in the configuration before it gathers. ``relay_only`` uses TURN candidates
        only (``iceTransportPolicy`` relay): a test of the TURN path through a firewall."""
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            async with http.options(
                self.endpoint, headers={"Authorization": f"Bearer {self.token}"}
            ) as response:
                if response.status in (404, 405, 501):
                    servers = []  # a WHIP server that does not answer OPTIONS: no ICE servers
                elif response.status >= 400:
                    raise WhipError(response.status, _reason(await response.text()))
                else:
                    servers = parse_ice_server_links(response.headers.getall("Link", []))
        if relay_only and not any(_is_turn(server) for server in servers):
            raise WhipError(0, "relay-only needs a TURN server, and the endpoint offers none")
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)

    async def connect(self, pc: RTCPeerConnection) -> None:
        """Send ``pc``'s offer (all candidates included) and apply the answer."""
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            answer = await post_offer(http, self.endpoint, pc.localDescription.sdp, headers)
        if answer.status != 201:
            retry = answer.headers.get("Retry-After", "")
            wait = float(retry) if retry.isdigit() else None
            raise WhipError(answer.status, _reason(answer.body), wait)
        self.location = urljoin(answer.url, answer.headers["Location"])
        self.etag = answer.headers.get("ETag")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.body, type="answer"))

    async def close(self) -> None:
        """End the session on the server (DELETE). Safe to call twice."""
        location, self.location = self.location, None
        if location is None:
            return
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            async with http.delete(
                location, headers={"Authorization": f"Bearer {self.token}"}
            ) as response:
                if response.status not in (200, 204, 404):
                    logger.warning("DELETE %s answered %d", location, response.status)


@dataclass(frozen=True)
class Answer:
    """The endpoint's answer to an offer, and the URL that gave it (after redirects)."""

    status: int
    body: str
    headers: Mapping[str, str]
    url: str


async def post_offer(
    http: aiohttp.ClientSession, url: str, sdp: str, headers: Mapping[str, str]
) -> Answer:
    """POST ``sdp`` to ``url``, following a cluster's 307/308 to the node that owns the
    consultation with the same headers (the token among them)."""
    for _ in range(MAX_REDIRECTS + 1):
        async with http.post(
            url,
            data=sdp,
            headers={**headers, "Content-Type": "application/sdp"},
            allow_redirects=False,
        ) as response:
            body = await response.text()
            if response.status in (307, 308) and "Location" in response.headers:
                url = _redirect_target(url, response.headers["Location"])
                continue
            return Answer(response.status, body, response.headers.copy(), url)
    raise WhipError(0, f"more than {MAX_REDIRECTS} redirects")


def _redirect_target(url: str, location: str) -> str:
    """Where a 307/308 to an offer leads; refused when it leaves http(s) or drops TLS."""
    target = urljoin(url, location)
    scheme = target.split(":", 1)[0].lower()
    if scheme not in ("http", "https") or (url.startswith("https:") and scheme != "https"):
        raise WhipError(0, "the server redirected the offer to a place it may not go")
    return target


def _reason(body: str) -> str:
    try:
        return str(json.loads(body).get("reason", body))
    except (ValueError, AttributeError):
        return body[:200]


_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[^;,"\s]*)'
_LINK = re.compile(r"\s*<([^>]*)>((?:\s*;\s*[\w-]+\s*=\s*" + _VALUE + r")*)\s*,?")
_PARAM = re.compile(r'\s*;\s*([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,"\s]*))')


def parse_ice_server_links(headers: Iterable[str]) -> list[RTCIceServer]:
    """``Link: <turn:…>; rel="ice-server"; username="…"; credential="…"`` (RFC 8288 quoted
    strings, several links per header allowed) → RTCIceServer, in order."""
    servers = []
    for header in headers:
        for link in _LINK.finditer(header):
            params: dict[str, str] = {}
            for name, quoted, token in _PARAM.findall(link.group(2)):
                params[name.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted else token.strip()
            if "ice-server" in params.get("rel", "").split():
                servers.append(
                    RTCIceServer(link.group(1), params.get("username"), params.get("credential"))
                )
    return servers


def _is_turn(server: RTCIceServer) -> bool:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return any(url.startswith(("turn:", "turns:")) for url in urls)


async def publish_source(
    url: str,
    token: str,
    source: str,
    options: SourceOptions | None = None,
    *,
    relay_only: bool = False,
) -> None:
    """Publish ``source`` to a WHIP endpoint until interrupted or the source ends; a lost
    connection is followed by a fresh session (client/reconnect.py), with fresh ICE servers."""
    from client.reconnect import LiveSource, keep_publishing  # it imports this module

    media = None if source == "testpattern" else open_source(source, options or SourceOptions())
    if media is None:
        sources = [LiveSource(TestPatternTrack(), VIDEO_BACKLOG)]
    else:
        assert media.video is not None  # open_source refuses a source without video
        sources = [LiveSource(media.video, VIDEO_BACKLOG, media.negotiated)]
        if media.audio is not None:
            sources.append(LiveSource(media.audio, AUDIO_BACKLOG))

    async def new_pc(client: WhipClient) -> RTCPeerConnection:
        # Only what the endpoint offers (never aiortc's default public STUN server).
        return RTCPeerConnection(await client.configuration(relay_only))

    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    try:
        await keep_publishing(
            sources,
            new_pc,
            lambda: WhipClient(url, token),
            stop,
            f"publishing {shown(source)} to {url} (Ctrl-C to stop)",
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.remove_signal_handler(sig)
        for live in sources:
            live.close()
    if media is not None and media.error is not None:
        raise SourceError(f"the source stopped: {media.error}")
