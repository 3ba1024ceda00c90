"""Loss recovery on the relay's receive side: what aiortc 1.16 leaves broken after a packet loss.

aiortc NACKs a lost packet once, when it notices the gap; if the NACK or the retransmission is
lost too, its jitter buffer waits for 512 packets (seconds of frozen video) before giving up.
``LossRecovery`` runs beside each video receiver the relay taps (``relay.forwarding``) and
repairs that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

logger = logging.getLogger(__name__)


class SkippableBuffer(Protocol):
    """What LossRecovery needs of the jitter buffer (``relay.forwarding.MarkerJitterBuffer``)."""

    ssrc: int | None

    def origin(self) -> int | None: ...

    def skip_past(self, sequence_number: int) -> None: ...


STALE_WINDOW = 1000
"""Packets at most this far behind the buffer's origin are late duplicates, not a new stream."""


RENACK_BURST_PACKETS = 300
"""The re-NACK budget keeps at most the share of this many packets (about a second of 720p)."""

PARK_REFILL_S = 1.0
"""A LossRecovery parked this long (nothing missing) comes back with a full re-NACK budget."""


@dataclass(frozen=True)
class Tuning:
    renack_interval_s: float
    "A packet still missing this long after its last NACK is NACKed again."
    give_up_s: float
    "A packet missing this long is given up: its frame is dropped, a keyframe requested."
    drop_stale: bool
    "Drop packets behind the jitter buffer's origin (``is_stale``)."
    discount_lag: bool
    "Time the event loop was blocked does not count towards ``give_up_s``."
    history: int = 128
    "Packets a sender keeps for retransmission, and a receiver keeps NACKing (aiortc: 128)."
    rearm_keyframe_requests: bool = False
    "A keyframe arriving lets the next keyframe request go at once (``Producer``)."
    renack_share: float | None = None
    """Re-NACKs at most this share of the packets the source sent (None: no limit). Every NACK
    is a retransmission on the clinic's uplink: where loss comes from a full link, re-NACKing
    every loss every 40 ms sends several copies of each lost packet into the same full queue,
    which lose more packets, which are NACKed again — measured on a 400 kbit/s uplink: 8
    retransmissions per media packet, no frame through for seconds. Random loss at a few
    percent needs far less than the share."""


PROFILES = {
    "tuned": Tuning(
        renack_interval_s=0.04,
        give_up_s=0.45,
        drop_stale=True,
        discount_lag=True,
        history=512,
        rearm_keyframe_requests=True,
        renack_share=0.25,
    ),
    "legacy": Tuning(renack_interval_s=0.05, give_up_s=0.25, drop_stale=False, discount_lag=False),
}
"""Why ``tuned`` (measured with ``bench.impairment``, 150 ms RTT per hop, docs/benchmarks.md):

* a give-up costs a keyframe round trip through both hops (~0.5 s on top of ``give_up_s``), so
  it must almost never happen at moderate loss: 450 ms leaves room for ~7 NACKs whose
  retransmissions can still arrive at 150 ms RTT, against 2–3 before (P(all lost) at 3 % loss
  on both NACK and retransmission: ~0.06⁷ instead of ~0.06²·⁵); re-NACKing every 40 ms costs
  ~4 retransmissions per lost packet (+13 % packets at 3 % loss);
* ``history``: aiortc forgets a missing packet once 128 newer ones arrived, and its sender keeps
  128 packets: a keyframe (~50 packets at 720p) plus the frames a stall released in one burst
  exceed that within one RTT, and a packet nobody NACKs any more stalls the buffer until it
  overflows (512 packets, seconds). 512 = the video jitter buffer's capacity.
* ``rearm_keyframe_requests``: after a give-up the keyframe request must not wait behind the
  0.5 s request limit when the previous request was already answered.

``legacy``: the behaviour before issue 15, so ``bench.impairment`` can compare in one run.
"""

_current = PROFILES["tuned"]


def current() -> Tuning:
    return _current


def use(profile: str) -> None:
    """Benchmarks only (``bench.serve``, ``bench.loadgen``): switch every later receiver."""
    global _current
    _current = PROFILES[profile]
    _set_history(_current.history)


def _set_history(size: int) -> None:
    """aiortc reads ``RTP_HISTORY_SIZE`` as a module global, in its NACK generator (how far back
    a missing packet is still NACKed) and in its sender (how far back it can retransmit)."""
    aiortc.rtcrtpreceiver.RTP_HISTORY_SIZE = size  # type: ignore[attr-defined]
    aiortc.rtcrtpsender.RTP_HISTORY_SIZE = size  # type: ignore[attr-defined]


_set_history(_current.history)


def is_stale(origin: int | None, sequence_number: int) -> bool:
    """A packet the jitter buffer has already moved past: drop it.

    Why: every re-NACK makes the sender retransmit, so copies of a packet keep arriving up to
    an RTT after the first one filled the gap. aiortc's buffer ignores a packet up to 100 behind
    its origin, but treats one further behind as a sender restart: it empties itself and moves
    its origin *back* to that old packet, then waits for the packets after it — which all
    arrived long ago, so nobody NACKs them — until 512 packets overflow it: seconds of frozen
    video (measured at 3 % loss, 150 ms RTT, a 20-frame burst after a stall).
    """
    if origin is None or not _current.drop_stale:
        return False
    return 0 < uint16_add(origin, -sequence_number) <= STALE_WINDOW


class LossRecovery:
    """Every missing packet is NACKed again every ``renack_interval_s``, and a packet still
    missing after ``give_up_s`` is skipped: its frame is dropped and a keyframe requested, so a
    loss costs at most about give_up + one RTT of freeze.

    With nothing missing it does not tick: it waits for aiortc's NACK generator to find a gap
    (its ``add`` returns True), then ticks from that packet on until every loss is repaired or
    given up — a consultation's video receiver otherwise woke the event loop 50 times a second
    for nothing.

    Ages are kept on a clock that only advances while the event loop is responsive: after the
    loop was blocked (a CPU-starved host, a long callback), the retransmissions that arrived
    meanwhile are still queued in the socket, and asyncio reads one datagram per loop
    iteration, so a deadline checked on the wall clock gives up on packets that are already
    here (measured: most give-ups of a probe viewer on a busy 2-core machine).
    """

    TICK_S = 0.02

    def __init__(
        self, receiver: RTCRtpReceiver, buffer: SkippableBuffer, tuning: Tuning | None = None
    ) -> None:
        self._receiver = receiver
        self._buffer = buffer
        self._nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        self.tuning = tuning or _current
        self._missing_since: dict[int, float] = {}
        self._nacked_at: dict[int, float] = {}
        self._last_tick: float | None = None
        self._clock = 0.0
        self.renacks = 0
        self.skipped = 0
        self._budget = self._full_budget  # a fresh stream
        self._max_seq: int | None = None
        self._gap = asyncio.Event()
        self._nack.add = self._noticing(self._nack.add)
        self._task = asyncio.ensure_future(self._run())

    def _noticing(self, add: Callable[[RtpPacket], bool]) -> Callable[[RtpPacket], bool]:
        """aiortc's ``NackGenerator.add``, which also wakes the parked loop on a new gap."""

        def add_and_wake(packet: RtpPacket) -> bool:
            missed = add(packet)
            if missed:
                self._gap.set()
            return missed

        return add_and_wake

    @property
    def _full_budget(self) -> float:
        """The re-NACK budget of a fresh stream, and the most ``_allowed`` keeps."""
        return (self.tuning.renack_share or 0.0) * RENACK_BURST_PACKETS

    async def _run(self) -> None:
        while True:
            if not self._nack.missing and not self._missing_since:
                await self._park()
            await self.tick(time.monotonic())
            await asyncio.sleep(self.TICK_S)

    async def _park(self) -> None:
        """Wait for a gap. The time parked is not time a packet was missing. The re-NACK budget
        is what ticking would have left: after a short park ``_allowed`` accrues what was sent
        meanwhile; after a long one (sequence numbers may have wrapped) it is full."""
        self._gap.clear()
        parked = time.monotonic()
        await self._gap.wait()
        self._last_tick = None
        if time.monotonic() - parked >= PARK_REFILL_S:
            self._max_seq = None
            self._budget = self._full_budget

    def _advance(self, now: float) -> float:
        elapsed = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        if self.tuning.discount_lag:
            elapsed = min(elapsed, 2 * self.TICK_S)
        self._clock += elapsed
        return self._clock

    async def tick(self, wall: float) -> None:
        now = self._advance(wall)
        missing: set[int] = self._nack.missing
        for seq in list(self._missing_since):
            if seq not in missing:
                del self._missing_since[seq]
                self._nacked_at.pop(seq, None)
        if not missing:
            return
        for seq in missing:
            # aiortc sent the first NACK when it noticed the gap
            self._missing_since.setdefault(seq, now)
            self._nacked_at.setdefault(seq, now)
        origin = self._buffer.origin()
        oldest = min(missing, key=lambda seq: uint16_add(seq, -(origin or 0)))
        if now - self._missing_since[oldest] >= self.tuning.give_up_s:
            self._give_up(oldest, now - self._missing_since[oldest])
            return
        interval = self.tuning.renack_interval_s
        due = sorted(s for s in missing if now - self._nacked_at[s] >= interval)
        due = due[: self._allowed(len(due))]
        if due and self._buffer.ssrc is not None:
            for seq in due:
                self._nacked_at[seq] = now
            self.renacks += len(due)
            await self._receiver._send_rtcp_nack(self._buffer.ssrc, due)

    def _allowed(self, wanted: int) -> int:
        """How many of ``wanted`` re-NACKs the budget allows now (``Tuning.renack_share`` of
        the packets sent since the last tick, at most a second's worth kept)."""
        share, highest = self.tuning.renack_share, self._nack.max_seq
        if share is None:
            return wanted
        if highest is not None and self._max_seq is not None:
            sent = uint16_add(highest, -self._max_seq)
            if sent < STALE_WINDOW:
                self._budget = min(self._budget + share * sent, self._full_budget)
        self._max_seq = highest
        allowed = min(wanted, int(self._budget))
        self._budget -= allowed
        return allowed

    def _give_up(self, seq: int, age: float) -> None:
        self.skipped += 1
        logger.info(
            "LossRecovery: packet %d missing for %.0f ms, skipping to the next keyframe",
            seq, age * 1000,
        )  # fmt: skip
        self._buffer.skip_past(seq)
        origin = self._buffer.origin()
        if origin is None:
            return
        # forget every loss the buffer has now moved past (strictly before the new origin: a
        # missing origin is still a loss to repair)
        for stale in [s for s in self._nack.missing if 0 < uint16_add(origin, -s) < 0x8000]:
            self._nack.missing.discard(stale)

    def close(self) -> None:
        self._task.cancel()
