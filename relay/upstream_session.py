"""UpstreamSession: one WHEP session of this relay on the origin relay (``relay.upstream``).

Its receivers are tapped like a publisher's (``forwarding.tap_receiver``), but its frames reach
the Feed's Producers only while it is the Upstream's current session: a session negotiated to
replace one about to end (its token expires) runs beside it and takes over at its first video
keyframe, so local viewers see no gap (``Upstream`` decides; this module gates).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from aiortc import RTCRtpCodecCapability, RTCSessionDescription
from aiortc.sdp import SessionDescription

from . import forwarding
from .codecs import AUDIO_CODEC, VIDEO_CODECS, TemporalLayer, is_keyframe, preferences
from .errors import MediaUnsupported, RelayError
from .feed import Feed
from .ids import FeedName
from .peer import Peer
from .producer import Producer

logger = logging.getLogger(__name__)

NEGOTIATE_TIMEOUT_S = 10.0
"One offer/answer exchange with the origin, at most."
RECENT_FRAMES = 64
"""A standby session may lag the current one by this many frames (2 s of video at 30 fps) and
still take over without a repeated frame."""


class UpstreamRefused(RelayError):
    """The origin will not serve this relay (or this relay serves the consultation itself
    now): trying again would not help."""

    status = 502
    code = "upstream-refused"


class OriginSession(Protocol):
    """The session's resource on the origin (a WHEP session URL and its token)."""

    answer: str

    async def close(self) -> None:
        """End it on the origin (bounded, never raises; it may be gone already)."""
        ...


class UpstreamLink(Protocol):
    """How this relay reaches the origin's WHEP endpoint; given by the caller (relay/ knows no
    HTTP and no tokens)."""

    async def negotiate(self, offer: str) -> OriginSession:
        """A new session of the origin's endoscope feed for ``offer``. ``UpstreamRefused`` for
        good, any other exception for now."""
        ...


class UpstreamSession:
    def __init__(self, peer: Peer, origin: OriginSession, codec: str) -> None:
        self.peer = peer
        self.origin = origin
        self.codec = codec
        self.current = False
        "Its frames feed the Producers (set by ``feed``, cleared by the Upstream)."
        self.on_keyframe: Callable[[UpstreamSession, int], None] = lambda session, digest: None
        "A video keyframe (its digest) arrived while not current: a standby may take over."
        self.recent = {kind: deque[int](maxlen=RECENT_FRAMES) for kind in FeedName.ENDOSCOPE.kinds}
        "Digests of the latest frames it delivered, per kind."
        self._skip: dict[str, set[int]] = {}
        "Per kind, frames the session it replaced delivered already (``feed``)."

    def tap(self, feed: Feed) -> None:
        """Hand the receivers' encoded frames to ``feed``'s Producers, while current. Before
        the answer is applied (the receivers have not started)."""
        taps = [
            forwarding.tap_receiver(
                t.receiver,
                t.kind,
                partial(self._frame, feed.producers[t.kind]),
                partial(self._discontinuity, feed.producers[t.kind]),
            )
            for t in self.peer.pc.getTransceivers()
        ]

        def close_taps(_: Peer) -> None:
            for tap in taps:
                tap.close()

        self.peer.on_closed(close_taps)

    def _frame(
        self, producer: Producer, data: bytes, timestamp: int, layer: TemporalLayer | None
    ) -> None:
        digest = hash(data)
        if not self.current:
            if producer.kind != "video" or not is_keyframe(self.codec, data):
                return
            self.on_keyframe(self, digest)  # may make it current
            if not self.current:
                return
        skip = self._skip.get(producer.kind)
        if skip is not None:
            if digest in skip:
                return
            del self._skip[producer.kind]
        self.recent[producer.kind].append(digest)
        producer.on_frame(data, timestamp, layer)

    def _discontinuity(self, producer: Producer) -> None:
        if self.current:
            producer.on_discontinuity()

    def feed(self, feed: Feed, continuing: UpstreamSession | None = None) -> None:
        """From now on ``feed`` is fed by this session, as by a publisher: the Feed names its
        peer, its Producers ask it for keyframes (and rebase their clocks on its frames).

        ``continuing``: the session it replaces, which has already delivered the keyframe this
        one starts on. Both carry the same frames from the origin, so this one skips those the
        other delivered and goes on after them: viewers see every frame once, without waiting
        for a keyframe."""
        self.current = True
        if continuing is not None:
            self._skip = {kind: set(recent) for kind, recent in continuing.recent.items()}
        feed.set_publisher(self.peer)
        for transceiver in self.peer.pc.getTransceivers():
            send_pli = partial(forwarding.send_pli, transceiver.receiver)
            feed.producers[transceiver.kind].attach(send_pli, continuous=continuing is not None)


async def negotiate(link: UpstreamLink, peer: Peer, known: str | None) -> UpstreamSession:
    """Offer to the origin from ``peer`` (receive-only video and audio; ``known``: the
    consultation's video codec, None to let the origin choose) and read its answer, not
    applied yet (``apply``). ``peer`` is the caller's to close on failure."""
    for kind in FeedName.ENDOSCOPE.kinds:
        transceiver = peer.pc.addTransceiver(kind, direction="recvonly")
        transceiver.setCodecPreferences(_wanted(kind, known))
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    async with asyncio.timeout(NEGOTIATE_TIMEOUT_S):
        origin = await link.negotiate(peer.pc.localDescription.sdp)
    try:
        return UpstreamSession(peer, origin, _answered_codec(origin.answer))
    except BaseException:
        await origin.close()
        raise


async def apply(session: UpstreamSession) -> None:
    """Apply the origin's answer: the connection starts."""
    pc = session.peer.pc
    await pc.setRemoteDescription(RTCSessionDescription(sdp=session.origin.answer, type="answer"))
    forwarding.keep_consent(pc)


def _wanted(kind: str, codec: str | None) -> list[RTCRtpCodecCapability]:
    """The consultation's codec once known; before, every codec the relay forwards (the origin
    answers with the one its consultation uses)."""
    if kind == "audio":
        return preferences(kind, AUDIO_CODEC)
    chosen = [c for name in ((codec,) if codec else VIDEO_CODECS) for c in preferences(kind, name)]
    unique: dict[tuple[str, str], RTCRtpCodecCapability] = {}
    for capability in chosen:
        unique.setdefault((capability.mimeType, str(capability.parameters)), capability)
    return list(unique.values())


def _answered_codec(answer: str) -> str:
    """The video codec the origin chose (first in its answer's video section)."""
    try:
        description = SessionDescription.parse(answer)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise MediaUnsupported(f"the origin's answer is not SDP: {type(exc).__name__}") from exc
    for media in description.media:
        if media.kind == "video" and media.rtp.codecs:
            name = media.rtp.codecs[0].mimeType.split("/", 1)[1].upper()
            if name in VIDEO_CODECS:
                return name
    raise MediaUnsupported("the origin's answer has no video codec this relay forwards")
