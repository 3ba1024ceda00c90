"""Selector: one viewer's video track in automatic quality mode.

It forwards the encoded frames of one source at a time — the original or a rung of the ladder —
and moves the viewer when ``relay.quality`` asks (fed by ``relay.feedback``): it subscribes to the
target (starting the rung if needed; subscribing asks for a keyframe), keeps forwarding the
current source until the target flows — its first keyframe and ``STEADY_FRAMES - 1`` frames after
it queued — then swaps at that keyframe and stops the old subscription (``release`` stops a rung
nobody uses). The viewer never receives a delta frame of the new source before its keyframe.

Why wait past the keyframe: a rung just started emits its first keyframe as soon as the clinic's
keyframe is decoded, then creates nothing for a while under load (encoder set up, the frames that
piled up meanwhile decoded and skipped as stale, ``relay.rendition``): swapped at that keyframe,
a viewer went ~1 s without a frame. Frames of the target that have followed its keyframe show
its encoder is keeping pace; until then the viewer keeps the source it has. The wait is bounded
(``STEADY_WAIT_S`` after the keyframe): a target that only trickles still takes the viewer, away
from a source its link does not carry.

Continuity: renditions keep the source's pts (``relay.rendition`` encodes each decoded frame at
its own pts), so timestamps stay on one clock. But a rendition's frame leaves its encoder after
the original's frame of the same instant was forwarded, so the keyframe swapped to can be older
than what the viewer has; a browser drops a keyframe older than the last frame it decoded. From
such a swap on, the target's timestamps are shifted to follow the arrival time (an offset of about
the encoding delay), and the shift goes back to zero at the first swap that does not need it.
Picture-ids (VP8) and parameter sets (H.264) change only at the swap keyframe: each source keeps
its own packetization, shared by all its viewers (``relay.forwarding.share_packetization``).

A viewer's sender on a UDP pair does not read it: ``deliver_to`` pushes each frame as a source
queues it, or as the bounded wait ends (a timer), with no task woken per frame (as a Consumer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .codecs import VIDEO_CLOCK_RATE
from .consumer import Consumer, ForwardedFrame, hand_over
from .ids import ConsultationId
from .ladder import Ladder, Quality
from .producer import Producer
from .quality import QualityPolicy, Sample

logger = logging.getLogger(__name__)

STEADY_FRAMES = 3
"The target's keyframe and two frames after it queued: it flows (a 67 ms burst at the swap)."
STEADY_WAIT_S = 0.5
"The longest a target's queued keyframe waits for the frames after it before the swap anyway."


@dataclass(frozen=True)
class Switch:
    """One move of the viewer, for metrics and tests."""

    source: Quality
    target: Quality
    reason: str
    asked_at: float
    done_at: float
    "Monotonic time the target's keyframe was handed to the sender."


@dataclass
class _Target:
    """Where the viewer is going: the subscription and since when its keyframe waits."""

    quality: Quality
    consumer: Consumer
    reason: str
    asked_at: float
    keyframe_at: float | None = None

    def ready(self, now: float) -> bool:
        """Its keyframe is queued and frames follow it (or the keyframe waited long enough)."""
        if not self.consumer.queued:
            return False
        if self.keyframe_at is None:
            self.keyframe_at = now
        return self.consumer.queued >= STEADY_FRAMES or now - self.keyframe_at >= STEADY_WAIT_S

    def wait_s(self, now: float) -> float | None:
        """How long the sender may wait for a push before the bound says swap (None: no bound)."""
        if self.keyframe_at is None:
            return None
        return max(0.0, self.keyframe_at + STEADY_WAIT_S - now)


class Selector(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        producer: Callable[[Quality], Producer],
        release: Callable[[], None],
        levels: Sequence[tuple[Quality, float | None]],
        on_change: Callable[[Quality, str], None],
        label: str,
    ) -> None:
        """``producer``: the source of a quality (``Ladder.producer`` for this viewer's choice of
        annotated); ``levels``: best first, with their bitrates (None: measure it);
        ``on_change``: the viewer now gets a quality (after the swap), and why."""
        super().__init__()
        self.label = label
        self._producer = producer
        self._release = release
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._sink: Callable[[ForwardedFrame], None] | None = None
        self._bound: asyncio.TimerHandle | None = None
        "When a pushed target's bounded wait ends (``_advance`` then swaps)."
        self._ended = asyncio.Event()
        now = time.monotonic()
        self.policy: QualityPolicy[Quality] = QualityPolicy(levels, now)
        self._measured = {q: producer(q) for q, bps in levels if bps is None}
        self._measure()
        self.quality = levels[0][0]
        self._active = self._subscribe(self.quality)
        self._target: _Target | None = None
        self._offset = 0
        self._last: tuple[int, float] | None = None
        "Timestamp and arrival of the last frame handed out."
        self.current: ForwardedFrame | None = None
        self.switches: list[Switch] = []
        self.on_swap: Callable[[], None] = lambda: None
        "Called as the target's keyframe is handed out (``relay.feedback.Feedback.forget_sent``)."

    @property
    def pending(self) -> Quality | None:
        """The quality the viewer is on its way to (waiting for its keyframe), if any."""
        return self._target.quality if self._target is not None else None

    def _subscribe(self, quality: Quality) -> Consumer:
        producer = self._producer(quality)
        if quality in self._measured:
            # The annotated original is a rendition: once stopped and started again it is a new
            # Producer, and the old one's rate would read "unknown" for good.
            self._measured[quality] = producer
        return producer.consume(f"{self.label} {quality}", self._pushed)

    def _pushed(self) -> None:
        """One of its sources queued a frame."""
        if self._sink is None:
            self._wake.set()
        else:
            self._advance()

    # -- what the viewer's feedback asks ---------------------------------------------------

    def on_sample(self, sample: Sample) -> None:
        """A sample of the viewer's RTCP (``relay.feedback.watch``)."""
        self._measure()
        self._go(self.policy.update(sample), self.policy.reason)

    def _measure(self) -> None:
        """The measured levels' bitrates now (the original's: the clinic's stream varies). A
        rendition stopped while the viewer is elsewhere keeps its last known rate."""
        for quality, producer in self._measured.items():
            bps = producer.bitrate()
            if bps is not None:
                self.policy.set_bitrate(quality, bps)

    def want(self, quality: Quality, reason: str) -> None:
        """Move the viewer to ``quality`` now; its policy takes the move as its own (holds)."""
        self.policy.adopt(quality, time.monotonic(), reason)
        self._go(quality, reason)

    def _go(self, quality: Quality, reason: str) -> None:
        """Move the viewer to ``quality`` at its next keyframe (no-op if it is on its way)."""
        if self._target is not None:
            if self._target.quality == quality:
                return
            self._drop_target()
        if quality == self.quality:
            return
        self._target = _Target(quality, self._subscribe(quality), reason, time.monotonic())
        logger.info("Selector(%s) %s → %s (%s)", self.label, self.quality, quality, reason)

    def _drop_target(self) -> None:
        if self._target is not None:
            self._target.consumer.stop()
            self._target = None
            self._release()

    def request_keyframe(self) -> None:
        """The viewer's PLI/FIR goes to the source it is decoding."""
        self._active.request_keyframe()

    # -- the sender's side -------------------------------------------------------------------

    async def recv(self) -> av.Packet[Any]:
        """The next frame to send; ``current`` keeps its packetization for the sender."""
        while self.readyState == "live":
            frame = self._swapped() or self._active.poll()
            if frame is not None:
                return self._hand_out(frame)
            self._wake.clear()
            bound = self._target.wait_s(time.monotonic()) if self._target is not None else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), bound)
        raise MediaStreamError

    def deliver_to(self, sink: Callable[[ForwardedFrame], None]) -> None:
        """As ``Consumer.deliver_to``: each frame goes to ``sink`` (it is ``current`` then) as
        soon as ``recv`` would return it — as a source pushes it, or when a target's bounded
        wait ends — and ``recv`` is not used any more (``ended`` waits for the stop)."""
        self._sink = sink
        self._advance()

    def _advance(self) -> None:
        """Hand out every frame that may go now, then wait for a push or the bound."""
        while (sink := self._sink) is not None and self.readyState == "live":
            frame = self._swapped() or self._active.poll()
            if frame is None:
                break
            self._hand_out(frame)
            assert self.current is not None
            if not hand_over(sink, self.current, self):
                return
        target = self._target
        wait = target.wait_s(time.monotonic()) if target is not None else None
        if wait is not None and self._bound is None and self._sink is not None:
            self._bound = asyncio.get_running_loop().call_later(wait, self._bound_ended)

    def _bound_ended(self) -> None:
        self._bound = None
        self._advance()

    async def ended(self) -> None:
        """Until the Selector stops (a pushed reader's wait)."""
        await self._ended.wait()

    def _swapped(self) -> ForwardedFrame | None:
        """The target's first frame (a keyframe: a Consumer starts at one), once it flows."""
        target = self._target
        if target is None or not target.ready(time.monotonic()):
            return None
        frame = target.consumer.poll()
        assert frame is not None  # ready: frames are queued
        quality, reason = target.quality, target.reason
        old, self._active, self._target = self._active, target.consumer, None
        previous, self.quality = self.quality, quality
        old.stop()
        self._release()
        self._offset = 0
        if self._last is not None and frame.timestamp <= self._last[0]:
            elapsed = max(1, round((time.monotonic() - self._last[1]) * VIDEO_CLOCK_RATE))
            self._offset = self._last[0] + elapsed - frame.timestamp
        self.on_swap()
        done_at = time.monotonic()
        self.switches.append(Switch(previous, quality, reason, target.asked_at, done_at))
        logger.info(
            "Selector(%s) on %s after %.0f ms",
            self.label,
            quality,
            (done_at - target.asked_at) * 1000,
        )
        self._on_change(quality, reason)
        return frame

    def _hand_out(self, frame: ForwardedFrame) -> av.Packet[Any]:
        if self._offset:
            frame = frame._replace(timestamp=frame.timestamp + self._offset)
        self.current = frame
        self._last = (frame.timestamp, time.monotonic())
        return frame.packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._sink = None
            if self._bound is not None:
                self._bound.cancel()
                self._bound = None
            self._active.stop()
            self._drop_target()
            self._release()
            self._wake.set()
            self._ended.set()


@dataclass(frozen=True)
class QualityChange:
    """What one viewer's video now is (``Router(on_quality=...)``; the app tells its pages)."""

    cid: ConsultationId
    session_id: str
    identity: str
    quality: Quality
    automatic: bool
    reason: str
    """``connection``: moved down (or up) by its feedback; ``recovered``: back on the original;
    ``pinned``: the quality it asked for."""


def ladder_levels(kbps: tuple[int, int]) -> list[tuple[Quality, float | None]]:
    """The policy's levels: the original (its bitrate measured), then the rungs' video rates."""
    return [
        (Quality.ORIGINAL, None),
        (Quality.P540, kbps[0] * 1000),
        (Quality.P360, kbps[1] * 1000),
    ]


def automatic(
    ladder: Ladder,
    annotated: bool,
    kbps: tuple[int, int],
    report: Callable[[Quality, bool, str], None],
    label: str,
) -> Selector:
    """A viewer's Selector over the ladder (plain or annotated) that reports each move as
    ``report(quality, automatic=True, reason)``."""

    def changed(quality: Quality, _: str) -> None:
        report(quality, True, "recovered" if quality is Quality.ORIGINAL else "connection")

    return Selector(
        lambda q: ladder.producer(annotated, q), ladder.release, ladder_levels(kbps), changed, label
    )
