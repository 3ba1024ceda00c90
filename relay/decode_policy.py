"""DecodePolicy: which frames of the endoscope feed the guards' decode thread decodes.

Decoding every frame of a 720p30 feed costs about 8 % of a core per consultation, while the
picture and privacy guards look at 2 or 3 frames a second. Two kinds of frame are not decoded:

* a frame no later frame depends on (``codecs.Dependencies``, read from its header), unless a
  sampler is due at its pts;
* a frame above the base temporal layer, when its sender labelled the layers (VP8 L1T3 from the
  clinic page: the base layer is a quarter of the frames, 7.5 a second) and every sampler is
  content with the base layer's rate (``BASE_LAYER_ENOUGH_S``). The tracker of anchored marks
  wants every frame: while it samples, the higher layers are taken up again where that is safe —
  at a frame whose sync bit says it depends on the layer below only, or at a keyframe, requested
  when no such frame came within ``SYNC_WAIT_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .codecs import Dependencies, TemporalLayer

logger = logging.getLogger(__name__)

BASE_LAYER_ENOUGH_S = 0.25
"A sampler at least this far apart is served by the base layer (a frame every 133 ms at 30 fps)."
SYNC_WAIT_S = 0.5
"How long to wait for a sync frame of a layer before asking the clinic for a keyframe."
ALL_LAYERS = 1 << 8
"``decodable`` after a keyframe: every layer (VP8 labels at most 4)."


class Sampler(Protocol):
    every_s: float

    def due(self, pts: int) -> bool: ...


class DecodePolicy:
    """One per decode thread, told every frame of the stream in order (see the module)."""

    def __init__(self, codec: str, request_keyframe: Callable[[], None], label: str = "") -> None:
        self.label = label
        self._dependencies = Dependencies(codec)
        self._request_keyframe = request_keyframe
        self.decodable = ALL_LAYERS
        "The highest temporal layer whose frames decode correctly from here on."
        self._awaiting: set[int] = set()
        "Layers a sampler wants above ``decodable``, whose sync frames are awaited…"
        self._awaiting_since: float | None = None
        "…since then (or since the last keyframe request)."

    def wanted(
        self,
        frame: bytes,
        pts: int,
        keyframe: bool,
        layer: TemporalLayer | None,
        samplers: Iterable[Sampler],
    ) -> bool:
        """Decode this frame? Every frame of the stream must be passed, in order."""
        samplers = tuple(samplers)
        droppable = self._dependencies.droppable(frame)
        if keyframe:
            self.decodable = ALL_LAYERS
            self._stop_awaiting()
        if (
            layer is not None
            and layer.tid > 0
            and not self._higher_layer(layer, droppable, samplers)
        ):
            self._dependencies.skipped()
            return False
        return not droppable or any(s.due(pts) for s in samplers)

    def _higher_layer(
        self, layer: TemporalLayer, droppable: bool, samplers: tuple[Sampler, ...]
    ) -> bool:
        """May a frame above the base layer be decoded (if wanted)? Follows what decodes."""
        if all(s.every_s >= BASE_LAYER_ENOUGH_S for s in samplers):
            self._stop_awaiting()
            if not droppable:
                self.decodable = min(self.decodable, layer.tid - 1)
            return False
        if layer.tid <= self.decodable:
            return True
        if layer.sync and layer.tid - 1 <= self.decodable:
            self.decodable = layer.tid
            logger.info(
                "DecodePolicy(%s): layer %d taken up at a sync frame", self.label, layer.tid
            )
            self._awaiting.discard(layer.tid)
            if not self._awaiting:
                self._awaiting_since = None
            return True
        now = time.monotonic()
        self._awaiting.add(layer.tid)
        if self._awaiting_since is None:
            self._awaiting_since = now
        elif now - self._awaiting_since >= SYNC_WAIT_S:
            self._awaiting_since = now
            logger.info(
                "DecodePolicy(%s): no sync frame for layers %s, keyframe requested",
                self.label,
                sorted(self._awaiting),
            )
            self._request_keyframe()
        return False

    def _stop_awaiting(self) -> None:
        self._awaiting.clear()
        self._awaiting_since = None
