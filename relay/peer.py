"""Peer: one WHIP or WHEP session — an RTCPeerConnection plus the resource a client PATCHes or
DELETEs. It closes itself when ICE/DTLS fail or the far end falls silent (``watch``), and tells
its owner exactly once."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from enum import StrEnum

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

from . import dtls, forwarding
from .errors import MediaUnsupported, SdpInvalid
from .inbound import receive_where_it_arrives
from .liveness import Liveness
from .sdp import check_sdpfrag, parse_candidate

logger = logging.getLogger(__name__)

MAX_CANDIDATES_PER_PATCH = 16
MAX_CANDIDATES_PER_SESSION = 64
"""A browser trickles a handful per network interface. Each candidate is a connectivity check sent
where the client says (and a ``.local`` one an mDNS query awaited for up to a second): bounded."""
CLOSE_TIMEOUT_S = 2.0
"""How long closing may hold up its caller (a DELETE, a Router closing). aioice frees a TURN
allocation first and, with coturn gone, retries for ~63 s; the close then finishes unawaited."""
_lingering: set[asyncio.Future[None]] = set()


class PeerRole(StrEnum):
    PUBLISHER = "publisher"
    VIEWER = "viewer"


class IceRestartUnsupported(Exception):
    """aiortc cannot restart ICE; WHIP answers 422 and the client makes a new session."""


class Peer:
    def __init__(
        self,
        role: PeerRole,
        feed: str,
        identity: str,
        configuration: RTCConfiguration,
        label: str,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.role = role
        self.feed = feed
        self.identity = identity
        self.label = f"{label} {role}:{self.id[:6]}"
        self.pc = RTCPeerConnection(configuration)
        dtls.accept_rsa_peers(self.pc)
        self.answer_sdp = ""
        self.connected = False
        self._trickled = 0
        'Whether the connection ever reached "connected" (until then the session is pending).'
        self._on_closed: list[Callable[[Peer], object]] = []
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._on_state)

    def on_closed(self, callback: Callable[[Peer], object]) -> None:
        """Call ``callback(peer)`` once the peer is closed (what it returns is ignored)."""
        self._on_closed.append(callback)

    def watch(self, timeout_s: float) -> None:
        """Close this session once the far end has been silent for ``timeout_s`` (vanished
        without a goodbye: killed, unplugged, out of Wi-Fi range), long before aiortc would."""
        liveness = Liveness(self.pc, timeout_s, lambda _: self.close_soon(), self.label)
        self.on_closed(lambda _: liveness.stop())

    def require_connection(self, deadline_s: float) -> None:
        """Close this session unless it connects within ``deadline_s``: an offer that never
        connects (no usable candidate, a client gone, a hostile one) must not hold its slot."""
        handle = asyncio.get_running_loop().call_later(deadline_s, self._deadline, deadline_s)
        self.on_closed(lambda _: handle.cancel())

    def _deadline(self, deadline_s: float) -> None:
        if not self.connected:
            logger.info("Peer(%s) not connected within %g s: closing", self.label, deadline_s)
            self.close_soon()

    def end_at(self, expires_at: float, on_expiry: Callable[[Peer], object]) -> None:
        """Close this session at ``expires_at`` (UNIX time: its token's expiry), after
        ``on_expiry(peer)``: media lives no longer than the access that opened it."""
        delay = max(0.0, expires_at - time.time())
        handle = asyncio.get_running_loop().call_later(delay, self._expired, on_expiry)
        self.on_closed(lambda _: handle.cancel())

    def _expired(self, on_expiry: Callable[[Peer], object]) -> None:
        logger.info("Peer(%s) token expired: closing", self.label)
        on_expiry(self)
        self.close_soon()

    @property
    def state(self) -> str:
        return self.pc.connectionState

    async def answer(self, announced_address: str | None) -> str:
        """Create and apply the answer (aiortc gathers every candidate first: no server trickle)."""
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp = self.pc.localDescription.sdp
        return rewrite_host_candidates(sdp, announced_address) if announced_address else sdp

    async def set_offer(self, offer: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except OperationError as exc:
            raise MediaUnsupported(f"no common codec: {exc}") from exc
        except (ValueError, AssertionError, IndexError, KeyError, AttributeError) as exc:
            # aiortc's own checks (asserts, lookups) on an offer parse_offer let through
            raise SdpInvalid(f"offer rejected: {exc.__class__.__name__}") from exc
        forwarding.keep_consent(self.pc)  # before the connection's ICE checks can finish

    async def add_candidates(self, sdpfrag: str) -> int:
        """Trickled candidates (RFC 8840 sdpfrag). Returns how many were added: well-formed
        ones the relay cannot use are left out (RFC 9725 §4.3.2), a malformed one refuses the
        whole fragment (400). New ICE credentials ask for an ICE restart (§4.3.3), which aiortc
        cannot do: refused, and the session goes on as it was."""
        check_sdpfrag(sdpfrag)
        remote = self.pc.remoteDescription.sdp if self.pc.remoteDescription else ""
        for name in ("ice-ufrag", "ice-pwd"):
            sent = re.findall(rf"^a={name}:(\S+)", sdpfrag, re.M)
            if remote and set(sent) - set(re.findall(rf"^a={name}:(\S+)", remote, re.M)):
                raise IceRestartUnsupported("ICE restart is not supported; start a new session")
        mid = re.search(r"^a=mid:(\S+)", sdpfrag, re.M)
        lines = re.findall(r"^a=candidate:(.+?)\s*$", sdpfrag, re.M)
        if len(lines) > MAX_CANDIDATES_PER_PATCH:
            raise SdpInvalid(f"at most {MAX_CANDIDATES_PER_PATCH} candidates per PATCH")
        if self._trickled + len(lines) > MAX_CANDIDATES_PER_SESSION:
            raise SdpInvalid(f"at most {MAX_CANDIDATES_PER_SESSION} candidates per session")
        parsed = [parse_candidate(line) for line in lines]
        self._trickled += len(lines)
        candidates = [candidate for candidate in parsed if candidate is not None]
        for candidate in candidates:
            candidate.sdpMid = mid.group(1) if mid else None
            candidate.sdpMLineIndex = 0 if mid is None else None
            await self.pc.addIceCandidate(candidate)
        return len(candidates)

    def _on_state(self) -> None:
        logger.info("Peer(%s) connection %s", self.label, self.pc.connectionState)
        if self.pc.connectionState == "connected":
            self.connected = True
            receive_where_it_arrives(self.pc)
        if self.pc.connectionState == "failed" and (reason := dtls.dtls_failure(self.pc)):
            logger.warning("Peer(%s) DTLS handshake failed: %s", self.label, reason)
        if self.pc.connectionState in ("failed", "closed"):
            self.close_soon()

    def close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())

    async def close(self) -> None:
        self.close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        closing = asyncio.ensure_future(self.pc.close())
        try:
            await asyncio.wait_for(asyncio.shield(closing), CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "Peer(%s) still closing after %g s (TURN server gone?)", self.label, CLOSE_TIMEOUT_S
            )
            _lingering.add(closing)
            closing.add_done_callback(_forget)
        except Exception as exc:  # a connection an offer left half set up (aiortc bug)
            logger.warning("Peer(%s) close failed: %s", self.label, exc.__class__.__name__)
        finally:
            callbacks, self._on_closed = self._on_closed, []
            for callback in callbacks:  # each one: a failing one must not skip the others
                try:
                    callback(self)
                except Exception as exc:
                    logger.warning(
                        "Peer(%s) close callback failed: %s", self.label, exc.__class__.__name__
                    )


def _forget(closing: asyncio.Future[None]) -> None:
    _lingering.discard(closing)
    if not closing.cancelled() and closing.exception() is not None:
        logger.warning("Peer close failed late: %s", closing.exception())


def rewrite_host_candidates(sdp: str, address: str) -> str:
    """Advertise ``address`` (a 1:1 NAT's public IP) in place of the host candidates' IP."""
    pattern = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host)", re.M)
    sdp = pattern.sub(lambda m: f"{m.group(1)}{address}{m.group(3)}", sdp)
    return re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {address}", sdp, flags=re.M)
