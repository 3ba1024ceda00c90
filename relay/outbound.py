"""The send path of a forwarding viewer's RTP (aiortc 1.16.0 seam): per frame, not per packet.

aiortc's ``RTCRtpSender._run_rtp`` builds an ``RtpPacket`` object per packet, reads the wall
clock twice per packet through ``datetime``, serialises its header extensions from scratch, and
sends through four layers of coroutines (DTLS, ICE, aioice's connection, its protocol) before the
socket. For a relay that only forwards, that was most of a viewer's cost. ``OutboundRtp``
replaces ``_run_rtp`` and ``_retransmit`` on one sender and does the same work once per frame:

* the header extensions (MID, abs-send-time) are serialised once per frame, by aiortc's own
  ``HeaderExtensionsMap``, and every packet is one ``struct.pack`` of the fixed header plus them;
* the packets of a frame are protected (SRTP) and handed to the UDP socket of the nominated
  candidate pair in one go, one segmented ``sendmsg`` where Linux allows it
  (``relay.segmented``; a TURN pair keeps aioice's own path, which may wait for a channel);
* aiortc's state is kept where aiortc and the relay read it: the retransmission history (bytes
  instead of ``RtpPacket``; ``_retransmit`` re-reads them with aiortc's parser and RTX wrapper),
  the counters and timestamps of its sender reports, the DTLS transport's byte and packet
  counters, the sender's start and exit events.

A Consumer or Selector on a UDP pair is not read at all: it pushes each frame to ``_deliver``,
which sends it in the Producer's call (``deliver_to``), and the loop only waits for the track to
stop. Reading it cost a task wake, a future and four coroutine frames per frame and viewer,
plus one more turn of the event loop before anything left. Other tracks, and any track on a
TURN pair (aioice may wait there for a channel), are read as aiortc reads a track.

Everything else is aiortc's: frames are packed by the sender's encoder (the shared
packetization of ``relay.forwarding``), sequence numbers and timestamps start at random values,
and the loop ends on the same exceptions with the same cleanup, so ``RTCRtpSender.stop`` works.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, NamedTuple

import aiortc.rtcrtpsender
from aioice.ice import StunProtocol
from aiortc import RTCRtpCodecParameters, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import HeaderExtensions, RtpPacket, wrap_rtx
from aiortc.utils import random32, uint16_add, uint32_add

from .consumer import Consumer, ForwardedFrame
from .segmented import send_datagrams
from .selector import Selector

logger = logging.getLogger(__name__)

HEADER = struct.Struct("!BBHII")
"The fixed RTP header (RFC 3550): V/P/X/CC, M/PT, sequence number, timestamp, SSRC."
EXTENSION_HEADER = struct.Struct("!HH")
"Profile and length in 32-bit words of the header extension block (RFC 8285)."
RTP_VERSION = 0x80
HAS_EXTENSION = 0x10
MARKER = 0x80

Address = tuple[Any, ...]


class Sent(NamedTuple):
    """One packet in the retransmission history; ``relay.feedback`` reads ``sequence_number``."""

    sequence_number: int
    data: bytes
    "As sent, before SRTP."


class OutboundRtp:
    """The RTP send loop of one forwarding ``RTCRtpSender`` (see the module doc)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._history: dict[int, Sent] = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
        "aiortc's dict, holding ``Sent`` instead of ``RtpPacket``: only this class writes it."
        self.frames_sent = 0
        self._sequence_number = 0
        self._timestamp_origin = 0
        self._payload_type = 0

    def install(self) -> None:
        """Take over before ``sender.send()`` starts the loop (that is, before negotiation)."""
        self._sender._run_rtp = self._run  # type: ignore[method-assign]
        self._sender._retransmit = self._retransmit  # type: ignore[method-assign]

    async def _run(self, codec: RTCRtpCodecParameters) -> None:
        sender = self._sender
        sender._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        self._sequence_number = random_sequence_number()
        self._timestamp_origin = random32()
        assert codec.payloadType is not None, "negotiated codecs have a payload type"
        self._payload_type = codec.payloadType
        try:
            track = sender._RTCRtpSender__track  # type: ignore[attr-defined]
            if isinstance(track, Consumer | Selector) and self._udp() is not None:
                track.deliver_to(self._deliver)
                await track.ended()
            else:
                await self._pull(codec)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            # as aiortc's loop: the exit event must be set, or RTCRtpSender.stop() hangs
            logger.warning("OutboundRtp: the send loop failed", exc_info=True)
        track = sender._RTCRtpSender__track  # type: ignore[attr-defined]
        if track:
            track.stop()
            sender._RTCRtpSender__track = None  # type: ignore[attr-defined]
        sender._RTCRtpSender__encoder = None  # type: ignore[attr-defined]
        sender._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    async def _pull(self, codec: RTCRtpCodecParameters) -> None:
        """aiortc's loop: read the track, send what it gives."""
        sender = self._sender
        while True:
            if not sender._RTCRtpSender__track:  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
                continue
            frame = await sender._next_encoded_frame(codec)
            if frame is not None:
                datagrams, sent = self._frame(frame.payloads, frame.timestamp)
                await self._transmit(datagrams)
                self._sent(*sent)

    def _deliver(self, pushed: ForwardedFrame) -> None:
        """A frame the Consumer pushes: what ``_next_encoded_frame`` and the loop do with it,
        sent on the pair's UDP socket at once. A closed connection stops the Consumer, which
        ends ``_run`` as a ``ConnectionError`` ends its loop."""
        sender = self._sender
        if not sender._enabled:
            return  # as aiortc: a disabled sender drops what it reads
        encoder = sender._RTCRtpSender__encoder  # type: ignore[attr-defined]
        payloads, timestamp = encoder.pack(pushed.packet)
        if not payloads:
            return
        datagrams, sent = self._frame(payloads, timestamp)
        try:
            self._send_now(datagrams)
        except ConnectionError:
            sender._RTCRtpSender__track.stop()  # type: ignore[attr-defined]
            return
        self._sent(*sent)

    def _frame(
        self, payloads: list[bytes], rtp_timestamp: int
    ) -> tuple[list[bytes], tuple[int, int, list[bytes]]]:
        """The next frame's packets (see ``_packets``), and what ``_sent`` counts once they
        are sent."""
        timestamp = uint32_add(self._timestamp_origin, rtp_timestamp)
        ntp = current_ntp_time()
        sequence_number = self._sequence_number
        datagrams = self._packets(self._payload_type, sequence_number, timestamp, ntp, payloads)
        self._sequence_number = uint16_add(sequence_number, len(datagrams))
        return datagrams, (timestamp, ntp, payloads)

    def _packets(
        self,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ntp: int,
        payloads: list[bytes],
    ) -> list[bytes]:
        """The frame's packets, unprotected, recorded in the retransmission history; ``ntp``
        is the send time (a frame's packets leave together)."""
        sender = self._sender
        extensions = HeaderExtensions(
            mid=sender._RTCRtpSender__mid,  # type: ignore[attr-defined]
            abs_send_time=(ntp >> 14) & 0x00FFFFFF,
        )
        profile, value = sender._RTCRtpSender__rtp_header_extensions_map.set(extensions)  # type: ignore[attr-defined]
        first = RTP_VERSION | (HAS_EXTENSION if value else 0)
        block = EXTENSION_HEADER.pack(profile, len(value) // 4) + value if value else b""
        ssrc = sender._ssrc
        last = len(payloads) - 1
        history, size = self._history, _history_size()
        datagrams = []
        for i, payload in enumerate(payloads):
            second = (MARKER if i == last else 0) | payload_type
            data = HEADER.pack(first, second, sequence_number, timestamp, ssrc) + block + payload
            history[sequence_number % size] = Sent(sequence_number, data)
            datagrams.append(data)
            sequence_number = (sequence_number + 1) & 0xFFFF
        return datagrams

    def _sent(self, timestamp: int, ntp: int, payloads: list[bytes]) -> None:
        """What aiortc's sender reports (RTCP SR) and ``getStats`` read."""
        sender = self._sender
        sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
        sender._RTCRtpSender__rtp_timestamp = timestamp  # type: ignore[attr-defined]
        sender._RTCRtpSender__octet_count += sum(map(len, payloads))  # type: ignore[attr-defined]
        sender._RTCRtpSender__packet_count += len(payloads)  # type: ignore[attr-defined]
        self.frames_sent += 1

    def _udp(self) -> tuple[asyncio.DatagramTransport, Address] | None:
        """The UDP socket and remote address of the nominated candidate pair; None when there
        is none yet, or it is a TURN pair (aioice sends on those in a coroutine)."""
        dtls: RTCDtlsTransport = self._sender.transport
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or type(pair.protocol) is not StunProtocol:
            return None
        return pair.protocol.transport, pair.remote_addr

    def _protect(self, datagrams: list[bytes]) -> list[bytes]:
        dtls: RTCDtlsTransport = self._sender.transport
        if dtls._state != State.CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        protect = dtls._tx_srtp.protect
        return [protect(data) for data in datagrams]

    def _count(self, protected: list[bytes]) -> None:
        """As aiortc's DTLS transport counts what it sends (``relay.liveness`` reads it)."""
        dtls: RTCDtlsTransport = self._sender.transport
        dtls._RTCDtlsTransport__tx_bytes += sum(map(len, protected))  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__tx_packets += len(protected)  # type: ignore[attr-defined]

    def _send_now(self, datagrams: list[bytes]) -> None:
        """Protect and send on the nominated pair's UDP socket (aiortc's
        ``RTCDtlsTransport._send_rtp`` and aioice's ``Connection.sendto``, inlined)."""
        protected = self._protect(datagrams)
        udp = self._udp()
        if udp is None:
            raise ConnectionError("Cannot send data, not connected")
        transport, address = udp
        send_datagrams(transport, protected, address)
        self._count(protected)

    async def _transmit(self, datagrams: list[bytes]) -> None:
        """``_send_now``, or through aioice's coroutine on a TURN pair (which may wait for its
        channel to be bound)."""
        pair = self._sender.transport.transport._connection._nominated.get(1)
        if pair is None or type(pair.protocol) is StunProtocol:
            self._send_now(datagrams)  # which raises ConnectionError when there is no pair
            return
        protected = self._protect(datagrams)
        for data in protected:
            await pair.protocol.send_data(data, pair.remote_addr)
        self._count(protected)

    async def _retransmit(self, sequence_number: int) -> None:
        """A viewer NACKed ``sequence_number``: resend it, in RTX when negotiated (aiortc's
        ``_retransmit`` on the stored bytes)."""
        sent = self._history.get(sequence_number % _history_size())
        if sent is None or sent.sequence_number != sequence_number:
            return
        sender = self._sender
        extensions_map = sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
        data = sent.data
        rtx_payload_type = sender._RTCRtpSender__rtx_payload_type  # type: ignore[attr-defined]
        if rtx_payload_type is not None:
            rtx_sequence_number = sender._RTCRtpSender__rtx_sequence_number  # type: ignore[attr-defined]
            packet = wrap_rtx(
                RtpPacket.parse(data, extensions_map),
                payload_type=rtx_payload_type,
                sequence_number=rtx_sequence_number,
                ssrc=sender._rtx_ssrc,
            )
            sender._RTCRtpSender__rtx_sequence_number = uint16_add(rtx_sequence_number, 1)  # type: ignore[attr-defined]
            data = packet.serialize(extensions_map)
        await self._transmit([data])


def _history_size() -> int:
    """aiortc's sender reads its history size as a module global, which ``relay.recovery`` sets."""
    return int(aiortc.rtcrtpsender.RTP_HISTORY_SIZE)  # type: ignore[attr-defined]


def send_per_frame(sender: RTCRtpSender) -> OutboundRtp:
    """Give ``sender`` (a forwarding viewer's, before negotiation) the per-frame send path."""
    outbound = OutboundRtp(sender)
    outbound.install()
    return outbound
