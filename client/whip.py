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
from collections.abc import Iterable
from urllib.parse import urljoin

import aiohttp
import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from client.testpattern import TestPatternTrack

logger = logging.getLogger(__name__)


class WhipError(Exception):
    """The server refused the offer; ``status`` and the server's readable ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


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
        async with aiohttp.ClientSession() as http:
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
        async with aiohttp.ClientSession() as http:
            async with http.post(
                self.endpoint,
                data=pc.localDescription.sdp,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/sdp",
                },
            ) as response:
                body = await response.text()
                if response.status != 201:
                    raise WhipError(response.status, _reason(body))
                self.location = urljoin(self.endpoint, response.headers["Location"])
                self.etag = response.headers.get("ETag")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def close(self) -> None:
        """End the session on the server (DELETE). Safe to call twice."""
        location, self.location = self.location, None
        if location is None:
            return
        async with aiohttp.ClientSession() as http:
            async with http.delete(
                location, headers={"Authorization": f"Bearer {self.token}"}
            ) as response:
                if response.status not in (200, 204, 404):
                    logger.warning("DELETE %s answered %d", location, response.status)


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


class _KeyframeHintReset(MediaStreamTrack):
    """Decoded file/device frames arrive tagged as keyframes; aiortc's VP8 encoder would honour
    that and send every frame as a keyframe (2–3× the bitrate). Clear the tag."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source

    async def recv(self) -> av.VideoFrame:
        frame = await self._source.recv()
        if not isinstance(frame, av.VideoFrame):
            raise TypeError("the source of a video track must give video frames")
        frame.pict_type = av.video.frame.PictureType.NONE
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def open_source(
    source: str, loop: bool = False
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None]:
    """(video, audio) tracks for a file, a V4L2 device, an RTSP URL or ``testpattern``."""
    if source == "testpattern":
        return TestPatternTrack(), None
    if source.startswith("/dev/video"):
        player = MediaPlayer(
            source, format="v4l2", options={"video_size": "1280x720", "framerate": "30"}
        )
    elif source.startswith(("rtsp://", "rtsps://")):
        player = MediaPlayer(source, options={"rtsp_transport": "tcp", "fflags": "nobuffer"})
    else:
        player = MediaPlayer(source, loop=loop)
    video = _KeyframeHintReset(player.video) if player.video else None
    return video, player.audio


async def publish_source(
    url: str, token: str, source: str, *, loop: bool = False, relay_only: bool = False
) -> None:
    """Publish ``source`` to a WHIP endpoint until interrupted or the source ends."""
    video, audio = open_source(source, loop)
    if video is None:
        raise WhipError(0, f"{source} has no video stream")
    client = WhipClient(url, token)
    # Only what the endpoint offers (never aiortc's default public STUN server).
    pc = RTCPeerConnection(await client.configuration(relay_only))
    for track in (video, audio):
        if track is not None:
            pc.addTransceiver(track, direction="sendonly")
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        print(f"connection: {pc.connectionState}", flush=True)
        if pc.connectionState in ("failed", "closed"):
            done.set()

    @video.on("ended")
    def on_ended() -> None:
        done.set()

    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, done.set)
    try:
        await client.connect(pc)
        print(f"publishing {source} to {url} (Ctrl-C to stop)", flush=True)
        await done.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.remove_signal_handler(sig)
        await client.close()
        await pc.close()
