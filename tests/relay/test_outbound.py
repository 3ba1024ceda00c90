"""The per-frame send path of forwarding viewers (``relay.outbound``): real VP8 frames, stamped,
through two real peer connections on loopback; aiortc's receiver decodes what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect

import aiortc
import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket, RtpPacket

from client.testpattern import TestPatternTrack, read_stamp
from relay import forwarding, recovery
from relay.outbound import OutboundRtp, Sent, send_per_frame
from tests.peers import new_pc, wait_until

pytestmark = pytest.mark.timeout(60)

FRAMES = 90
FPS = 30


def encoded_frames(count: int) -> list[av.Packet]:
    """``count`` VP8 frames of the stamped test pattern (frame index in the picture)."""
    pattern = TestPatternTrack(width=320, height=240, fps=FPS)
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.bit_rate = 3_000_000  # frames of several packets
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "qmax": "8"}
    packets: list[av.Packet] = []
    for index in range(count):
        frame = pattern.frame(index, 0)
        frame.pts, frame.time_base = index, encoder.time_base
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    return packets


class EncodedTrack(MediaStreamTrack):
    """Pre-encoded frames at their frame rate, as a Consumer hands them to a viewer's sender."""

    kind = "video"

    def __init__(self, packets: list[av.Packet]) -> None:
        super().__init__()
        self._packets = list(packets)

    async def recv(self) -> av.Packet:
        if not self._packets:
            raise MediaStreamError
        await asyncio.sleep(1 / FPS)
        packet = self._packets.pop(0)
        packet.pts = packet.pts * 90_000 // FPS
        packet.time_base = fractions.Fraction(1, 90_000)
        return packet


async def _connect(sending: RTCPeerConnection, receiving: RTCPeerConnection) -> None:
    await sending.setLocalDescription(await sending.createOffer())
    await receiving.setRemoteDescription(sending.localDescription)
    await receiving.setLocalDescription(await receiving.createAnswer())
    await sending.setRemoteDescription(receiving.localDescription)


def test_the_seam_is_the_one_written_against() -> None:
    """Fails when aiortc moves what ``OutboundRtp`` replaces and keeps: re-check it then."""
    assert aiortc.__version__ == forwarding.AIORTC_VERSION == "1.16.0"
    source = inspect.getsource(RTCRtpSender)
    for private in (
        "self.__rtp_task = asyncio.ensure_future(self._run_rtp(parameters.codecs[0]))",
        "await self._retransmit(",
        "enc_frame = await self._next_encoded_frame(codec)",
        "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE]",
        "self.__rtp_exited.set()",
        "packet.extensions.mid = self.__mid",
    ):
        assert private in source, private


async def test_stamped_frames_arrive_in_order_and_decode_with_aiortc_headers() -> None:
    forwarding.use_host_addresses(("127.0.0.1",))
    sending, receiving = new_pc(), new_pc()
    transceiver = sending.addTransceiver(EncodedTrack(encoded_frames(FRAMES)), "sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name in ("VP8", "rtx")]
    )
    sender = transceiver.sender
    outbound = send_per_frame(sender)
    stamps: list[int] = []

    @receiving.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.VideoFrame)
                    stamps.append(read_stamp(frame)[0])

        asyncio.ensure_future(read())

    try:
        await _connect(sending, receiving)
        # aiortc's receiver hands a frame on when the next one starts: all but the last arrive
        assert await wait_until(lambda: len(stamps) >= FRAMES - 1, timeout=20), stamps
        assert stamps[: FRAMES - 1] == list(range(FRAMES - 1))
        assert outbound.frames_sent == FRAMES

        # every packet is what aiortc's own sender would have written
        extensions = sender._RTCRtpSender__rtp_header_extensions_map
        history = sender._RTCRtpSender__rtp_history
        sent = sorted(history.values(), key=lambda s: s.sequence_number)
        assert all(isinstance(s, Sent) for s in sent)
        size = aiortc.rtcrtpsender.RTP_HISTORY_SIZE
        assert size == recovery.current().history  # the relay's, not aiortc's 128
        packets = [RtpPacket.parse(s.data, extensions) for s in sent]
        assert [p.sequence_number for p in packets] == [s.sequence_number for s in sent]
        assert all(p.ssrc == sender._ssrc for p in packets)
        assert all(p.extensions.mid == transceiver.mid for p in packets)
        assert all(p.extensions.abs_send_time is not None for p in packets)
        for earlier, later in zip(packets, packets[1:], strict=False):
            # the marker bit ends a frame: the next packet has a new timestamp
            assert bool(earlier.marker) == (later.timestamp != earlier.timestamp)
        stats = [s for s in (await sender.getStats()).values() if s.type == "outbound-rtp"]
        assert len(sent) == min(stats[0].packetsSent, size) > 128

        # a NACK is answered with an RTX packet carrying the lost one
        dtls = sender.transport
        before = dtls._RTCDtlsTransport__tx_packets
        rtx_before = sender._RTCRtpSender__rtx_sequence_number
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
        nack.lost = [packets[-1].sequence_number]
        await sender._handle_rtcp_packet(nack)
        assert dtls._RTCDtlsTransport__tx_packets == before + 1
        assert sender._RTCRtpSender__rtx_sequence_number == (rtx_before + 1) % 65_536
        nack.lost = [(packets[-1].sequence_number + 1000) % 65_536]  # never sent: nothing
        await sender._handle_rtcp_packet(nack)
        assert dtls._RTCDtlsTransport__tx_packets == before + 1
    finally:
        await asyncio.wait_for(sending.close(), 10)
        await receiving.close()
    assert sender._RTCRtpSender__rtp_exited.is_set()


async def test_an_unconnected_sender_stops_cleanly() -> None:
    """The loop ends on the same exceptions as aiortc's, so ``RTCRtpSender.stop`` never hangs."""
    sending = new_pc()
    transceiver = sending.addTransceiver(EncodedTrack(encoded_frames(3)), "sendonly")
    outbound = OutboundRtp(transceiver.sender)
    outbound.install()
    await asyncio.wait_for(sending.close(), 10)
    assert outbound.frames_sent == 0
