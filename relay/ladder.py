"""Ladder: the endoscope feed's renditions for viewers — the original and lower rungs.

A forwarding relay sends the clinic's one bitrate to everyone, so a viewer whose downlink is below
it would freeze for the whole consultation. The ladder offers, besides the untouched original
(forwarded bit-exact), lower renditions (``540p``, ``360p``: the **rungs**), each decoded, scaled
and encoded ONCE per consultation and only while a viewer uses it — the burned-in annotated
rendition is the same pipeline (``relay/rendition.py``), and it gets the same choice. The
recording always taps the original.

One Ladder per Router; a viewer asks for ``producer(annotated, quality)`` and consumes it, and
``release()`` stops every rendition left without a viewer (its thread joined off the loop).
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

from .annotations import AnnotationBoard
from .producer import Producer
from .rendition import Rendition, Rung

logger = logging.getLogger(__name__)


class Quality(StrEnum):
    """What a viewer receives: the clinic's stream itself, or a rung of the ladder."""

    ORIGINAL = "original"
    P540 = "540p"
    P360 = "360p"


DEFAULT_KBPS = (700, 250)
"""540p and 360p video rates: they fit a 700 and a 350 kbit/s link with the audio (Opus, ~40-96
kbit/s) and packet overhead beside them (``ENDOLINK_LADDER_KBPS``)."""


def rungs(kbps: tuple[int, int] = DEFAULT_KBPS) -> dict[Quality, Rung]:
    """The ladder's rungs at these video rates (kbit/s of 540p, 360p)."""
    return {Quality.P540: Rung(540, kbps[0]), Quality.P360: Rung(360, kbps[1])}


RUNGS = rungs()


class Ladder:
    """The renditions of one consultation's endoscope video, started on demand."""

    def __init__(
        self,
        source: Producer,
        board: AnnotationBoard,
        label: str,
        kbps: tuple[int, int] = DEFAULT_KBPS,
    ) -> None:
        self._source = source
        self._board = board
        self._label = label
        self._rungs = rungs(kbps)
        self._renditions: dict[tuple[bool, Quality], Rendition] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def producer(self, annotated: bool, quality: Quality) -> Producer:
        """The Producer to consume for this choice: the feed's own for the plain original, else
        the rendition's, started by its first viewer (consume it before the next ``release``)."""
        if not annotated and quality is Quality.ORIGINAL:
            return self._source
        key = (annotated, quality)
        rendition = self._renditions.get(key)
        if rendition is None:
            rendition = Rendition(
                self._source,
                self._board if annotated else None,
                self._label,
                self._rungs.get(quality),
            )
            self._renditions[key] = rendition
        return rendition.producer

    def release(self) -> None:
        """Stop every rendition that has no viewer left (their threads are joined off the loop)."""
        for key, rendition in list(self._renditions.items()):
            if rendition.producer.consumers:
                continue
            del self._renditions[key]
            task = asyncio.ensure_future(rendition.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        renditions, self._renditions = list(self._renditions.values()), {}
        await asyncio.gather(*(r.stop() for r in renditions), *self._stopping)

    def renditions(self) -> dict[tuple[bool, Quality], Rendition]:
        """The running renditions by (annotated, quality): for metrics and the bench's CPU."""
        return dict(self._renditions)
