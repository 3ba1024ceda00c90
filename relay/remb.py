"""The bandwidth estimate a publisher gets back as REMB: aiortc's estimator, the same numbers for
a fraction of the work (aiortc 1.16.0 seam).

aiortc's ``RemoteBitrateEstimator`` (webrtc.org's abs-send-time estimator, ported to Python)
runs for every video packet a publisher sends, and two of its parts cost more than the estimate
is worth: the incoming bitrate is counted in one-millisecond buckets that are erased one Python
iteration per millisecond of wall time (a thousand a second per publisher, whatever its packet
rate), and the smallest recent frame period is found with a Python loop over 60 values per
packet group. With the per-packet grouping, a tenth of the samples in a py-spy profile of one
consultation.

``RembEstimator`` is aiortc's estimator with those three parts replaced: the window holds the
packets in it (each is added and erased once), the minimum is the builtin ``min``, and the
grouping is one function. The Kalman filter, the over-use detector and the AIMD rate control
are aiortc's own objects. Given the same packets it returns the same estimates:
``tests/relay/test_remb.py`` feeds both the same streams (bursts, congestion, gaps, reordering,
wrap-around) and compares every return value.

Arrival times are a wall clock in whole milliseconds (``relay.inbound``, as aiortc). Only if it
is stepped back do aiortc's buckets and this window count differently, for one window at most.
"""

from __future__ import annotations

from collections import deque

from aiortc.rate import (
    BURST_DELTA_THRESHOLD_MS,
    MIN_FRAME_PERIOD_HISTORY_LENGTH,
    InterArrival,
    InterArrivalDelta,
    OveruseEstimator,
    RemoteBitrateEstimator,
    TimestampGroup,
)

_UINT32 = 0xFFFFFFFF
_HALF = 0x80000000


class WindowRate:
    """aiortc's ``RateCounter``: what arrived in the last ``window_ms``, as a rate; kept as the
    arrivals themselves instead of one bucket per millisecond."""

    def __init__(self, window_ms: int, scale: int = 8000) -> None:
        self._window_ms = window_ms
        self._scale = scale
        self._arrivals: deque[tuple[int, int]] = deque()
        self._origin_ms: int | None = None
        self._count = 0
        self._value = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        self._arrivals.append((now_ms, value))
        self._count += 1
        self._value += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is not None:
            self._erase_old(now_ms)
            active_ms = now_ms - self._origin_ms + 1
            if self._count > 0 and active_ms > 1:
                return round(self._scale * self._value / active_ms)
        return None

    def reset(self) -> None:
        self._arrivals.clear()
        self._origin_ms = None
        self._count = 0
        self._value = 0

    def _erase_old(self, now_ms: int) -> None:
        new_origin_ms = now_ms - self._window_ms + 1
        if self._origin_ms is not None and self._origin_ms < new_origin_ms:
            self._origin_ms = new_origin_ms
            arrivals = self._arrivals
            while arrivals and arrivals[0][0] < new_origin_ms:
                self._value -= arrivals.popleft()[1]
                self._count -= 1


class _OveruseEstimator(OveruseEstimator):
    def update_min_frame_period(self, ts_delta: float) -> float:
        history = self.ts_delta_hist
        if len(history) >= MIN_FRAME_PERIOD_HISTORY_LENGTH:
            history.pop(0)
        smallest = min(history, default=ts_delta)
        history.append(ts_delta)
        return smallest if smallest < ts_delta else ts_delta


class _InterArrival(InterArrival):
    def compute_deltas(
        self, timestamp: int, arrival_time: int, packet_size: int
    ) -> InterArrivalDelta | None:
        """aiortc's, with its helpers (out of order, burst, new group, uint32 arithmetic) inline."""
        deltas = None
        group = self.current_group
        if group is None:
            group = self.current_group = TimestampGroup(timestamp)
        else:
            assert group.first_timestamp is not None and group.last_timestamp is not None
            from_first = (timestamp - group.first_timestamp) & _UINT32
            if from_first >= _HALF:
                return None  # out of order
            from_last = (timestamp - group.last_timestamp) & _UINT32
            from_last_ms = round(self.timestamp_to_ms * from_last)
            assert group.arrival_time is not None
            arrival_delta = arrival_time - group.arrival_time
            burst = from_last_ms == 0 or (
                arrival_delta - from_last_ms < 0 and arrival_delta <= BURST_DELTA_THRESHOLD_MS
            )
            if not burst and from_first > self.group_length:
                previous = self.previous_group
                if previous is not None:
                    assert previous.last_timestamp is not None
                    assert previous.arrival_time is not None
                    deltas = InterArrivalDelta(
                        timestamp=(group.last_timestamp - previous.last_timestamp) & _UINT32,
                        arrival_time=group.arrival_time - previous.arrival_time,
                        size=group.size - previous.size,
                    )
                self.previous_group = group
                group = self.current_group = TimestampGroup(timestamp=timestamp)
            elif 0 < from_last < _HALF:
                group.last_timestamp = timestamp
        group.size += packet_size
        group.arrival_time = arrival_time
        return deltas


class RembEstimator(RemoteBitrateEstimator):
    """aiortc's ``RemoteBitrateEstimator`` with the per-packet parts above (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.incoming_bitrate = WindowRate(1000, 8000)  # type: ignore[assignment]
        aiortcs = self.inter_arrival
        self.inter_arrival = _InterArrival(aiortcs.group_length, aiortcs.timestamp_to_ms)
        self.estimator = _OveruseEstimator()
