"""A tapped receiver's RTP handling as one plain function call per packet (aiortc 1.16.0 seam).

aiortc handles each received RTP packet in two coroutines (the DTLS transport's
``_handle_rtp_data``, the receiver's ``_handle_rtp_packet``) that ``relay.inbound`` drives at
once. For a receiver whose frames go to the relay (``relay.forwarding.tap_receiver``) the work
they do is plain computation, except an RTCP packet now and then: creating and driving the two
coroutines, the codec's name looked up twice per packet, and a timezone-aware ``datetime`` made
per packet to mark the source active cost more than the statistics, NACK bookkeeping and
depayloading themselves.

``TappedReceiver.handle`` does what aiortc 1.16.0's ``_handle_rtp_packet`` does, in its order,
on the receiver's own objects (bandwidth estimator, statistics, NACK generator, the tap's buffer):

* the bandwidth estimate, sent as REMB when it has a new value;
* the source's "last active" time, refreshed once a second instead of per packet (aiortc's
  ``getSynchronizationSources`` keeps sources active for 10 s);
* receiver statistics, NACKs for new gaps, the codec's depayloading, the tap's buffer. For the
  common packet, the one right after the highest seen, the statistics' and the NACK
  generator's bookkeeping is done here on their fields, as their ``add`` would do it, without
  the helper calls it makes (they cost more than the arithmetic);
* a keyframe request when the buffer or a decoder asks for one.

Packets it does not handle go to aiortc's coroutine, driven at once as before: a receiver not
started yet or disabled, RTX (retransmissions, only on loss) and unknown payload types. RTCP it
sends (REMB, NACK, PLI) goes through aiortc's ``_send_rtcp*`` (``relay.eager.run_eagerly``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.clock import current_datetime
from aiortc.codecs import is_rtx
from aiortc.codecs.h264 import h264_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from .codecs import vp8_depayload
from .eager import run_eagerly
from .remb import RembEstimator

ACTIVE_REFRESH_MS = 1000
"How often a source's last-active time is refreshed (aiortc: every packet; it keeps 10 s)."

Depayload = Callable[[bytes], bytes]

_DEPAYLOAD: dict[str, Depayload] = {"VP8": vp8_depayload, "H264": h264_depayload}
"""aiortc's ``codecs.depayload``, looked up once per payload type instead of per packet (VP8's
without a descriptor object: ``relay.codecs.vp8_depayload``)."""

_ATTRIBUTE = "_relay_tapped"
"""Where a receiver keeps its ``TappedReceiver``: on itself, so that the two go together (a
registry keyed by the receiver would keep it alive through its value)."""


class TappedReceiver:
    """The per-packet handling of one tapped ``RTCRtpReceiver`` (see the module doc)."""

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver
        # aiortc's own objects, read once: the receiver never replaces them
        self._codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        self._streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        self._active: dict[int, Any] = receiver._RTCRtpReceiver__active_ssrc  # type: ignore[attr-defined]
        self._nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        self._decoder_error = receiver._RTCRtpReceiver__decoder_error  # type: ignore[attr-defined]
        self._media: dict[int, tuple[RTCRtpCodecParameters, Depayload | None]] = {}
        self._refreshed_ms: dict[int, int] = {}
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        if estimator is not None:
            estimator = RembEstimator()
            receiver._RTCRtpReceiver__remote_bitrate_estimator = estimator  # type: ignore[attr-defined]
        self._estimator: RembEstimator | None = estimator

    def handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's ``_handle_rtp_packet`` for ``packet`` (see the module doc)."""
        receiver = self._receiver
        media = self._media.get(packet.payload_type) or self._learn(packet.payload_type)
        if media is None or not receiver._enabled:
            run_eagerly(receiver._handle_rtp_packet(packet, arrival_time_ms))
            return
        codec, depayload = media
        ssrc = packet.ssrc

        estimator = self._estimator
        if estimator is not None and (abs_send_time := packet.extensions.abs_send_time) is not None:
            remb = estimator.add(
                arrival_time_ms, abs_send_time, len(packet.payload) + packet.padding_size, ssrc
            )
            rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
            if remb is not None and rtcp_ssrc is not None:
                feedback = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                )
                run_eagerly(receiver._send_rtcp(feedback))

        if arrival_time_ms - self._refreshed_ms.get(ssrc, -ACTIVE_REFRESH_MS) >= ACTIVE_REFRESH_MS:
            self._refreshed_ms[ssrc] = arrival_time_ms
            self._active[ssrc] = current_datetime()

        sequence_number = packet.sequence_number
        stats = self._streams.get(ssrc)
        if stats is None:
            stats = self._streams[ssrc] = StreamStatistics(codec.clockRate)
        if stats.max_seq is not None and sequence_number == (stats.max_seq + 1) & 0xFFFF:
            _next_in_statistics(stats, packet)
        else:
            stats.add(packet)

        nack = self._nack
        if nack is not None:
            if (
                not nack.missing
                and nack.max_seq is not None
                and sequence_number == (nack.max_seq + 1) & 0xFFFF
            ):
                nack.max_seq = sequence_number  # all aiortc's add does for the next packet
            elif nack.add(packet):
                run_eagerly(receiver._send_rtcp_nack(ssrc, sorted(nack.missing)))

        payload = packet.payload
        try:
            data = (depayload(payload) if depayload else payload) if payload else b""
        except ValueError:
            return  # as aiortc: a payload that does not parse is dropped
        packet._data = data  # type: ignore[attr-defined]

        pli, frame = receiver._RTCRtpReceiver__jitter_buffer.add(packet)  # type: ignore[attr-defined]
        assert frame is None, "a tap's buffer hands frames to the relay, never to a decoder"
        if self._decoder_error.is_set():
            self._decoder_error.clear()
            pli = pli or receiver._RTCRtpReceiver__kind == "video"  # type: ignore[attr-defined]
        if pli:
            run_eagerly(receiver._send_rtcp_pli(ssrc))

    def _learn(self, payload_type: int) -> tuple[RTCRtpCodecParameters, Depayload | None] | None:
        """A media payload type's codec and depayloader (None: RTX, unknown, or not started)."""
        codec = self._codecs.get(payload_type)
        if codec is None or is_rtx(codec):
            return None
        media = self._media[payload_type] = (codec, _DEPAYLOAD.get(codec.name))
        return media


def _next_in_statistics(stats: StreamStatistics, packet: RtpPacket) -> None:
    """aiortc's ``StreamStatistics.add`` for the packet right after the highest one seen (the
    common case: in order, so its arrival counts towards jitter), without its helper calls."""
    stats.packets_received += 1
    arrival = int(time.time() * stats._clockrate)
    sequence_number, timestamp = packet.sequence_number, packet.timestamp
    if stats.max_seq is not None and sequence_number < stats.max_seq:
        stats.cycles += 1 << 16
    stats.max_seq = sequence_number
    if timestamp != stats._last_timestamp and stats.packets_received > 1:
        assert stats._last_arrival is not None and stats._last_timestamp is not None
        diff = abs((arrival - stats._last_arrival) - (timestamp - stats._last_timestamp))
        stats._jitter_q4 += diff - ((stats._jitter_q4 + 8) >> 4)
    stats._last_arrival = arrival
    stats._last_timestamp = timestamp


def tap(receiver: RTCRtpReceiver) -> TappedReceiver:
    """Handle ``receiver``'s packets with a ``TappedReceiver`` from now on (before it starts)."""
    handler = TappedReceiver(receiver)
    setattr(receiver, _ATTRIBUTE, handler)
    return handler


def tapped(receiver: object) -> TappedReceiver | None:
    """``receiver``'s ``TappedReceiver``, if it has one (``relay.inbound`` asks per packet, with
    what aiortc's RTP router found)."""
    handler = getattr(receiver, _ATTRIBUTE, None)
    return handler if isinstance(handler, TappedReceiver) else None
