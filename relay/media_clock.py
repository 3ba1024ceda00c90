"""Media clock: how a page finds, for the frame it shows, the relay pts (90 kHz) it came from, so
that it applies the anchored marks' placements of that very frame (``relay.tracker``).

* Viewers (WHEP): a sender's RTP timestamp is aiortc's random ``timestamp_origin`` plus the
  timestamp our shared packetization hands it (``relay.forwarding.SharedPacketization``), which
  is the frame's relay pts plus the Selector's continuity shift after a quality swap
  (``relay.selector``). ``SenderClock`` learns the origin from the first packet sent and reports
  ``rtp_offset``: the viewer's RTP timestamp = (relay pts + rtp_offset) mod 2^32. A page reads the
  RTP timestamp of the frame it shows (``requestVideoFrameCallback`` metadata).
* Clinic (WHIP): its RTCP sender reports pair its wall clock (NTP) with its RTP clock;
  ``watch_sender_reports`` hands them to the Producer, which answers ``capture_ms(pts)``: when the
  clinic captured that frame, on the clock its page compares its own preview frames with.

Both read aiortc 1.16 internals (the sender's last RTP timestamp and packet count, the receiver's
RTCP handler), like ``relay.forwarding`` whose version guard covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import AnyRtcpPacket, RtcpSrPacket

from .consumer import ForwardedFrame
from .ids import ConsultationId

logger = logging.getLogger(__name__)

RTP_MODULO = 1 << 32
NTP_UNIX_OFFSET_S = 2_208_988_800
"Seconds from the NTP epoch (1900) to the UNIX epoch (1970)."


@dataclass(frozen=True)
class MediaClock:
    """One WHEP session's RTP offset (``Router(on_media_clock=...)``; the app tells its pages)."""

    cid: ConsultationId
    session_id: str
    identity: str
    rtp_offset: int


class SenderClock:
    """The RTP offset of one viewer's video sender, reported when first known and on change."""

    def __init__(self, sender: RTCRtpSender, on_change: Callable[[int], None]) -> None:
        self._sender = sender
        self._on_change = on_change
        self._origin: int | None = None
        self._previous: int | None = None
        "The timestamp handed to the sender for the frame before this one."
        self.rtp_offset: int | None = None

    def packed(self, frame: ForwardedFrame) -> None:
        """``frame`` is about to be sent (called from the sender's ``pack``). The frame before it
        has been sent by now: aiortc sends all of a frame's packets before asking for the next."""
        if self._origin is None and self._previous is not None:
            sent = _last_rtp_timestamp(self._sender)
            if sent is not None:
                self._origin = (sent - self._previous) % RTP_MODULO
        self._previous = frame.timestamp
        if self._origin is None or frame.packet.pts is None:
            return
        offset = (self._origin + frame.timestamp - frame.packet.pts) % RTP_MODULO
        if offset != self.rtp_offset:
            self.rtp_offset = offset
            self._on_change(offset)


def _last_rtp_timestamp(sender: RTCRtpSender) -> int | None:
    """The RTP timestamp of the sender's last packet (None: it has sent none)."""
    if not sender._RTCRtpSender__packet_count:  # type: ignore[attr-defined]
        return None
    return int(sender._RTCRtpSender__rtp_timestamp)  # type: ignore[attr-defined]


SenderReport = Callable[[float, int], None]
"""``(wall_ms, rtp_timestamp)``: the publisher's wall clock (ms since the UNIX epoch) when its RTP
clock read ``rtp_timestamp`` (its own clock, as in its packets)."""


def watch_sender_reports(receiver: RTCRtpReceiver, on_report: SenderReport) -> None:
    """Hand every RTCP sender report ``receiver`` gets to ``on_report`` (aiortc handles it too)."""
    handle = receiver._handle_rtcp_packet

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            on_report(ntp_to_unix_ms(info.ntp_timestamp), info.rtp_timestamp)
        await handle(packet)

    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def ntp_to_unix_ms(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point since 1900) in ms since the UNIX epoch."""
    return ((ntp >> 32) - NTP_UNIX_OFFSET_S) * 1000.0 + (ntp & 0xFFFFFFFF) * 1000.0 / (1 << 32)


def unwrap(timestamp: int, near: int) -> int:
    """The value ≡ ``timestamp`` (mod 2^32) closest to ``near`` (an unwrapped RTP timestamp)."""
    delta = (timestamp - near) % RTP_MODULO
    return near + (delta - RTP_MODULO if delta >= RTP_MODULO // 2 else delta)
