"""The automatic quality policy: which quality one viewer should get, from that viewer's feedback.

Pure (no aiortc, no clock of its own): fed time-stamped ``Sample``\\ s (``relay.feedback`` makes
them from the viewer's RTCP), it answers the wanted quality. ``relay.selector`` acts on it.

Levels are ordered best first (the original, then the rungs), each with the bitrate it needs;
the original's is measured (the clinic's stream varies), the rungs' are their encoders' targets.

Down fast, up carefully:

* **Down** when the viewer's link says the current quality does not fit: REMB below what it
  needs for ~1 s (at once when far below), or loss above ~10 % over ~2 s (at once when severe),
  or the RTT rising sharply (a queue building on the path). Down goes straight to the highest
  quality the estimate fits, not one step at a time: a freeze costs more than a softer picture.
* **Up** needs a trial: a receiver's REMB never exceeds ~1.5× what it receives, so the feedback
  of a 250 kbit/s stream cannot tell whether 700 kbit/s would fit. After a hold with low loss the
  next quality up is tried; if loss, RTT or a falling REMB says it does not fit within the probe
  window, the viewer goes back and the hold doubles (up to a minute): a link that cannot carry
  the next quality is tried less and less often, never oscillating.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Q = TypeVar("Q")

NEED_MARGIN = 0.8
"""REMB below 0.8× a quality's bitrate means it does not fit: a receiver that merely saw a short
over-use cuts its estimate to 0.85× what it receives (GCC), which stays above this."""
SEVERE_MARGIN = 0.5
"REMB below half of what the quality needs: no confirmation needed, down at once."
REMB_DOWN_S = 1.0
"How long a (not rising) REMB must stay below the need before going down."
REMB_WARMUP_S = 2.0
"""A new viewer's first estimates describe its first second of media, not its link (aiortc's
start from what it received, a browser's GCC ramps up from ~300 kbit/s): REMB is not held
against the quality it starts on for 2 s (loss and RTT are). Known from the first sample on
(``Producer.bitrate``), the original's rate moved viewers on loopback down on these."""
FILL = 0.85
"""A quality fits an estimate when its bitrate is at most 0.85× of it: room for audio (Opus
~40–100 kbit/s), RTP/SRTP overhead and retransmissions."""
LOSS_WINDOW_S = 2.0
LOSS_DOWN = 0.10
"""Mean loss over ``LOSS_WINDOW_S`` (two receiver reports) above 10 %: the link is overfull. NACK
and retransmission repair a few per cent; beyond that the picture freezes waiting for them."""
LOSS_SEVERE = 0.30
"One report losing 30 %: the link carries far less than is sent, down at once."
LOSS_CLEAN = 0.02
"Mean loss below 2 % since the last change: the current quality fits, an up trial may follow."
PROBE_LOSS = 0.05
"During a trial, 5 % mean loss already fails it: the trial must not cost the viewer a freeze."
RTT_RISE_S = 0.15
"""The RTT is rising sharply when two reports in a row read at least 150 ms and twice over the
least RTT seen: a drop-tail queue filling on the path, before it starts losing."""
RTT_MEMORY_S = 30.0
"The least RTT is taken over this long (the path's base delay; routes change slowly)."
SETTLE_S = 1.0
"""Reports in the first second after a change describe the rate before it (one RR interval, and a
queue still draining): their loss and RTT are not held against the new quality."""
HOLD_S = 10.0
"First wait at a lower quality, with low loss, before trying the next one up."
HOLD_MAX_S = 60.0
"A failed trial doubles the wait, up to a minute."
PROBE_S = 4.0
"""A trial lasts 4 s: several receiver reports, and long enough for a drop-tail queue of a link
that cannot carry the new rate to fill and lose (a 350 kbit/s link with a 100 ms queue overflows
within a second of receiving 700 kbit/s)."""


@dataclass(frozen=True)
class Sample:
    """What one RTCP packet from the viewer said (None: it said nothing about that)."""

    at: float
    "Monotonic seconds."
    remb_bps: int | None = None
    loss: float | None = None
    "Fraction of packets lost since the previous report (RR fraction lost, or NACKed share)."
    rtt_s: float | None = None


@dataclass
class Level(Generic[Q]):
    quality: Q
    bps: float | None
    "What the quality needs; None while unknown (the original before it was measured)."


class QualityPolicy(Generic[Q]):
    """One viewer's policy. ``update()`` with every sample; ``current`` is what it wants now."""

    def __init__(self, levels: Sequence[tuple[Q, float | None]], now: float) -> None:
        self.levels = [Level(q, bps) for q, bps in levels]
        self._index = 0
        self._since = now
        self._hold_s = HOLD_S
        self._probe: tuple[int, float, int | None] | None = None
        "A trial in progress: (index it came from, when it ends, REMB when it began)."
        self._remb: deque[tuple[float, int]] = deque(maxlen=8)
        self._low_since: float | None = None
        self._losses: deque[tuple[float, float]] = deque()
        self._rtts: deque[tuple[float, float]] = deque()
        self._rtt_high = 0
        self._remb_from = now + REMB_WARMUP_S
        self.reason = "start"

    @property
    def current(self) -> Q:
        return self.levels[self._index].quality

    @property
    def hold_s(self) -> float:
        return self._hold_s

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def set_bitrate(self, quality: Q, bps: float | None) -> None:
        for level in self.levels:
            if level.quality == quality:
                level.bps = bps

    def adopt(self, quality: Q, now: float, reason: str) -> None:
        """Someone else moved the viewer: take it as this policy's own move (a hold follows)."""
        self._probe = None
        self._move(next(i for i, level in enumerate(self.levels) if level.quality == quality), now)
        self.reason = reason

    def update(self, sample: Sample) -> Q:
        """Take one sample in; answer the wanted quality (changes are effective at once)."""
        self._record(sample)
        now = sample.at
        trigger = self._congested(now)
        if trigger is not None:
            self._down(now, trigger)
        elif self._probe is not None and now >= self._probe[1]:
            self._probe = None  # the trial held: stay
            self.reason = "probe held"
        elif self._probe is None and self._may_try_up(now):
            self._up(now)
        return self.current

    # -- signals -----------------------------------------------------------------------------

    def _record(self, sample: Sample) -> None:
        now = sample.at
        if sample.remb_bps is not None:
            previous = self._remb[-1][1] if self._remb else None
            self._remb.append((now, sample.remb_bps))
            need = self._need(self._index)
            falling = previous is None or sample.remb_bps <= previous
            low = need is not None and sample.remb_bps < need * NEED_MARGIN
            if low and falling and now >= self._remb_from:
                self._low_since = self._low_since if self._low_since is not None else now
            else:
                self._low_since = None
        if sample.loss is not None:
            self._losses.append((now, sample.loss))
        while self._losses and self._losses[0][0] < now - max(LOSS_WINDOW_S, HOLD_MAX_S):
            self._losses.popleft()
        if sample.rtt_s is not None:
            base = min((r for _, r in self._rtts), default=sample.rtt_s)
            high = sample.rtt_s >= max(RTT_RISE_S, 2 * base) and now >= self._since + SETTLE_S
            self._rtt_high = self._rtt_high + 1 if high else 0
            self._rtts.append((now, sample.rtt_s))
            while self._rtts[0][0] < now - RTT_MEMORY_S:
                self._rtts.popleft()

    def _need(self, index: int) -> float | None:
        return self.levels[index].bps

    def _mean_loss(self, since: float) -> tuple[float, int]:
        window = [loss for at, loss in self._losses if at > since]
        return (sum(window) / len(window), len(window)) if window else (0.0, 0)

    def _congested(self, now: float) -> str | None:
        """Why the current quality does not fit, or None."""
        if self._index == len(self.levels) - 1:
            return None  # nothing lower to go to
        fresh = max(self._since + SETTLE_S, now - LOSS_WINDOW_S)
        loss, reports = self._mean_loss(fresh)
        latest = self._losses[-1][1] if self._losses and self._losses[-1][0] > fresh else 0.0
        if latest >= LOSS_SEVERE or (reports >= 2 and loss > LOSS_DOWN):
            return "loss"
        if self._probe is not None and reports >= 1 and loss > PROBE_LOSS:
            return "loss"
        if self._rtt_high >= 2:
            return "rtt"
        need = self._need(self._index)
        if self._remb and self._low_since is not None and need is not None:
            remb = self._remb[-1][1]
            if remb < need * SEVERE_MARGIN or now - self._low_since >= REMB_DOWN_S:
                return "remb"
        if self._probe is not None and self._probe[2] is not None and self._remb:
            if self._remb[-1][1] < self._probe[2] * FILL:
                return "remb"  # the receiver cut its estimate below where the trial began
        return None

    # -- moves -------------------------------------------------------------------------------

    def _down(self, now: float, reason: str) -> None:
        if self._probe is not None:
            target = self._probe[0]  # the trial failed: back where it came from, wait longer
            self._hold_s = min(self._hold_s * 2, HOLD_MAX_S)
        else:
            target = self._fitting(self._estimate(now))
        self._move(target, now)
        self.reason = reason

    def _estimate(self, now: float) -> float | None:
        """What the link carries: the receiver's REMB, or what arrives of the current rate."""
        estimates: list[float] = []
        if self._remb and self._remb[-1][0] >= now - 2 * LOSS_WINDOW_S:
            estimates.append(self._remb[-1][1])
        need = self._need(self._index)
        if need is not None and self._losses and self._losses[-1][0] > self._since:
            estimates.append(need * (1 - self._losses[-1][1]))  # the latest report: what arrives
        return min(estimates) if estimates else None

    def _fitting(self, estimate: float | None) -> int:
        """The best level below the current one, and cheaper, whose bitrate fits ``estimate``;
        the cheapest one if none fits; the first cheaper one without an estimate. (A rung can
        cost more than a clinic sending little: moving to it would only make things worse.)"""
        current = self._need(self._index)
        cheaper = [
            index
            for index in range(self._index + 1, len(self.levels))
            if current is None or (self._need(index) or 0.0) < current
        ]
        if not cheaper:
            return self._index
        if estimate is not None:
            for index in cheaper:
                bps = self._need(index)
                if bps is not None and bps <= estimate * FILL:
                    return index
            return min(cheaper, key=lambda index: self._need(index) or 0.0)
        return cheaper[0]

    def _may_try_up(self, now: float) -> bool:
        if self._index == 0 or now - self._since < self._hold_s:
            return False
        loss, _ = self._mean_loss(now - self._hold_s)
        return loss < LOSS_CLEAN and self._rtt_high == 0

    def _up(self, now: float) -> None:
        came_from = self._index
        target = self._index - 1
        while target > 0 and self._no_dearer(target - 1, target):
            target -= 1  # a better level that costs no more: try that one instead
        remb = self._remb[-1][1] if self._remb else None
        self._move(target, now)
        self._probe = (came_from, now + PROBE_S, remb)
        self.reason = "probe"

    def _no_dearer(self, better: int, worse: int) -> bool:
        a, b = self._need(better), self._need(worse)
        return a is not None and b is not None and a <= b

    def _move(self, index: int, now: float) -> None:
        self._index = max(0, min(index, len(self.levels) - 1))
        self._since = now
        self._low_since = None
        self._rtt_high = 0
        if self._probe is not None and index == self._probe[0]:
            self._probe = None
