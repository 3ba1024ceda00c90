"""What is happening now, read at scrape time: consultations, participants, feeds, viewers,
recordings. Nothing here runs on the media path: the relay and the recorder keep plain integer
counters (frames, bytes, keyframe requests, drops), rates are the change between two scrapes, and
RTT / loss come from aiortc's ``getStats()`` of each session, gathered once per scrape.

Label cardinality: a consultation id labels the gauges of a *live* consultation only (one with a
Router or a connected page); its series vanish when it ends. Never a token, a name, an identity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from aiortc.stats import RTCInboundRtpStreamStats, RTCRemoteInboundRtpStreamStats
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder.recordings import Recordings, disk_free_bytes
from relay import Relay, Router
from relay.feed import Feed
from relay.peer import Peer, PeerRole
from signaling.ws.hub import Hub

logger = logging.getLogger(__name__)

STATS_TIMEOUT_S = 1.0
"A scrape never waits longer than this for the sessions' statistics."
MIN_RATE_WINDOW_S = 0.5
"Two scrapes closer than this keep the previous rate (a rate over a few ms is noise)."

FEED = ("consultation", "feed")
TRACK = ("consultation", "feed", "kind")


@dataclass(frozen=True)
class SessionStats:
    """One WHIP/WHEP session's transport figures (cumulative, from its RTP statistics)."""

    packets_received: int = 0
    packets_lost: int = 0
    rtt_s: float | None = None
    "Viewer sessions: round-trip time from the viewer's receiver reports."
    fraction_lost: float | None = None
    "Viewer sessions: the loss the viewer reported in its latest receiver report."


class Rates:
    """Per key, the rate of a counter between two scrapes; keys not seen in a scrape are
    forgotten (their consultation ended)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], tuple[float, int, float]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def rate(self, key: tuple[str, ...], count: int, now: float) -> float:
        self._seen.add(key)
        last = self._last.get(key)
        if last is None or count < last[1]:
            self._last[key] = (now, count, 0.0)
            return 0.0
        at, before, previous = last
        if now - at < MIN_RATE_WINDOW_S:
            return previous
        value = (count - before) / (now - at)
        self._last[key] = (now, count, value)
        return value

    def sweep(self) -> None:
        self._last = {k: v for k, v in self._last.items() if k in self._seen}
        self._seen = set()


class LiveCollector(Collector):
    """A Prometheus collector over the app's live objects (it keeps no state of its own but
    the previous scrape's counters, for rates)."""

    def __init__(self, relay: Relay, hub: Hub, recordings: Recordings) -> None:
        self._relay = relay
        self._hub = hub
        self._recordings = recordings
        self._rates = Rates()
        self._sessions: dict[str, SessionStats] = {}
        self._disk_free: int | None = None

    async def refresh(self) -> None:
        """The asynchronous part of a scrape: session statistics and free disk space."""
        peers = [p for r in list(self._relay.routers.values()) for p in list(r.peers.values())]
        stats = await asyncio.gather(*(_session_stats(p) for p in peers))
        self._sessions = {p.id: s for p, s in zip(peers, stats, strict=True) if s is not None}
        try:
            free = await asyncio.to_thread(disk_free_bytes, self._recordings.root)
        except OSError:
            free = None
        self._disk_free = free

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        yield from self._people()
        yield from self._feeds(now)
        yield from self._recording()
        yield from self._messages()
        self._rates.sweep()

    def _people(self) -> Iterator[Metric]:
        census = self._hub.census()
        live = set(census) | set(self._relay.routers)
        yield GaugeMetricFamily(
            "endolink_consultations_live",
            "Consultations with media or a connected page now",
            value=len(live),
        )
        totals: Counter[tuple[str, ...]] = Counter()
        for roles in census.values():
            totals.update({(role,): count for role, count in roles.items()})
        yield _labelled(
            GaugeMetricFamily(
                "endolink_participants", "Connected devices (pages) by role", labels=["role"]
            ),
            totals,
        )
        yield GaugeMetricFamily(
            "endolink_websockets",
            "Open WebSockets, joined or authenticating",
            value=self._hub.sockets,
        )
        counted: Counter[tuple[str, ...]] = Counter(
            (str(peer.role), peer.state)
            for router in list(self._relay.routers.values())
            for peer in list(router.peers.values())
        )
        yield _labelled(
            GaugeMetricFamily(
                "endolink_sessions",
                "WHIP/WHEP sessions by role and connection state",
                labels=["role", "state"],
            ),
            counted,
        )

    def _feeds(self, now: float) -> Iterator[Metric]:
        f = _families(FEED_FAMILIES)
        for cid, router in sorted(self._relay.routers.items()):
            f["viewers"].add_metric([cid], router.viewer_count())
            for name, feed in router.feeds.items():
                labels = [cid, str(name)]
                f["live"].add_metric(labels, 1 if str(feed.state) == "live" else 0)
                for kind, producer in feed.producers.items():
                    track = [*labels, kind]
                    f["frames"].add_metric(track, producer.frames)
                    f["bytes"].add_metric(track, producer.bytes)
                    key = tuple(track)
                    bps = 8 * self._rates.rate(("bytes", *key), producer.bytes, now)
                    f["bitrate"].add_metric(track, bps)
                    if kind == "video":
                        f["fps"].add_metric(
                            labels, self._rates.rate(("frames", *key), producer.frames, now)
                        )
                        f["keyframes"].add_metric(labels, producer.keyframes)
                        f["requests"].add_metric(labels, producer.keyframe_requests)
                self._feed_transport(f, router, feed, labels)
        yield from f.values()

    def _feed_transport(self, f: Families, router: Router, feed: Feed, labels: list[str]) -> None:
        publisher = feed.publisher
        found = self._sessions.get(publisher.id) if publisher is not None else None
        if found is not None:
            f["received"].add_metric(labels, found.packets_received)
            f["lost"].add_metric(labels, found.packets_lost)
        viewers = [
            s
            for p in list(router.peers.values())
            if p.role is PeerRole.VIEWER and p.feed == feed.name
            if (s := self._sessions.get(p.id)) is not None
        ]
        rtts = [s.rtt_s for s in viewers if s.rtt_s is not None]
        losses = [s.fraction_lost for s in viewers if s.fraction_lost is not None]
        if rtts:
            f["rtt"].add_metric(labels, max(rtts))
        if losses:
            f["loss"].add_metric(labels, max(losses))

    def _recording(self) -> Iterator[Metric]:
        r = _families(RECORDING_FAMILIES)
        for cid in sorted(self._relay.routers):
            recorder = self._recordings.active(cid)
            progress = recorder.progress() if recorder is not None else None
            r["open"].add_metric([cid], 0 if progress is None else 1)
            if progress is not None:
                r["bytes"].add_metric([cid], progress.muxed_bytes)
                r["dropped"].add_metric([cid], progress.dropped_frames)
                r["backlog"].add_metric([cid], progress.backlog_frames)
        yield from r.values()
        if self._disk_free is not None:
            yield GaugeMetricFamily(
                "endolink_disk_free_bytes",
                "Free space where recordings are written",
                value=self._disk_free,
            )
            yield GaugeMetricFamily(
                "endolink_disk_floor_bytes",
                "Free space below which recording stops (ENDOLINK_RECORDING_MIN_FREE_MB)",
                value=self._recordings.config.min_free_mb * 1024 * 1024,
            )

    def _messages(self) -> Iterator[Metric]:
        counts = self._hub.counts
        yield _labelled(
            CounterMetricFamily(
                "endolink_ws_messages_received",
                "WebSocket messages from pages, by type",
                labels=["type"],
            ),
            {(kind,): count for kind, count in counts.received.items()},
        )
        yield CounterMetricFamily(
            "endolink_ws_messages_sent", "WebSocket messages sent to pages", value=counts.sent
        )
        yield _labelled(
            CounterMetricFamily(
                "endolink_annotation_ops", "Annotation ops applied, by op", labels=["op"]
            ),
            {(op,): count for op, count in counts.annotation_ops.items()},
        )


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, counts: Mapping[tuple[str, ...], int]
) -> Metric:
    """``family`` with one sample per label values, in a stable order."""
    for labels, count in sorted(counts.items()):
        family.add_metric(list(labels), count)
    return family


Families = dict[str, GaugeMetricFamily | CounterMetricFamily]
_G, _C = GaugeMetricFamily, CounterMetricFamily
_CID = ("consultation",)
FEED_FAMILIES = (
    ("viewers", _G, "endolink_viewers", "WHEP viewer sessions per consultation", _CID),
    ("live", _G, "endolink_feed_live", "1 while the feed's publisher sends media", FEED),
    ("frames", _C, "endolink_feed_frames", "Encoded frames received from the publisher", TRACK),
    ("bytes", _C, "endolink_feed_bytes", "Encoded bytes received from the publisher", TRACK),
    ("fps", _G, "endolink_feed_fps", "Video frames/s arriving, between two scrapes", FEED),
    ("bitrate", _G, "endolink_feed_bitrate_bps", "Bits/s arriving, between two scrapes", TRACK),
    ("keyframes", _C, "endolink_feed_keyframes", "Video keyframes received", FEED),
    ("requests", _C, "endolink_feed_keyframe_requests", "PLIs sent to the publisher", FEED),
    ("received", _C, "endolink_feed_packets_received", "RTP packets, this publisher", FEED),
    ("lost", _C, "endolink_feed_packets_lost", "RTP packets lost, this publisher", FEED),
    ("rtt", _G, "endolink_feed_viewer_rtt_seconds", "RTT of the worst viewer session", FEED),
    ("loss", _G, "endolink_feed_viewer_loss_ratio", "Loss of the worst viewer session", FEED),
)
RECORDING_FAMILIES = (
    ("open", _G, "endolink_recording_segment_open", "1 while a segment is written", _CID),
    ("bytes", _G, "endolink_recording_segment_bytes", "Bytes in the open segment", _CID),
    ("dropped", _G, "endolink_recording_segment_dropped_frames", "Frames it lost", _CID),
    ("backlog", _G, "endolink_recording_backlog_frames", "Frames queued for the disk", _CID),
)
"""Per scrape, by short name: (key, family type, metric name, help, labels). The full meaning
of each is in docs/operations.md."""


def _families(
    spec: tuple[
        tuple[str, type[GaugeMetricFamily] | type[CounterMetricFamily], str, str, tuple[str, ...]],
        ...,
    ],
) -> Families:
    """One scrape's empty metric families, by short name."""
    return {key: kind(name, text, labels=list(labels)) for key, kind, name, text, labels in spec}


async def _session_stats(peer: Peer) -> SessionStats | None:
    """``getStats()`` of a connected session, summed over its tracks; None if unavailable."""
    if peer.state != "connected":
        return None
    try:
        async with asyncio.timeout(STATS_TIMEOUT_S):
            report = await peer.pc.getStats()
    except Exception:  # a session closing under us: no figures this time
        logger.debug("%s: no statistics", peer.label, exc_info=True)
        return None
    received = lost = 0
    rtts: list[float] = []
    fractions: list[float] = []
    for stats in report.values():
        if isinstance(stats, RTCInboundRtpStreamStats):
            received += stats.packetsReceived
            lost += max(0, stats.packetsLost)
        elif isinstance(stats, RTCRemoteInboundRtpStreamStats):
            if stats.roundTripTime is not None:
                rtts.append(float(stats.roundTripTime))
            fractions.append(stats.fractionLost / 256)  # RTCP's 8-bit fixed point
    return SessionStats(
        received, lost, max(rtts) if rtts else None, max(fractions) if fractions else None
    )
