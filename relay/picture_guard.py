"""PictureGuard: the endoscope's picture quality, sampled a few times a second while it is live.

It samples the Router's shared decoder (``Router.decoded``, ``relay.decoded``) every
``SAMPLE_EVERY_S``: in the decode thread the frame is scaled to ``analysis_size`` and measured
(``relay.picture_quality.measure``, about 1.5 ms of CPU at 320 px); the measures go to the event
loop (``call_soon_threadsafe``), where the ``Judge`` turns them into a verdict. A changed verdict
is reported at most once per ``REPORT_EVERY_S`` (the newest one, once the interval is over), so a
page's hint never flickers faster than it can be read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import av

from .decoded import DecodedFeed
from .picture_quality import GOOD, Judge, Measures, Verdict, analysis_size, measure

logger = logging.getLogger(__name__)

SAMPLE_EVERY_S = 1 / 3
REPORT_EVERY_S = 1.0


class PictureGuard:
    """One feed's verdict; ``on_verdict`` is called on the event loop when it changes."""

    def __init__(
        self, source: DecodedFeed, on_verdict: Callable[[Verdict], None], label: str
    ) -> None:
        self.source = source
        self.verdict = GOOD
        "As last reported."
        self._latest = GOOD
        self.cpu_s = 0.0
        "CPU time spent measuring (in the decode thread)."
        self.samples = 0
        self._on_verdict = on_verdict
        self._label = label
        self._judge = Judge()
        self._loop = asyncio.get_running_loop()
        self._reported_at = -REPORT_EVERY_S
        self._pending: asyncio.TimerHandle | None = None
        self._stopped = False
        self._sampling = source.sample(SAMPLE_EVERY_S, self._on_frame, f"{label} picture")

    def stop(self) -> None:
        self._stopped = True
        self._sampling.stop()
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    # -- decode thread -----------------------------------------------------------------------

    def _on_frame(self, frame: av.VideoFrame, pts: int) -> None:
        started = time.thread_time()
        width, height = analysis_size(frame.width, frame.height)
        measures = measure(frame.reformat(width, height, "bgr24").to_ndarray())
        self.cpu_s += time.thread_time() - started
        self.samples += 1
        if not self._stopped:  # (a stop racing this is harmless: ``_add`` checks again)
            self._loop.call_soon_threadsafe(self._add, measures, time.monotonic())

    # -- event loop --------------------------------------------------------------------------

    def _add(self, measures: Measures, at: float) -> None:
        if self._stopped:
            return
        verdict = self._judge.add(measures, at)
        if (verdict.level, verdict.hints) == (self._latest.level, self._latest.hints):
            return
        self._latest = verdict
        if self._pending is None:
            wait = self._reported_at + REPORT_EVERY_S - time.monotonic()
            self._pending = self._loop.call_later(max(0.0, wait), self._report)

    def _report(self) -> None:
        self._pending = None
        if (self._latest.level, self._latest.hints) == (self.verdict.level, self.verdict.hints):
            return  # changed and changed back within the interval
        self.verdict, self._reported_at = self._latest, time.monotonic()
        logger.debug("PictureGuard(%s) %s %s", self._label, self.verdict.level, self.verdict.hints)
        self._on_verdict(self.verdict)
