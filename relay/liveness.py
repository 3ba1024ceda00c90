"""Liveness: notice within seconds that the far end of a peer connection has vanished.

aiortc has no consent-freshness timeout of its own worth the name: a peer whose process or network
died is noticed after ~35 s (six missed consent checks 5 s apart). A viewer silently holding a
``max_viewers`` slot, or a dead clinic connection holding the feed, is not acceptable for that long.

The signal: anything at all arriving from the peer. Two sources, read every ``CHECK_S``:

* the DTLS transport's received-packet counter — media from a publisher, RTCP (receiver reports,
  NACK, PLI, REMB) and data-channel traffic from a viewer; free, nothing is counted per packet;
* our own STUN binding request on the selected candidate pair every ``PROBE_S`` once nothing
  else has arrived for ``QUIET_S``: every ICE agent must answer it (RFC 7675), with or without
  media, so an idle viewer (feed offline — aiortc receivers send no receiver report then) or a
  muted talk-back publisher stays alive. A peer whose media or reports keep arriving is not
  probed: a probe costs the server a STUN transaction (two HMACs, a timer, a parse) and says
  nothing more.

RTCP alone is not enough: aiortc sends receiver reports only for streams it receives, and a
browser receiving audio only reports every 2.5–7.5 s. Nothing heard for ``timeout_s`` once
connected → ``on_silent`` (the Peer closes itself: docs/closures.md, "Peer silence").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection

from . import forwarding

logger = logging.getLogger(__name__)

CHECK_S = 0.25
PROBE_S = 0.5
"""Two probes a second while the peer is quiet: at 3 % loss each way a live, idle peer still
answers one of the six probes between ``QUIET_S`` and a 4 s timeout with probability 1 − 0.06⁶."""
QUIET_S = 1.0
"""Probes start after this long without media or RTCP: a browser sends transport-wide feedback
several times a second, an aiortc receiver a report every 0.5–1.5 s."""


class Liveness:
    """Watches one peer connection; ``stop()`` when the peer closes."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        timeout_s: float,
        on_silent: Callable[[float], None],
        label: str,
    ) -> None:
        self._pc = pc
        self._timeout_s = timeout_s
        self._on_silent = on_silent
        self._label = label
        self.silent_s = 0.0
        """How long the peer has not been heard from, counting only time the event loop was
        responsive: after the loop was blocked (a CPU-starved host), what the peer sent meanwhile
        is still unread in the socket, and a wall-clock deadline would close live peers."""
        self.quiet_s = 0.0
        "As ``silent_s``, but only media and RTCP end it, not answers to our probes."
        self._packets = 0
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._probe())]

    def _heard(self) -> None:
        self.silent_s = self.quiet_s = 0.0

    async def _watch(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_S)
            now = time.monotonic()
            step, last = min(now - last, 2 * CHECK_S), now
            if self._pc.connectionState != "connected":
                self._heard()  # silence counts from the connection, not from the offer
                continue
            packets = forwarding.packets_received(self._pc)
            if packets != self._packets:
                self._packets = packets
                self._heard()
            else:
                self.silent_s += step
                self.quiet_s += step
            silent_s = self.silent_s
            if silent_s > self._timeout_s:
                logger.info("Peer(%s) silent for %.1f s: closing", self._label, silent_s)
                self.stop()
                self._on_silent(silent_s)
                return

    async def _probe(self) -> None:
        while True:
            started = time.monotonic()
            if (
                self.quiet_s >= QUIET_S
                and self._pc.connectionState == "connected"
                and await forwarding.probe(self._pc)
            ):
                self.silent_s = 0.0  # heard, yet still quiet: the probes go on
            await asyncio.sleep(max(0.0, started + PROBE_S - time.monotonic()))

    def stop(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
