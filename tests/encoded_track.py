"""Pre-encoded VP8 frames of the stamped test pattern, sent at their frame rate as a Consumer hands
them to a viewer's sender, two peer connections joined without a server, and one media datagram
lost between them."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import is_rtcp

from client.testpattern import TestPatternTrack, read_stamp
from relay.inbound import InboundRtp, receive_where_it_arrives

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


async def connect(sending: RTCPeerConnection, receiving: RTCPeerConnection) -> None:
    await sending.setLocalDescription(await sending.createOffer())
    await receiving.setRemoteDescription(sending.localDescription)
    await receiving.setLocalDescription(await receiving.createAnswer())
    await sending.setRemoteDescription(receiving.localDescription)


def send_stamped_vp8(pc: RTCPeerConnection, frames: int = FRAMES) -> RTCRtpTransceiver:
    """A send-only transceiver of ``frames`` stamped frames, VP8 with RTX."""
    transceiver = pc.addTransceiver(EncodedTrack(encoded_frames(frames)), "sendonly")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name in ("VP8", "rtx")]
    )
    return transceiver


def collect_stamps(pc: RTCPeerConnection) -> list[int]:
    """The stamps of the frames ``pc`` receives and aiortc decodes, in arrival order."""
    stamps: list[int] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.VideoFrame)
                    stamps.append(read_stamp(frame)[0])

        asyncio.ensure_future(read())

    return stamps


Datagrams = Callable[[bytes, tuple[Any, ...]], None]


class OneLost:
    """The direct receive path of a connected peer (``relay.inbound``), losing the ``dropped``-th
    SRTP media datagram that reaches it (the sender's NACK handling then resends it)."""

    def __init__(self, dropped: int) -> None:
        self.dropped = dropped
        self.media_seen = 0
        "SRTP media datagrams seen, the lost one included."
        self.sources: list[tuple[Any, ...]] = []
        "The source address of every datagram, in arrival order."

    def install(self, pc: RTCPeerConnection) -> list[InboundRtp]:
        """Call once ``pc`` is connected."""
        paths = receive_where_it_arrives(pc)
        for path in paths:
            protocol = path._dtls.transport._connection._nominated[1].protocol
            protocol.datagram_received = self._losing(protocol.datagram_received)
        return paths

    def _losing(self, take: Datagrams) -> Datagrams:
        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            self.sources.append(addr)
            if 127 < data[0] < 192 and not is_rtcp(data):
                self.media_seen += 1
                if self.media_seen == self.dropped:
                    return
            take(data, addr)

        return datagram_received


def count_retransmissions(sender: RTCRtpSender) -> list[int]:
    """The sequence numbers ``sender`` is asked to resend (a viewer's NACKs), as they come."""
    resent: list[int] = []
    retransmit = sender._retransmit

    async def counting(sequence_number: int) -> None:
        resent.append(sequence_number)
        await retransmit(sequence_number)

    sender._retransmit = counting  # type: ignore[method-assign]
    return resent
