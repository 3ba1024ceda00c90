"""``relay.tapped``: a tapped receiver's packets handled in one call — real VP8 frames, stamped,
from an aiortc sender through a real peer connection, one packet lost on the way."""

from __future__ import annotations

import asyncio
import gc
import inspect
import random
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any

import av
import pytest
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
)
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, unpack_remb_fci

from client.testpattern import read_stamp
from relay import forwarding
from relay.eager import run_eagerly
from relay.tapped import tapped
from tests.encoded_track import OneLost, count_retransmissions, send_stamped_vp8
from tests.peers import new_pc, wait_until

pytestmark = pytest.mark.timeout(60)

FRAMES = 150
"Five seconds: aiortc's estimator sends its first REMB after three."

DROPPED = 120
"The index, among the SRTP media datagrams, of the one the test loses (then NACKed, resent)."


SEAMS: dict[Callable[..., Any], tuple[str, ...]] = {
    RTCRtpReceiver._handle_rtp_packet: (
        "if not self._enabled:",
        "remb = self.__remote_bitrate_estimator.add(",
        "payload_size=len(packet.payload) + packet.padding_size,",
        "if self.__rtcp_ssrc is not None and remb is not None:",
        "self.__active_ssrc[packet.ssrc] = clock.current_datetime()",
        "codec = self.__codecs.get(packet.payload_type)",
        "self.__remote_streams[packet.ssrc] = StreamStatistics(codec.clockRate)",
        "if is_rtx(codec):",
        "if self.__nack_generator is not None and self.__nack_generator.add(packet):",
        "packet._data = depayload(codec, packet.payload)",
        "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
        "if self.__decoder_error.is_set():",
        "await self._send_rtcp_pli(packet.ssrc)",
    ),
    StreamStatistics.add: (
        "in_order = self.max_seq is None or uint16_gt(",
        "arrival = int(time.time() * self._clockrate)",
        "if self.max_seq is not None and packet.sequence_number < self.max_seq:",
        "self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)",
    ),
    NackGenerator.add: (
        "if uint16_gt(packet.sequence_number, self.max_seq):",
        "self.truncate()",
    ),
    RTCDtlsTransport._handle_rtp_data: (
        "packet = RtpPacket.parse(data, self._rtp_header_extensions_map)",
        "receiver = self._rtp_router.route_rtp(packet)",
    ),
}
"What ``TappedReceiver.handle`` does in aiortc's place, as aiortc 1.16.0 writes it."


def test_the_seam_is_the_one_written_against() -> None:
    """Fails when aiortc changes what ``TappedReceiver.handle`` does in its place."""
    assert forwarding.AIORTC_VERSION == "1.16.0"
    for function, lines in SEAMS.items():
        source = inspect.getsource(function)
        for line in lines:
            assert line in source, (function.__qualname__, line)


async def test_media_in_one_call_rtx_by_aiortc_and_every_frame_arrives() -> None:
    forwarding.use_host_addresses(("127.0.0.1",))
    sending, receiving = new_pc(), new_pc()
    sender = send_stamped_vp8(sending, FRAMES).sender
    resent = count_retransmissions(sender)
    rembs: list[int] = []
    handle_rtcp = sender._handle_rtcp_packet

    async def noting_remb(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            rembs.append(unpack_remb_fci(packet.fci)[0])
        await handle_rtcp(packet)

    sender._handle_rtcp_packet = noting_remb

    await sending.setLocalDescription(await sending.createOffer())
    await receiving.setRemoteDescription(sending.localDescription)
    receiver = receiving.getTransceivers()[0].receiver
    frames: list[bytes] = []
    tap = forwarding.tap_receiver(receiver, "video", lambda data, *_: frames.append(data), list)
    handler = tapped(receiver)
    assert handler is not None
    by_tap: list[int] = []
    by_aiortc: list[int] = []
    handle = handler.handle

    def counting_handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        by_tap.append(packet.payload_type)
        handle(packet, arrival_time_ms)

    handler.handle = counting_handle  # type: ignore[method-assign]
    aiortcs = receiver._handle_rtp_packet

    async def counting_aiortcs(packet: RtpPacket, arrival_time_ms: int) -> None:
        by_aiortc.append(packet.payload_type)
        await aiortcs(packet, arrival_time_ms)

    receiver._handle_rtp_packet = counting_aiortcs
    losing = OneLost(DROPPED)

    @receiving.on("connectionstatechange")
    def on_state() -> None:
        if receiving.connectionState == "connected":
            losing.install(receiving)

    try:
        await receiving.setLocalDescription(await receiving.createAnswer())
        await sending.setRemoteDescription(receiving.localDescription)
        assert await wait_until(lambda: len(frames) >= FRAMES, timeout=30), len(frames)
        assert losing.media_seen > DROPPED

        # every frame, whole and in order, the lost packet included (NACKed, resent in RTX)
        decoder = av.CodecContext.create("libvpx", "r")
        stamps = [read_stamp(f)[0] for data in frames for f in decoder.decode(av.Packet(data))]
        assert stamps == list(range(FRAMES))
        assert resent

        # every packet reached the tapped receiver; it handled the media in one call each and
        # passed the retransmission (RTX) to aiortc's coroutine, which otherwise saw only the
        # few packets that came before the direct path was installed
        codecs = receiver._RTCRtpReceiver__codecs
        (vp8,) = (pt for pt, c in codecs.items() if c.name == "VP8")
        (rtx,) = (pt for pt, c in codecs.items() if c.name == "rtx")
        assert vp8 in by_tap and rtx in by_tap and rtx in by_aiortc
        assert len(by_tap) >= losing.media_seen - 21
        assert by_aiortc.count(vp8) <= len(by_tap) // 10  # however slow the install on a busy box

        # what aiortc keeps about the stream is kept: statistics, the active source, the REMB
        ssrc = forwarding.media_ssrc(receiver)
        assert ssrc in [s.source for s in receiver.getSynchronizationSources()]
        # (read where getStats reads them: its report keeps one stream per receiver, here RTX's)
        streams = receiver._RTCRtpReceiver__remote_streams
        assert streams[ssrc].packets_received >= by_tap.count(vp8)
        assert await wait_until(lambda: bool(rembs), timeout=5)
        assert all(bitrate > 100_000 for bitrate in rembs), rembs
    finally:
        tap.close()
        await asyncio.wait_for(sending.close(), 10)
        await receiving.close()


async def test_a_tapped_receiver_goes_with_its_connection() -> None:
    """Nothing global keeps a tapped receiver (and its peer connection) alive once closed."""
    sending, receiving = new_pc(), new_pc()
    send_stamped_vp8(sending, 1)
    await sending.setLocalDescription(await sending.createOffer())
    await receiving.setRemoteDescription(sending.localDescription)
    receiver = receiving.getTransceivers()[0].receiver
    forwarding.tap_receiver(receiver, "video", lambda *_: None, list).close()
    assert tapped(receiver) is not None
    gone = weakref.ref(receiver), weakref.ref(receiving)
    del receiver
    await sending.close()
    await receiving.close()
    del receiving
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


class Handled:
    """One real (unconnected) video receiver, tapped, with what it sends and releases noted."""

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.receiver = RTCRtpReceiver("video", dtls)
        self.receiver._RTCRtpReceiver__codecs[96] = RTCRtpCodecParameters(
            mimeType="video/VP8", clockRate=90_000, payloadType=96
        )
        self.frames: list[tuple[bytes, int]] = []
        self.nacks: list[list[int]] = []
        self.tap = forwarding.tap_receiver(
            self.receiver, "video", lambda data, ts, _: self.frames.append((data, ts)), list
        )

        async def nack(ssrc: int, lost: list[int]) -> None:
            self.nacks.append(lost)

        async def ignore(*_: object) -> None:
            pass

        self.receiver._send_rtcp_nack = nack
        self.receiver._send_rtcp_pli = ignore
        self.receiver._send_rtcp = ignore

    def state(self) -> tuple[object, ...]:
        """Statistics, NACK bookkeeping, and what was sent and released."""
        (stats,) = self.receiver._RTCRtpReceiver__remote_streams.values()
        nack = self.receiver._RTCRtpReceiver__nack_generator
        return vars(stats), nack.max_seq, sorted(nack.missing), self.nacks, self.frames


def vp8_packets(rng: random.Random, count: int) -> list[bytes]:
    """``count`` VP8 packets of frames of 1–6 packets from sequence number 65400 (so they
    wrap), each frame's last one marked; abs-send-time is unused (no extension map)."""
    packets: list[bytes] = []
    sequence_number, timestamp = 65_400, 1_000
    while len(packets) < count:
        size = rng.randint(1, 6)
        for i in range(size):
            descriptor = b"\x10" if i == 0 else b"\x00"
            header = struct.pack(
                "!BBHLL", 0x80, (0x80 if i == size - 1 else 0) | 96, sequence_number, timestamp, 7
            )
            packets.append(header + descriptor + rng.randbytes(rng.randint(1, 40)))
            sequence_number = (sequence_number + 1) & 0xFFFF
        timestamp += 3000
    return packets[:count]


def arrivals(rng: random.Random, packets: list[bytes]) -> list[bytes]:
    """The packets as a lossy link delivers them: some lost (a few resent later), some
    swapped with the next, some twice."""
    delivered: list[bytes] = []
    late: list[bytes] = []
    for data in packets:
        roll = rng.random()
        if roll < 0.05:
            if rng.random() < 0.6:
                late.append(data)  # NACKed, resent a few packets later
        elif roll < 0.08 and delivered:
            delivered.insert(len(delivered) - 1, data)
        else:
            delivered.append(data)
            if roll > 0.98:
                delivered.append(data)
        if late and rng.random() < 0.3:
            delivered.append(late.pop(0))
    return delivered + late


async def test_tapped_handling_keeps_what_aiortc_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packet by packet, a tapped receiver and one aiortc handles itself agree on statistics
    (jitter included: one clock for both), NACK bookkeeping, the NACKs sent and the frames
    released, on in-order, lost, resent, swapped and doubled packets across the sequence
    wrap."""
    clock = [1_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )
    by_aiortc, by_tap = Handled(dtls), Handled(dtls)
    handler = tapped(by_tap.receiver)
    assert handler is not None
    rng = random.Random(3)
    try:
        for data in arrivals(rng, vp8_packets(rng, 3000)):
            clock[0] += rng.choice([0.0, 0.0005, 0.004, 0.03])
            arrival_ms = int(clock[0] * 1000)
            run_eagerly(by_aiortc.receiver._handle_rtp_packet(RtpPacket.parse(data), arrival_ms))
            handler.handle(RtpPacket.parse(data), arrival_ms)
            assert by_tap.state() == by_aiortc.state()
        assert len(by_tap.frames) > 500 and len(by_tap.nacks) > 50
        assert by_tap.state()[0]["cycles"] == 1 << 16
    finally:
        by_aiortc.tap.close()
        by_tap.tap.close()
