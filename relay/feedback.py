"""What a viewer's RTCP says about its link, as ``relay.quality.Sample``\\ s (aiortc 1.16.0 seam).

aiortc's ``RTCRtpSender._handle_rtcp_packet`` reads every RTCP packet a viewer sends about the
stream it receives, and keeps little of it: REMB goes to an encoder the forwarding path does not
use, the RTT is smoothed away, NACKs only trigger retransmissions. ``watch`` wraps that method on
one sender and turns the packets into samples (aiortc's own handling is unchanged, except that
after a source swap NACKs of the old source's packets are dropped: ``Feedback.forget_sent``):

* REMB (``goog-remb``): the receiver's bandwidth estimate for this sender's SSRC;
* receiver reports: the fraction lost since the previous report, and the RTT from LSR/DLSR,
  per report (aiortc keeps only an average that takes seconds to follow a filling queue);
* NACKs: counted, and reported with the next receiver report as the share of packets sent since
  the previous one that were NACKed (a loss signal that does not wait for the report interval
  of a receiver that under-reports).

Work per RTCP packet only (a few a second), never per media packet. Like ``relay.forwarding``,
this names aiortc's private attributes and is pinned to its version (tests check the seam).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiortc import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from .quality import Sample

logger = logging.getLogger(__name__)

FORGET_S = 2.0
"""How long NACKs for packets sent before a source swap are ignored: long past the viewer's
last re-NACK of them, far short of the 16-bit sequence numbers wrapping."""
FAILURE_LOG_INTERVAL_S = 60.0
"A fault in reading viewer reports would repeat at the report rate: one log line a minute."


class Feedback:
    """The samples of one viewer's video sender; counters for ``/metrics`` and tests."""

    def __init__(self, sender: RTCRtpSender, on_sample: Callable[[Sample], None]) -> None:
        self._sender = sender
        self._on_sample = on_sample
        self.nacked = 0
        "Packets the viewer NACKed."
        self.reports = 0
        self.rembs = 0
        self.last: Sample | None = None
        self._nacked_at_report = 0
        self._sent_at_report = 0
        self._forgotten: frozenset[int] = frozenset()
        self._forgotten_until = 0.0
        self.forgotten_nacks = 0
        self._failed_logged = -FAILURE_LOG_INTERVAL_S

    def forget_sent(self) -> None:
        """The viewer now decodes a new source from its keyframe (``relay.selector``): nothing
        sent before is worth resending. On a congested link those retransmissions would only
        crowd out the new source's keyframe."""
        history = self._sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
        self._forgotten = frozenset(p.sequence_number for p in history.values())
        self._forgotten_until = time.monotonic() + FORGET_S

    def wanted(self, packet: AnyRtcpPacket) -> AnyRtcpPacket | None:
        """``packet`` without NACKs of forgotten packets (None: nothing left of it)."""
        if not (isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK):
            return packet
        if not self._forgotten or time.monotonic() > self._forgotten_until:
            self._forgotten = frozenset()
            return packet
        lost = [seq for seq in packet.lost if seq not in self._forgotten]
        self.forgotten_nacks += len(packet.lost) - len(lost)
        if not lost:
            return None
        return RtcpRtpfbPacket(
            fmt=packet.fmt, ssrc=packet.ssrc, media_ssrc=packet.media_ssrc, lost=lost
        )

    def read(self, packet: AnyRtcpPacket) -> None:
        """One RTCP packet the sender received (after aiortc handled it)."""
        ssrc = self._sender._ssrc
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == ssrc:
                    self._report(report.fraction_lost / 256, report.lsr, report.dlsr)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nacked += len(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if ssrc in ssrcs:
                self.rembs += 1
                self._emit(Sample(at=time.monotonic(), remb_bps=bitrate))

    def _report(self, fraction_lost: float, lsr: int, dlsr: int) -> None:
        sender = self._sender
        sent = sender._RTCRtpSender__packet_count  # type: ignore[attr-defined]
        nacked = self.nacked - self._nacked_at_report
        interval = sent - self._sent_at_report
        self._nacked_at_report, self._sent_at_report = self.nacked, sent
        loss = max(fraction_lost, min(1.0, nacked / interval) if interval > 0 else 0.0)
        rtt = None
        # The report echoes the middle 32 bits of our last SR's NTP time (LSR) and how long the
        # viewer held it (DLSR, 1/65536 s): RTT = now - when that SR left - DLSR.
        if lsr and lsr == sender._RTCRtpSender__lsr and dlsr:  # type: ignore[attr-defined]
            sent_at = sender._RTCRtpSender__lsr_time  # type: ignore[attr-defined]
            rtt = max(0.0, time.time() - sent_at - dlsr / 65536)
        self.reports += 1
        self._emit(Sample(at=time.monotonic(), loss=loss, rtt_s=rtt))

    def failed(self) -> None:
        """Reading a packet (or acting on it) raised: log it, at most once a minute."""
        now = time.monotonic()
        if now - self._failed_logged >= FAILURE_LOG_INTERVAL_S:
            self._failed_logged = now
            logger.exception("Feedback: a viewer's report could not be used")

    def _emit(self, sample: Sample) -> None:
        self.last = sample
        self._on_sample(sample)


def watch(sender: RTCRtpSender, on_sample: Callable[[Sample], None]) -> Feedback:
    """Turn what ``sender``'s viewer reports into samples for ``on_sample`` (on the loop)."""
    feedback = Feedback(sender, on_sample)
    handle = sender._handle_rtcp_packet

    async def handle_and_read(packet: AnyRtcpPacket) -> None:
        # Read after filtering: NACKs of a swapped-out source's packets are not loss on the new
        # one. This runs inside aiortc's DTLS receive loop, where an exception would end the
        # viewer's connection: a fault of ours is logged, and aiortc still handles the packet.
        wanted = feedback.wanted(packet)
        if wanted is not None:
            try:
                feedback.read(wanted)
            except Exception:
                feedback.failed()
            await handle(wanted)

    sender._handle_rtcp_packet = handle_and_read  # type: ignore[method-assign]
    return feedback
