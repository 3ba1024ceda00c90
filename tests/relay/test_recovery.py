"""Loss recovery on the relay's receive side (relay.recovery), driven tick by tick."""

from __future__ import annotations

import asyncio
import dataclasses

from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket

from relay.forwarding import MarkerJitterBuffer
from relay.recovery import PARK_REFILL_S, PROFILES, RENACK_BURST_PACKETS, LossRecovery, Tuning
from tests.peers import wait_until
from tests.relay.test_forwarding import Frames, buffer, rtp

TUNING = Tuning(renack_interval_s=0.05, give_up_s=0.25, drop_stale=True, discount_lag=True)
TICK = LossRecovery.TICK_S


class FakeReceiver:
    """Stands in for RTCRtpReceiver's private NACK state and RTCP output."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__nack_generator = NackGenerator()
        self.nacks: list[list[int]] = []

    async def _send_rtcp_nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.nacks.append(lost)


def received(receiver: FakeReceiver, jb: MarkerJitterBuffer, packet: RtpPacket) -> None:
    """What aiortc's receiver does per packet: NACK bookkeeping, then the jitter buffer."""
    receiver._RTCRtpReceiver__nack_generator.add(packet)
    jb.add(packet)


def setup(tuning: Tuning = TUNING) -> tuple[Frames, FakeReceiver, MarkerJitterBuffer, LossRecovery]:
    sink, fake = Frames(), FakeReceiver()
    jb = buffer(sink)
    recovery = LossRecovery(fake, jb, tuning)  # type: ignore[arg-type]
    recovery.close()  # driven by hand below, not by its timer
    return sink, fake, jb, recovery


async def run(recovery: LossRecovery, start: float, seconds: float) -> float:
    """Tick every TICK_S from ``start`` for ``seconds`` (a responsive loop); returns the end."""
    t = start
    for _ in range(round(seconds / TICK)):
        await recovery.tick(t)
        t += TICK
    return t


async def test_with_nothing_missing_it_does_not_tick_and_a_gap_wakes_it() -> None:
    fake = FakeReceiver()
    jb = buffer(Frames())
    tuning = dataclasses.replace(TUNING, renack_share=0.25)
    recovery = LossRecovery(fake, jb, tuning)  # on its own timer
    ticks: list[float] = []
    tick = recovery.tick

    async def counted(wall: float) -> None:
        ticks.append(wall)
        await tick(wall)

    recovery.tick = counted  # type: ignore[method-assign]
    try:
        received(fake, jb, rtp(1, 0, True))
        await asyncio.sleep(0.2)
        assert ticks == []
        received(fake, jb, rtp(3, 6000, True))  # 2 lost: aiortc NACKs it, the loop wakes
        assert await wait_until(lambda: fake.nacks[:1] == [[2]], timeout=1)  # re-NACK at 50 ms
        received(fake, jb, rtp(2, 3000, True))
        await asyncio.sleep(0.1)
        parked = len(ticks)
        await asyncio.sleep(0.2)
        assert len(ticks) == parked
        assert 2 < parked < 15

        # parked for longer than PARK_REFILL_S: a spent re-NACK budget comes back full
        recovery._budget = 0.0
        await asyncio.sleep(PARK_REFILL_S + 0.1 - 0.3)
        received(fake, jb, rtp(5, 12000, True))  # 4 lost
        assert await wait_until(lambda: len(ticks) > parked, timeout=1)
        assert recovery._budget > 0.25 * RENACK_BURST_PACKETS - 5  # a re-NACK may have gone
    finally:
        recovery.close()


async def test_a_lost_packet_is_nacked_again_until_it_arrives() -> None:
    sink, fake, jb, recovery = setup()
    received(fake, jb, rtp(1, 0, True))
    received(fake, jb, rtp(3, 6000, True))  # 2 lost (aiortc NACKs it once)
    t = await run(recovery, 100.0, 0.16)  # re-NACKed every 50 ms, on 20 ms ticks: at 60, 120
    assert fake.nacks == [[2], [2]]
    received(fake, jb, rtp(2, 3000, True))
    await run(recovery, t, 0.2)
    assert fake.nacks == [[2], [2]]
    assert [ts for _, ts in sink.frames] == [0, 3000, 6000]


async def test_an_unrecoverable_packet_is_skipped_and_viewers_resync_at_a_keyframe() -> None:
    sink, fake, jb, recovery = setup()
    received(fake, jb, rtp(1, 0, True, b"f0"))
    received(fake, jb, rtp(2, 3000, False, b"f1a"))
    # 3 (end of frame 1) lost for good; frames 2 and 3 arrive complete
    received(fake, jb, rtp(4, 6000, True, b"f2"))
    received(fake, jb, rtp(5, 9000, True, b"f3"))
    t = await run(recovery, 50.0, 0.2)
    assert [d for d, _ in sink.frames] == [b"f0"] and recovery.skipped == 0
    await run(recovery, t, 0.1)
    assert recovery.skipped == 1 and sink.discontinuities == 1
    assert [d for d, _ in sink.frames] == [b"f0", b"f2", b"f3"]  # the damaged frame 1 is gone
    assert not fake._RTCRtpReceiver__nack_generator.missing


async def test_a_loss_right_after_a_skipped_frame_is_still_repaired() -> None:
    sink, fake, jb, recovery = setup()
    received(fake, jb, rtp(1, 0, False, b"a"))
    received(fake, jb, rtp(3, 0, True, b"c"))  # 2 lost: frame 0 is damaged
    received(fake, jb, rtp(5, 3000, True, b"e"))  # 4 lost: the new origin after the skip
    t = 10.0
    while recovery.skipped == 0 and t < 11.0:
        await recovery.tick(t)
        t += TICK
    assert jb.origin() == 4  # gave up on 2: frame 0 dropped, origin moved to 4
    assert 4 in fake._RTCRtpReceiver__nack_generator.missing
    await recovery.tick(t)  # 4 has been missing as long: given up too, not forgotten
    assert recovery.skipped == 2
    received(fake, jb, rtp(6, 6000, True, b"f"))
    assert [d for d, _ in sink.frames] == [b"f"]  # no stall behind the forgotten packet


async def test_time_the_event_loop_was_blocked_does_not_count_towards_giving_up() -> None:
    sink, fake, jb, recovery = setup()
    received(fake, jb, rtp(1, 0, True, b"f0"))
    received(fake, jb, rtp(3, 6000, True, b"f2"))  # 2 lost
    await recovery.tick(20.0)
    await recovery.tick(20.6)  # the loop was stuck for 0.6 s: the retransmission may be queued
    assert recovery.skipped == 0
    received(fake, jb, rtp(2, 3000, True, b"f1"))  # ... and it was
    await run(recovery, 20.62, 0.5)
    assert recovery.skipped == 0 and sink.discontinuities == 0
    assert [d for d, _ in sink.frames] == [b"f0", b"f1", b"f2"]


async def test_the_legacy_profile_counts_wall_time() -> None:
    _, fake, jb, recovery = setup(PROFILES["legacy"])
    received(fake, jb, rtp(1, 0, True))
    received(fake, jb, rtp(3, 6000, True))
    await recovery.tick(20.0)
    await recovery.tick(20.6)
    assert recovery.skipped == 1


def test_a_late_duplicate_far_behind_does_not_reset_the_buffer() -> None:
    """aiortc treats a packet >100 behind its origin as a restart and waits for 512 packets."""
    sink = Frames()
    jb = buffer(sink)
    for seq in range(1000, 1200):
        jb.add(rtp(seq, seq * 3000, True))
    jb.add(rtp(1010, 1010 * 3000, True))  # a retransmitted copy, 190 behind
    for seq in range(1200, 1205):
        jb.add(rtp(seq, seq * 3000, True))
    assert len(sink.frames) == 205 and sink.discontinuities == 0


async def test_re_nacks_stay_within_their_share_of_the_packets_sent() -> None:
    """A full uplink loses most packets: re-NACKs are held to a share of what the source sent
    (each is a retransmission on that same link); a single loss is re-NACKed as before."""
    tuning = Tuning(0.04, 10.0, drop_stale=True, discount_lag=True, renack_share=0.25)
    _, fake, jb, recovery = setup(tuning)
    t, seq = 100.0, 1
    for n in range(150):  # 1 packet of 5 arrives, 30 frames a second, for 5 s
        received(fake, jb, rtp(seq, n * 3000, True))
        seq += 5
        t = await run(recovery, t, 1 / 30)
    renacked = sum(len(n) for n in fake.nacks)
    allowed = 0.25 * (seq + RENACK_BURST_PACKETS)  # the share, and a fresh stream's allowance
    assert 0.8 * allowed < renacked <= allowed, f"{renacked} re-NACKs for {seq} packets sent"

    nacks = []
    for share in (0.25, None):  # a single loss: re-NACKed as often as without a limit
        _, fake, jb, recovery = setup(dataclasses.replace(tuning, renack_share=share))
        for n in range(40):
            received(fake, jb, rtp(n + 1 + (n >= 20), n * 3000, True))  # packet 21 lost
        await run(recovery, 100.0, 0.3)
        nacks.append(fake.nacks)
    assert nacks[0] == nacks[1] and len(nacks[0]) >= 4
