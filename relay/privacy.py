"""The privacy guard: while a consultation's endoscope is live, its decoded picture is sampled
about twice a second and classified (``relay/out_of_body.py``); with hysteresis (out after 0.5 s of
room frames, back in after 1 s of mucosa) the consultation learns when the camera left the body
and when it came back, each change dated on the relay clock (90 kHz pts) of the frame it
happened at — the clock the recorder places spans of its recording by.

Classification runs in the shared decode thread (``Router.decoded``): a 192-pixel-wide copy of
the frame, a few milliseconds, twice a second. Only the change is handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .codecs import VIDEO_CLOCK_RATE
from .feed import FeedState
from .ids import ConsultationId, FeedName
from .out_of_body import ANALYSIS_WIDTH, Hysteresis, classify

if TYPE_CHECKING:
    import av

    from .relay import FeedEvent
    from .router import Router

logger = logging.getLogger(__name__)

SAMPLE_EVERY_S = 0.5


class Sampling(Protocol):
    def stop(self) -> None: ...


class FrameSource(Protocol):
    """``relay.decoded.DecodedFeed``: decoded frames of the endoscope, on its decode thread."""

    def sample(
        self, every_s: float, on_frame: Callable[[av.VideoFrame, int], None], label: str
    ) -> Sampling: ...


@dataclass(frozen=True)
class PrivacyChange:
    cid: ConsultationId
    out_of_body: bool
    pts: int | None
    "Relay pts the change is dated at (backdated by the hysteresis); None: the feed ended."


class PrivacyGuard:
    """One consultation's sampler: classifies, applies hysteresis, reports changes on the loop."""

    def __init__(
        self,
        cid: ConsultationId,
        source: FrameSource,
        on_change: Callable[[PrivacyChange], None],
        every_s: float = SAMPLE_EVERY_S,
    ) -> None:
        self.cid = cid
        self.source = source
        "The decoder it samples: a guard of a Router closed since is replaced."
        self.out_of_body = False
        "As last reported on the event loop."
        self.cpu_s = 0.0
        "CPU time spent classifying (decode thread)."
        self.samples = 0
        self._on_change = on_change
        self._hysteresis = Hysteresis()
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._stopped = False
        self._sampling = source.sample(every_s, self._on_frame, f"privacy consultation:{cid}")

    def stop(self) -> PrivacyChange | None:
        """Stop sampling; the change to announce if the camera was outside the body."""
        with self._lock:
            self._stopped = True
        self._sampling.stop()
        if not self.out_of_body:
            return None
        self.out_of_body = False
        return PrivacyChange(self.cid, False, None)

    def _on_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """In the decode thread."""
        started = time.thread_time()
        height = max(2, round(ANALYSIS_WIDTH * frame.height / max(1, frame.width) / 2) * 2)
        small = frame.reformat(width=ANALYSIS_WIDTH, height=height, format="bgr24").to_ndarray()
        verdict = classify(small)
        changed_at = self._hysteresis.update(
            None if verdict is None else verdict.out_of_body, pts / VIDEO_CLOCK_RATE
        )
        self.cpu_s += time.thread_time() - started
        self.samples += 1
        if changed_at is None:
            return
        pts_at = round(changed_at * VIDEO_CLOCK_RATE)
        change = PrivacyChange(self.cid, self._hysteresis.out_of_body, pts_at)
        with self._lock:
            if not self._stopped:
                self._loop.call_soon_threadsafe(self._report, change)

    def _report(self, change: PrivacyChange) -> None:
        if self._stopped or change.out_of_body == self.out_of_body:
            return
        self.out_of_body = change.out_of_body
        logger.info(
            "PrivacyGuard(consultation:%s) camera %s the body",
            self.cid,
            "outside" if change.out_of_body else "back inside",
        )
        self._on_change(change)


class PrivacyWatch:
    """Every consultation's guard: started when its endoscope feed goes live, stopped when the
    feed goes offline (the camera then counts as back: nothing is being filmed)."""

    def __init__(
        self,
        router: Callable[[ConsultationId], Router | None],
        every_s: float = SAMPLE_EVERY_S,
    ) -> None:
        self.on_change: Callable[[PrivacyChange], None] = lambda change: None
        self._router = router
        self._every_s = every_s
        self._guards: dict[ConsultationId, PrivacyGuard] = {}

    def on_feed_event(self, event: FeedEvent) -> None:
        if event.feed is not FeedName.ENDOSCOPE:
            return
        live = event.state is FeedState.LIVE
        guard = self._guards.get(event.cid)
        router = self._router(event.cid) if live else None
        if guard is not None and router is not None and guard.source is not router.decoded:
            self._stop(event.cid)  # the guard of a Router closed since
        if live and event.cid not in self._guards:
            if router is not None and not router.closed:
                self._guards[event.cid] = PrivacyGuard(
                    event.cid, router.decoded, self._report, self._every_s
                )
        elif not live:
            self._stop(event.cid)

    def out_of_body(self, cid: ConsultationId) -> bool:
        guard = self._guards.get(cid)
        return guard is not None and guard.out_of_body

    def guard(self, cid: ConsultationId) -> PrivacyGuard | None:
        return self._guards.get(cid)

    def close(self) -> None:
        for cid in list(self._guards):
            self._stop(cid)

    def _stop(self, cid: ConsultationId) -> None:
        guard = self._guards.pop(cid, None)
        change = guard.stop() if guard is not None else None
        if change is not None:
            self._report(change)

    def _report(self, change: PrivacyChange) -> None:
        try:
            self.on_change(change)
        except Exception:
            logger.exception("privacy change handler failed")
