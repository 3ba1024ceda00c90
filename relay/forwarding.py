"""Everything EndoLink does to aiortc's internals for forwarding (written against aiortc 1.16.0);
what it does to recover from packet loss (NACK timing, give-up deadline, retransmission history)
is in ``relay.recovery``.

aiortc is an endpoint, not an SFU: every receiver decodes and every sender encodes. To forward the
clinic's encoded stream untouched we hook these private seams, each covered by tests:

* ``RTCRtpReceiver.__jitter_buffer`` is replaced by a buffer that hands out each encoded frame as
  soon as its last packet (RTP marker bit) arrives, instead of waiting for the next frame's first
  packet (one frame interval, ~33 ms at 30 fps). Complete frames go to a callback; nothing is ever
  put on the receiver's decoder queue, so its decoder thread stays idle and no frame is decoded.
* A tapped receiver's packets are handled by ``relay.tapped`` (aiortc's ``_handle_rtp_packet``
  as one plain call), with ``relay.remb``'s bandwidth estimator in place of aiortc's.
* ``RTCRtpReceiver._send_rtcp_pli`` asks the publisher for a keyframe.
* ``RTCRtpSender._send_keyframe`` is where aiortc handles a viewer's PLI/FIR; on the pre-encoded
  (``av.Packet``) path it is silently ignored, so we redirect it to the relay.

``aioice.ice.get_host_addresses`` is also wrapped so the relay can gather candidates on configured
addresses only (loopback included: aioice skips 127.0.0.1, which a loopback-only host needs).

``RTCIceTransport.start`` returns quietly on a closed transport: aiortc's
``RTCPeerConnection.__connect`` starts the bundled ICE transport once per transceiver, so when
ICE fails on the first and the relay closes the peer, the second start raised
InvalidStateError in a task nobody awaits ("Task exception was never retrieved" in the log).

A failed DTLS handshake is explained from the peer certificate the handshake got
(``RTCDtlsTransport._ssl``): aiortc keeps only a debug line, often with an empty error.

Liveness (``relay/liveness.py``) reads two more: the DTLS transport's received-packet counter, and
aioice's nominated candidate pairs, on which it sends its own STUN binding requests. The same
binding requests replace aioice's consent check (``keep_consent``), which closed live peers whose
answers were merely late.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import aioice.ice
import aioice.stun
import aiortc
from aiortc import (
    RTCDtlsTransport,
    RTCIceParameters,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt
from av.frame import Frame
from av.packet import Packet

from . import tapped
from .codecs import TemporalLayer, Vp8Packetizer, vp8_temporal_layer
from .consumer import ForwardedFrame
from .media_clock import SenderReport, unwrap, watch_sender_reports
from .recovery import LossRecovery, is_stale

logger = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
if aiortc.__version__ != AIORTC_VERSION:  # pragma: no cover - guarded by the pin in pyproject
    raise ImportError(
        f"relay.forwarding hooks aiortc {AIORTC_VERSION} internals; found {aiortc.__version__}"
    )

FrameCallback = Callable[[bytes, int, TemporalLayer | None], None]
"""``(encoded_frame, timestamp, layer)``: timestamp in the codec clock, rebased to 0 at the first
frame; the VP8 temporal layer its sender labelled it with (None: unlabelled, or not VP8)."""


class MarkerJitterBuffer(JitterBuffer):
    """Video jitter buffer that releases a frame on its marker bit and reports every frame.

    Order, loss and overflow handling are aiortc's (``add`` is inherited), except that a packet
    the buffer already moved past is dropped (``relay.recovery.is_stale``); frame release
    changes: all frames completed by one packet (a retransmission filling a gap releases the
    frames queued behind it) are delivered at once, and only *after* aiortc has said whether it
    dropped packets — viewers must be told to wait for a keyframe before the frames that follow
    a drop reach them, or they decode damaged pictures.
    """

    def __init__(
        self,
        capacity: int,
        on_frame: FrameCallback,
        on_discontinuity: Callable[[], None],
        codec: str | None = None,
    ) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self._on_frame = on_frame
        self._layers = codec == "VP8"
        "Read each frame's temporal layer from its first packet's payload descriptor."
        self._on_discontinuity = on_discontinuity
        self._timestamps = TimestampMapper()
        self._holding = False
        self._head: tuple[int, int] | None = None
        "(sequence number, timestamp) of the newest packet added: nothing after it is buffered."
        self.ssrc: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.ssrc = packet.ssrc
        sequence_number, timestamp = packet.sequence_number, packet.timestamp
        head, origin = self._head, self._origin
        if (
            head is not None
            and origin is not None
            and sequence_number == (head[0] + 1) & 0xFFFF
            and (sequence_number - origin) & 0xFFFF < self._capacity
        ):
            # The packet after the newest, with room for it: all aiortc's add() does is store
            # it (it is neither stale nor misordered, and nothing overflows)
            self._packets[sequence_number % self._capacity] = packet
            self._head = (sequence_number, timestamp)
            if packet.marker or head[1] != timestamp:
                self._release()  # it may complete a frame (or end one that lost its marker)
            return False, None
        if is_stale(origin, sequence_number):
            return False, None
        self._holding = True  # aiortc's add() ends by releasing frames: not yet
        try:
            dropped, _ = super().add(packet)
        finally:
            self._holding = False
        if dropped or head is None or uint16_gt(sequence_number, head[0]):
            self._head = (sequence_number, timestamp)
        if dropped:
            # aiortc dropped packets (overflow or reset): what follows may reference lost data.
            # The keyframe request goes through the Producer's rate limit (on_discontinuity),
            # so aiortc is told not to send its own PLI.
            self._on_discontinuity()
        self._release()
        return False, None

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._holding:
            self._release()
        return None

    def _release(self) -> None:
        while (frame := self._next_complete_frame()) is not None:
            layer = vp8_temporal_layer(frame.first_payload) if self._layers else None
            self._on_frame(frame.data, self._timestamps.map(frame.timestamp), layer)

    def origin(self) -> int | None:
        return self._origin

    def mapped(self, timestamp: int) -> int | None:
        """A publisher RTP timestamp on the clock of the frames handed out (None: none yet)."""
        last, origin = self._timestamps._last, self._timestamps._origin
        if last is None or origin is None:
            return None
        return unwrap(timestamp, last) - origin

    def skip_past(self, sequence_number: int) -> None:
        """Give up on a lost packet: drop the frame that contained it, resume with what follows.

        Later frames may reference the lost data, so viewers are told to wait for a keyframe
        (``on_discontinuity``), which the relay then requests from the publisher.
        """
        if self._origin is None:
            return
        offset = uint16_add(sequence_number, -self._origin)
        if offset >= self.capacity:
            return  # already behind the buffer
        # The damaged frame is the one the gap belongs to: the timestamp of the packet before
        # the gap, or else of the first one after it. Drop it whole, keep the frames after it.
        before = self._packets[(self._origin + offset - 1) % self._capacity] if offset else None
        damaged = before.timestamp if before is not None else None
        drop = offset + 1
        for count in range(offset + 1, self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                continue
            if damaged is None:
                damaged = packet.timestamp
            if packet.timestamp != damaged:
                break
            drop = count + 1
        self.remove(drop)
        self._on_discontinuity()
        self._release()

    def _next_complete_frame(self) -> Joined | None:
        packets: list[RtpPacket] = []
        timestamp: int | None = None
        origin = self._origin
        if origin is None:  # nothing buffered yet
            return None
        for count in range(self.capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # The previous frame ended without a marker bit (lost marker or a sender that
                # does not set it): fall back to aiortc's rule, the next timestamp ends a frame.
                self.remove(count)
                return _joined(packets, timestamp)
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return _joined(packets, timestamp)
        return None


class AudioPassthroughBuffer(JitterBuffer):
    """Audio: every RTP packet is one Opus frame; forward it at once, drop late duplicates.

    aiortc's audio buffer prefetches 4 packets (80 ms); a forwarding relay needs none, the
    viewer's own jitter buffer absorbs network jitter.
    """

    def __init__(self, on_frame: FrameCallback) -> None:
        super().__init__(capacity=16)
        self._on_frame = on_frame
        self._timestamps = TimestampMapper()
        self._last_seq: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last_seq is not None and uint16_add(seq, -self._last_seq) >= 0x8000:
            return False, None  # older than what was already forwarded
        if seq == self._last_seq:
            return False, None
        self._last_seq = seq
        self._on_frame(packet._data, self._timestamps.map(packet.timestamp), None)  # type: ignore[attr-defined]
        return False, None


class Joined(NamedTuple):
    """A frame's depayloaded data, and the RTP payload of its first packet (its descriptor)."""

    data: bytes
    timestamp: int
    first_payload: bytes


def _joined(packets: list[RtpPacket], timestamp: int) -> Joined:
    return Joined(b"".join(p._data for p in packets), timestamp, packets[0].payload)  # type: ignore[attr-defined]


class ReceiverTap:
    """The hooks installed on one publisher receiver; ``close()`` when the peer goes away."""

    def __init__(self, buffer: JitterBuffer, recovery: LossRecovery | None) -> None:
        self.buffer = buffer
        self.recovery = recovery

    def close(self) -> None:
        if self.recovery is not None:
            self.recovery.close()


def tap_receiver(
    receiver: RTCRtpReceiver,
    kind: str,
    on_frame: FrameCallback,
    on_discontinuity: Callable[[], None],
    on_sender_report: SenderReport | None = None,
    codec: str | None = None,
) -> ReceiverTap:
    """Make ``receiver`` hand out encoded frames instead of decoding them; ``on_sender_report``
    (video) gets the publisher's sender reports with their RTP time on the frames' clock;
    ``codec`` "VP8" labels frames with their temporal layer.

    Must run before the receiver starts (i.e. before the peer connection connects), which is the
    case right after ``setRemoteDescription``.
    """
    recovery = None
    if kind == "video":
        video = MarkerJitterBuffer(512, on_frame, on_discontinuity, codec)
        buffer: JitterBuffer = video
        recovery = LossRecovery(receiver, video)
        if on_sender_report is not None:
            report = on_sender_report

            def mapped_report(wall_ms: float, rtp_timestamp: int) -> None:
                if (timestamp := video.mapped(rtp_timestamp)) is not None:
                    report(wall_ms, timestamp)

            watch_sender_reports(receiver, mapped_report)
    else:
        buffer = AudioPassthroughBuffer(on_frame)
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    tapped.tap(receiver)
    return ReceiverTap(buffer, recovery)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The publisher's media SSRC (never its RTX SSRC, which a publisher ignores PLIs for)."""
    rtx_ssrcs = set(receiver._RTCRtpReceiver__rtx_ssrc)  # type: ignore[attr-defined]
    for source in receiver.getSynchronizationSources():
        if source.source not in rtx_ssrcs:
            return source.source
    return None


def send_pli(receiver: RTCRtpReceiver) -> bool:
    """Ask the publisher behind ``receiver`` for a keyframe. False if it has sent nothing yet."""
    ssrc = media_ssrc(receiver)
    if ssrc is None:
        return False
    asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
    return True


def packetizer(codec: str) -> Encoder:
    """aiortc's RTP packetizer for ``codec`` (its ``pack`` side; nothing is encoded)."""
    return {"VP8": Vp8Packetizer, "H264": H264Encoder}.get(codec, OpusEncoder)()


class Forwarded(Protocol):
    """A viewer track whose ``current`` is the frame its sender is about to send: a Consumer,
    or the Selector that reads several (``relay.selector``)."""

    @property
    def current(self) -> ForwardedFrame | None: ...


class SharedPacketization(Encoder):
    """Stands in for a viewer sender's encoder: hands back the payloads the Producer made once
    for all viewers, instead of every sender packetizing the same frame again.

    aiortc's sender calls ``track.recv()`` and then, with no await in between, ``pack()`` on
    what it received, so the Consumer's ``current`` frame is exactly the one being sent;
    ``on_pack`` sees it (``relay.media_clock.SenderClock``).
    """

    def __init__(
        self,
        consumer: Forwarded,
        codec: str,
        on_pack: Callable[[ForwardedFrame], None] = lambda frame: None,
    ) -> None:
        self._consumer = consumer
        self._fallback = packetizer(codec)
        self._on_pack = on_pack

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("a forwarding sender never encodes")

    def pack(self, packet: Packet[Any]) -> tuple[list[bytes], int]:
        current = self._consumer.current
        if current is not None and current.packet is packet:
            self._on_pack(current)
            return current.payloads, current.timestamp
        return self._fallback.pack(packet)


def share_packetization(
    sender: RTCRtpSender,
    consumer: Forwarded,
    codec: str,
    on_pack: Callable[[ForwardedFrame], None] = lambda frame: None,
) -> None:
    shared = SharedPacketization(consumer, codec, on_pack)
    sender._RTCRtpSender__encoder = shared  # type: ignore[attr-defined]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Route a viewer's PLI/FIR (received by ``sender``) to ``callback``."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def use_host_addresses(addresses: Iterable[str]) -> None:
    """Gather ICE host candidates on ``addresses`` only; empty = every interface plus loopback.

    aioice reads this process-wide, so it is set once, by the Relay that owns the process.
    """
    wanted = tuple(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if wanted:
            return [a for a in wanted if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        found = _aioice_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return found + (["127.0.0.1"] if use_ipv4 else [])

    aioice.ice.get_host_addresses = get_host_addresses


_aioice_host_addresses = aioice.ice.get_host_addresses


async def _start_unless_closed(self: RTCIceTransport, remoteParameters: RTCIceParameters) -> None:
    """A closed transport has nothing to start (see the module)."""
    if self.state == "closed":
        return
    await _aiortc_ice_start(self, remoteParameters)


_aiortc_ice_start = RTCIceTransport.start
RTCIceTransport.start = _start_unless_closed  # type: ignore[method-assign]


# -- liveness -------------------------------------------------------------------------------------


def dtls_transports(pc: RTCPeerConnection) -> set[RTCDtlsTransport]:
    """The DTLS transports under ``pc`` (one when BUNDLE is used, as every browser does)."""
    transports = {t.receiver.transport for t in pc.getTransceivers() if t.receiver.transport}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    return transports


def packets_received(pc: RTCPeerConnection) -> int:
    """Every datagram the peer sent us past ICE: DTLS, SRTP (media), SRTCP (reports, NACK, PLI,
    REMB) and SCTP (data channels). Read on a timer, never counted per packet by us."""
    return sum(
        dtls._RTCDtlsTransport__rx_packets  # type: ignore[attr-defined]
        for dtls in dtls_transports(pc)
    )


async def probe(pc: RTCPeerConnection) -> bool:
    """One STUN binding request on each nominated candidate pair, no retransmission. Every ICE
    agent must answer it, whether or not media flows. True if any pair answered within aioice's
    0.5 s transaction timeout."""
    answered = False
    for dtls in dtls_transports(pc):
        answered = await _answered(dtls.transport._connection, 0) or answered
    return answered


async def _answered(connection: aioice.ice.Connection, retransmissions: int) -> bool:
    """A binding request on each nominated pair of ``connection``; True if any pair answered.
    aioice drops an answer that arrives after its transaction gave up, so how late an answer may
    be is set by ``retransmissions`` (0.5 s, then doubling)."""
    if connection.remote_password is None:
        return False
    answered = False
    for pair in list(connection._nominated.values()):
        request = connection.build_request(pair, nominate=False)
        try:
            await pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=connection.remote_password.encode("utf8"),
                retransmissions=retransmissions,
            )
            answered = True
        except (aioice.stun.TransactionError, ConnectionError, OSError):
            continue
    return answered


# -- consent freshness (RFC 7675) -----------------------------------------------------------------

CONSENT_INTERVAL_S = 5.0
"A consent check every 5 s ± 20 % (aioice's and RFC 7675's cadence)."
CONSENT_EXPIRY_S = 30.0
"RFC 7675: consent expires when no authenticated answer has arrived for 30 s."
CONSENT_RETRANSMISSIONS = 2
"A check waits 0.5 + 1 + 2 s: an answer up to 3.5 s late is consent (aioice: 0.5 s, no retry)."


def keep_consent(pc: RTCPeerConnection) -> None:
    """Replace aioice's consent check on ``pc``'s ICE connections (call after
    ``setRemoteDescription``, before they connect).

    aioice sends one request every ~5 s with no retransmission, gives up on it after 0.5 s and
    closes the connection after 6 such misses in a row: a live peer whose answers are merely late
    (its event loop, or ours, lagging on a busy host) is cut off while its media still flows.
    Here a late answer still counts, and the connection closes only when no answer at all has
    arrived for ``CONSENT_EXPIRY_S`` — RFC 7675's rule, whose purpose (stop sending to a
    destination that no longer wants it) is kept. A peer that vanished is closed much sooner by
    ``relay.liveness``.
    """
    for dtls in dtls_transports(pc):
        connection = dtls.transport._connection
        connection.query_consent = functools.partial(_query_consent, connection)  # type: ignore[method-assign]


async def _query_consent(connection: aioice.ice.Connection) -> None:
    consented = time.monotonic()
    while True:
        await asyncio.sleep(CONSENT_INTERVAL_S * (0.8 + 0.4 * random.random()))
        if await _answered(connection, CONSENT_RETRANSMISSIONS):
            consented = time.monotonic()
        elif (silent_s := time.monotonic() - consented) > CONSENT_EXPIRY_S:
            logger.info("%s consent to send expired: no answer for %.0f s", connection, silent_s)
            connection._query_consent_task = None  # aioice's close() would cancel this very task
            await connection.close()
            return
