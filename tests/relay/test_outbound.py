"""The per-frame send path of forwarding viewers (``relay.outbound``): real VP8 frames, stamped,
through two real peer connections on loopback; aiortc's receiver decodes what arrives."""

from __future__ import annotations

import asyncio
import inspect

import aiortc
import pytest
from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import State
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket, RtpPacket

from relay import forwarding, recovery
from relay.outbound import OutboundRtp, Sent, send_per_frame
from relay.producer import Producer
from relay.segmented import segmented_sends
from tests.encoded_track import (
    FPS,
    FRAMES,
    EncodedTrack,
    collect_stamps,
    connect,
    encoded_frames,
    send_stamped_vp8,
)
from tests.peers import new_pc, wait_until

pytestmark = pytest.mark.timeout(60)


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
    transceiver = send_stamped_vp8(sending)
    sender = transceiver.sender
    outbound = send_per_frame(sender)
    stamps = collect_stamps(receiving)

    try:
        await connect(sending, receiving)
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


async def test_a_consumer_pushes_its_frames_to_a_udp_pair_and_stops_quietly_when_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A viewer as the Router sets it up: a Producer's frames, through its Consumer, pushed to
    the sender (no read loop, nothing queued) arrive stamped and in order; a transport that
    stops being connected under it stops the Consumer without a warning, and the sender's
    loop exits."""
    forwarding.use_host_addresses(("127.0.0.1",))
    producer = Producer("video", "VP8", "test")
    producer.attach(lambda: True)
    consumer = producer.consume("viewer")
    sending, receiving = new_pc(), new_pc()
    transceiver = sending.addTransceiver(consumer, "sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name in ("VP8", "rtx")]
    )
    sender = transceiver.sender
    forwarding.share_packetization(sender, consumer, "VP8")
    outbound = send_per_frame(sender)
    stamps = collect_stamps(receiving)
    frames = encoded_frames(FRAMES)
    try:
        await connect(sending, receiving)
        assert await wait_until(lambda: consumer._sink == outbound._deliver, timeout=10)
        segmented_before = segmented_sends()
        with caplog.at_level("WARNING"):
            for index, packet in enumerate(frames):
                producer.on_frame(bytes(packet), index * 3000)
                assert consumer.queued == 0
                await asyncio.sleep(1 / FPS)
            assert await wait_until(lambda: len(stamps) >= FRAMES - 1, timeout=20), stamps
            assert stamps[: FRAMES - 1] == list(range(FRAMES - 1))
            assert outbound.frames_sent == FRAMES
            assert segmented_sends() > segmented_before  # frames of several packets: one send

            # DTLS fails under the viewer: aiortc's send would raise ConnectionError
            sender.transport._set_state(State.FAILED)
            producer.on_frame(bytes(frames[0]), FRAMES * 3000)
            assert consumer.readyState == "ended" and consumer not in producer.consumers
            await asyncio.wait_for(sender._RTCRtpSender__rtp_exited.wait(), 5)
        assert outbound.frames_sent == FRAMES
        assert not [r for r in caplog.records if r.name.startswith("relay")]
    finally:
        await asyncio.wait_for(sending.close(), 10)
        await receiving.close()
