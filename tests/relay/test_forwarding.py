"""The aiortc hooks: frames leave the jitter buffer on their marker bit, nothing is decoded."""

from __future__ import annotations

import random

import pytest
from aiortc import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from relay.codecs import TemporalLayer
from relay.forwarding import AudioPassthroughBuffer, MarkerJitterBuffer


def rtp(seq: int, ts: int, marker: bool, data: bytes = b"x") -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker))
    packet._data = data  # type: ignore[attr-defined]
    return packet


class Frames:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int]] = []
        self.layers: list[TemporalLayer | None] = []
        self.discontinuities = 0

    def on_frame(self, data: bytes, ts: int, layer: TemporalLayer | None) -> None:
        self.frames.append((data, ts))
        self.layers.append(layer)

    def on_discontinuity(self) -> None:
        self.discontinuities += 1


def buffer(sink: Frames) -> MarkerJitterBuffer:
    return MarkerJitterBuffer(64, sink.on_frame, sink.on_discontinuity)


def test_frame_is_released_on_its_marker_bit_without_waiting_for_the_next_frame() -> None:
    sink = Frames()
    jb = buffer(sink)
    jb.add(rtp(100, 9000, False, b"a"))
    assert sink.frames == []
    jb.add(rtp(101, 9000, True, b"b"))
    assert sink.frames == [(b"ab", 0)]


def test_vp8_frames_carry_the_temporal_layer_of_their_first_packet() -> None:
    sink = Frames()
    jb = MarkerJitterBuffer(64, sink.on_frame, sink.on_discontinuity, "VP8")
    for seq, (tid, sync) in enumerate([(0, True), (2, False), (1, True)]):
        packet = rtp(seq, 3000 * seq, True, b"f")
        descriptor = VpxPayloadDescriptor(1, 0, picture_id=seq, tl0picidx=5, tid=(tid, sync))
        packet.payload = bytes(descriptor) + b"f"
        jb.add(packet)
    plain = rtp(3, 9000, True)
    plain.payload = bytes(VpxPayloadDescriptor(1, 0, picture_id=3)) + b"x"
    jb.add(plain)
    assert sink.layers == [
        TemporalLayer(0, True),
        TemporalLayer(2, False),
        TemporalLayer(1, True),
        None,  # a descriptor without TID
    ]
    assert sink.frames[-1] == (b"x", 9000)
    h264 = Frames()
    jb = MarkerJitterBuffer(64, h264.on_frame, h264.on_discontinuity, "H264")
    jb.add(packet)
    assert h264.layers == [None], "only VP8 payloads are read"


def test_timestamps_are_rebased_to_zero_at_the_first_frame() -> None:
    sink = Frames()
    jb = buffer(sink)
    jb.add(rtp(1, 90000, True))
    jb.add(rtp(2, 93000, True))
    assert [ts for _, ts in sink.frames] == [0, 3000]


def test_retransmission_filling_a_gap_releases_every_frame_waiting_behind_it() -> None:
    sink = Frames()
    jb = buffer(sink)
    jb.add(rtp(10, 0, True, b"f0"))
    # 11 lost; frames 2 and 3 complete behind the gap
    jb.add(rtp(12, 3000, True, b"f1b"))
    jb.add(rtp(13, 6000, True, b"f2"))
    assert len(sink.frames) == 1
    jb.add(rtp(11, 3000, False, b"f1a"))  # the retransmission
    assert [d for d, _ in sink.frames] == [b"f0", b"f1af1b", b"f2"]


class AlwaysSearching(MarkerJitterBuffer):
    """The buffer as it was: every packet goes through aiortc's ``add`` (no newest packet is
    known, so none takes the short way), and it looks for complete frames after every one."""

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self._head = None
        super().add(packet)
        self._release()
        return False, None


def arrivals(seed: int, count: int = 3000) -> list[RtpPacket]:
    """Frames of 1 to 40 packets (sequence numbers wrapping), arriving with losses (single and
    in bursts) that are retransmitted late, reorderings, duplicates, markers lost, and jumps far
    back and ahead."""
    rng = random.Random(seed)
    sent: list[RtpPacket] = []
    seq, ts = 65_000, 0
    while len(sent) < count:
        size = rng.choice((1, 2, 5, 6, 7, 40))
        for i in range(size):
            marker = i == size - 1 and rng.random() > 0.02
            sent.append(rtp(seq & 0xFFFF, ts, marker, bytes([len(sent) % 256])))
            seq += 1
        ts += 3000
        if rng.random() < 0.005:
            seq += rng.choice((-400, 700))  # a publisher restart, a burst lost beyond the buffer
    arrived: list[RtpPacket] = []
    late: list[tuple[int, RtpPacket]] = []
    burst: tuple[int, int] = (0, 0)  # (packets still to lose, when they come back)
    for index, packet in enumerate(sent):
        roll = rng.random()
        if not burst[0] and roll < 0.01:
            burst = (rng.randint(2, 4), index + rng.randint(5, 40))
        if burst[0]:  # a burst lost, retransmitted later in one go, in order
            late.append((burst[1], packet))
            burst = (burst[0] - 1, burst[1])
        elif roll < 0.03:
            late.append((index + rng.randint(1, 60), packet))  # lost, then retransmitted
        elif roll < 0.05 and arrived:
            arrived.insert(len(arrived) - 1, packet)  # overtakes the one before
        else:
            arrived.append(packet)
            if roll > 0.99:
                arrived.append(packet)  # a duplicate
        arrived.extend(p for at, p in late if at == index)
    return arrived


@pytest.mark.parametrize("seed", range(6))
def test_frames_leave_as_when_every_packet_searched_for_them(seed: int) -> None:
    """Storing the next packet after the newest without aiortc's ``add``, and searching for
    complete frames only after a packet that may complete one (a marker, a new timestamp,
    anything but the next packet after the newest), changes nothing."""
    ours, searching = Frames(), Frames()
    jb = buffer(ours)
    reference = AlwaysSearching(64, searching.on_frame, searching.on_discontinuity)
    for packet in arrivals(seed):
        jb.add(packet)
        reference.add(packet)
        assert ours.frames == searching.frames  # at the same packet, not later
    assert ours.discontinuities == searching.discontinuities > 0
    assert len(ours.frames) > 150


def test_frame_without_marker_bit_is_released_when_the_next_timestamp_starts() -> None:
    sink = Frames()
    jb = buffer(sink)
    jb.add(rtp(1, 0, False, b"a"))
    jb.add(rtp(2, 3000, False, b"b"))
    assert sink.frames == [(b"a", 0)]


def test_late_packet_of_an_already_released_frame_is_ignored() -> None:
    sink = Frames()
    jb = buffer(sink)
    jb.add(rtp(1, 0, True))
    jb.add(rtp(2, 3000, True))
    jb.add(rtp(1, 0, True))
    assert len(sink.frames) == 2


class OrderedSink(Frames):
    """Records frames and discontinuities in one sequence, to check which came first."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def on_frame(self, data: bytes, ts: int, layer: TemporalLayer | None) -> None:
        super().on_frame(data, ts, layer)
        self.events.append("frame")

    def on_discontinuity(self) -> None:
        super().on_discontinuity()
        self.events.append("discontinuity")


def test_overflow_reports_the_discontinuity_before_releasing_the_frames_after_the_gap() -> None:
    sink = OrderedSink()
    jb = buffer(sink)
    jb.add(rtp(0, 0, True))
    # packet 1 never arrives; complete frames pile up behind it until the buffer overflows
    for seq in range(2, 2 + 70):
        pli, _ = jb.add(rtp(seq, seq * 3000, True))
        assert not pli  # keyframe requests go through the Producer's rate limit instead
    assert sink.discontinuities == 1
    assert sink.events[:2] == ["frame", "discontinuity"]  # frame 0, then the drop, then more
    assert len(sink.frames) > 2


def test_audio_packets_pass_straight_through_and_stale_ones_are_dropped() -> None:
    sink = Frames()
    ab = AudioPassthroughBuffer(sink.on_frame)
    ab.add(rtp(5, 960, True, b"a"))
    ab.add(rtp(7, 2880, False, b"c"))
    ab.add(rtp(6, 1920, False, b"b"))  # late: its slot already passed
    ab.add(rtp(7, 2880, False, b"c"))  # duplicate
    assert sink.frames == [(b"a", 0), (b"c", 1920)]


async def test_starting_a_closed_ice_transport_is_quiet() -> None:
    """aiortc starts a bundled ICE transport once per transceiver; the relay may have closed the
    peer (ICE failed) between two of those starts."""
    gatherer = RTCIceGatherer()
    transport = RTCIceTransport(gatherer)
    await transport.stop()
    assert transport.state == "closed"
    await transport.start(RTCIceParameters(usernameFragment="u" * 4, password="p" * 22))
    assert transport.state == "closed"
