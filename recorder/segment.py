"""LiveSegment: the live half of one segment of a Recording — taps on the Router, the common
timeline of the three tracks, and the SegmentWriter that muxes them into one file.

A/V sync. aiortc rebases each track's timestamps to 0 at its own first packet, so pts values of
different tracks are not comparable. Each Producer knows when pts 0 of its clock would have
arrived (``Producer.clock_origin``, the least ``arrival - pts`` seen); a segment's timeline starts
at its first video keyframe, and each audio track is placed on it by that arrival mapping. The
skew left is the difference in network and encoder delay between the tracks (measured in
docs/recording.md).

Everything here runs on the event loop and only ever queues frames, as the taps push them
(``Consumer.deliver_to``): muxing and disk I/O happen in the SegmentWriter's thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from persistence.times import parse_utc_iso, utc_iso
from relay import Consumer, FeedName, Producer, Router
from relay.codecs import is_keyframe
from relay.consumer import ForwardedFrame

from .bitstream import h264_has_picture, h264_parameter_sets
from .config import RecorderConfig
from .manifest import Segment, SegmentStatus
from .writer import SegmentWriter, Track, WriterResult

logger = logging.getLogger(__name__)

EARLY_AUDIO_FRAMES = 100
"Audio frames (both tracks, ~1 s) kept while the segment waits for its first video keyframe."
REALIGN_S = 0.02
HELD_BYTES = 65_536
"Most bytes of H.264 units without a picture held for the next picture (parameter sets, SEI)."
"An audio track whose arrival mapping moved by more than this is re-aligned to the video."


_TAPS = {
    Track.VIDEO: (FeedName.ENDOSCOPE, "video"),
    Track.AUDIO: (FeedName.ENDOSCOPE, "audio"),
    Track.TALKBACK: (FeedName.TALKBACK, "audio"),
}


@dataclass(frozen=True)
class SegmentProgress:
    muxed_bytes: int
    dropped_frames: int
    "Every track, every cause (queue overflow, re-alignment, a viewer-side tap overflow)."
    backlog_frames: int
    "Frames queued for the writer thread: how far the disk lags behind the stream."


class LiveSegment:
    """The live half of one segment: taps on the Router, the common timeline, the writer."""

    def __init__(
        self,
        entry: Segment,
        path: Path,
        router: Router,
        codec: str,
        config: RecorderConfig,
        label: str,
        on_write_error: Callable[[str], None],
        on_new_connection: Callable[[], None] = lambda: None,
    ) -> None:
        self.entry = entry
        self._codec = codec
        self._config = config
        self._label = f"{label} segment {entry.seq}"
        self._feed = router.feeds[FeedName.ENDOSCOPE]
        self._publisher = self._feed.publisher
        self._on_new_connection = on_new_connection
        self._handed_over = False
        self._producers: dict[Track, Producer] = {
            track: router.feeds[feed].producers[kind] for track, (feed, kind) in _TAPS.items()
        }
        self._taps: dict[Track, Consumer] = {}
        try:
            for track, (feed, kind) in _TAPS.items():
                self._taps[track] = router.tap(feed, kind, f"recorder {entry.seq}")
        except BaseException:
            self._stop_taps()
            raise
        loop = asyncio.get_running_loop()

        def writer_failed(message: str) -> None:  # called in the writer thread
            loop.call_soon_threadsafe(on_write_error, message)

        self.writer = SegmentWriter(path, codec, writer_failed, config.queue_frames)
        self.overflows = 0
        self.dropped = [0, 0, 0]
        self.realignments = 0
        self._video_pts_start: int | None = None
        self._offsets: dict[Track, int] = {}
        self._last_file_pts: list[int | None] = [None, None, None]
        self._early_audio: collections.deque[tuple[Track, av.Packet[Any]]] = collections.deque(
            maxlen=EARLY_AUDIO_FRAMES
        )
        self._start_s: dict[Track, float] = {}
        self._preroll = 0
        self._parameter_sets = b""
        "H.264 parameter sets waiting for the picture they go with (``_access_unit``)."
        self._awaiting_keyframe = False
        self._behind = False
        self._last_keyframe_at = 0.0
        self._last_video_pts: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.writer.start()
        for track in Track:
            self._taps[track].deliver_to(self._taking(track))
        self._tasks = [asyncio.ensure_future(self._request_keyframes())]

    def _taking(self, track: Track) -> Callable[[ForwardedFrame], None]:
        """What ``track``'s tap hands each frame to, in the Producer's call: no task per frame."""

        def take(frame: ForwardedFrame) -> None:
            self._on_packet(track, frame.packet)

        return take

    async def _request_keyframes(self) -> None:
        """Keyframes at least every ``keyframe_interval_s``: clusters and fragments then start
        at one, so the file seeks, and a lost stretch costs at most that much picture."""
        interval = self._config.keyframe_interval_s
        video = self._producers[Track.VIDEO]
        while True:
            await asyncio.sleep(interval / 4)
            if time.monotonic() - self._last_keyframe_at >= interval * 0.9:
                video.request_keyframe()

    def _on_packet(self, track: Track, packet: av.Packet[Any]) -> None:
        pts = packet.pts
        if pts is None or self._handed_over or self._new_connection():
            return
        data = bytes(packet)
        if track is Track.VIDEO and self._codec == "H264":
            data = self._access_unit(data)
        if self._video_pts_start is None:
            if track is not Track.VIDEO:
                # The timeline starts at the first video keyframe, which may arrive after audio
                # captured later than it (a keyframe is big and slow): keep ~1 s to place then.
                self._early_audio.append((track, packet))
                return
            if not self._starts_file(data):
                return
            self._video_pts_start = self.entry.video_pts_start = pts
            self._offsets[track] = -pts
            self._preroll = self._taps[track].frames_dropped  # frames before the first keyframe
            self._submit(track, data, pts)
            early, self._early_audio = self._early_audio, collections.deque()
            for audio_track, audio in early:
                self._on_packet(audio_track, audio)
            return
        if data:
            self._submit(track, data, pts)

    def _access_unit(self, data: bytes) -> bytes:
        """H.264 SPS and PPS sent in an access unit of their own (some hardware encoders do) go
        in front of the next picture, which is returned; until then ``b""``. An MP4 sample is
        one picture, and the file's header is built from its first keyframe's SPS and PPS."""
        if not h264_has_picture(data):
            kept = self._parameter_sets if len(self._parameter_sets) < HELD_BYTES else b""
            self._parameter_sets = kept + data
            return b""
        data, self._parameter_sets = self._parameter_sets + data, b""
        return data

    def _starts_file(self, data: bytes) -> bool:
        """Whether the file can start with this video frame: a keyframe, and for H.264 one with
        its SPS and PPS (without them the MP4's header is empty and the file does not open)."""
        if not data or not is_keyframe(self._codec, data):
            return False
        if self._codec == "H264" and not h264_parameter_sets(data):
            self._producers[Track.VIDEO].request_keyframe()
            return False
        return True

    def _submit(self, track: Track, data: bytes, pts: int) -> None:
        offset = self._offsets[track] if track is Track.VIDEO else self._audio_offset(track)
        if offset is None:
            return
        file_pts = pts + offset
        last = self._last_file_pts[track]
        if file_pts < 0 or (last is not None and file_pts <= last):
            if last is not None:
                self.dropped[track] += 1  # overlapped by a re-alignment
            return
        keyframe = track is not Track.VIDEO or is_keyframe(self._codec, data)
        if track is Track.VIDEO:
            if keyframe:
                self._last_keyframe_at = time.monotonic()
            elif self._awaiting_keyframe:
                self.dropped[track] += 1
                return
            self._awaiting_keyframe = False
            self._last_video_pts = pts
        if self.writer.submit(track, data, file_pts, keyframe):
            self._last_file_pts[track] = file_pts
            self._start_s.setdefault(track, file_pts / track.clock_rate)
            if self._behind:
                self._behind = False
                logger.info("Recorder(%s) writer caught up", self._label)
            return
        self.dropped[track] += 1
        if track is Track.VIDEO:
            self._awaiting_keyframe = True  # a delta frame without its predecessor is garbage
            self._producers[track].request_keyframe()
        if not self._behind:
            self._behind = True
            self.overflows += 1
            logger.warning(
                "Recorder(%s) writer is behind (%d frames queued): dropping frames",
                self._label,
                self.writer.backlog,
            )

    def _new_connection(self) -> bool:
        """The clinic reconnected without the feed going offline (a reloaded page replaces its
        own connection): this segment ends here, the manager starts the next one. The frames
        in between are not written; the next segment starts at the new connection's keyframe."""
        publisher = self._feed.publisher
        if publisher is None or publisher is self._publisher:
            return False
        if self._publisher is None:
            self._publisher = publisher
            return False
        self._handed_over = True
        logger.info("Recorder(%s) the clinic reconnected: next segment", self._label)
        self._on_new_connection()
        return True

    def _audio_offset(self, track: Track) -> int | None:
        """``file_pts - relay_pts`` for an audio track: where its frames sit on the video's
        timeline, by both Producers' arrival mappings. Those mappings only get better (a lower
        least delay is found, e.g. once an encoder that lagged at start catches up), so the
        offset is re-evaluated on every frame and moved when it is more than
        ``REALIGN_S`` off: a short gap, or a few frames dropped, instead of a constant skew."""
        audio = self._producers[track].clock_origin
        video = self._producers[Track.VIDEO].clock_origin
        applied = self._offsets.get(track)
        if audio is None or video is None or self._video_pts_start is None:
            return applied
        rate = track.clock_rate
        wanted = round((audio - video - self._video_pts_start / 90_000) * rate)
        if applied is None or abs(wanted - applied) > REALIGN_S * rate:
            if applied is not None:
                self.realignments += 1
                logger.info(
                    "Recorder(%s) %s re-aligned by %+.0f ms",
                    self._label,
                    track.label,
                    (wanted - applied) / rate * 1000,
                )
            self._offsets[track] = applied = wanted
        return applied

    def _started_at(self) -> float | None:
        """Arrival time (monotonic) of the first video frame, by the final clock mapping."""
        origin = self._producers[Track.VIDEO].clock_origin
        if origin is None or self._video_pts_start is None:
            return None
        return origin + self._video_pts_start / 90_000

    def _stop_taps(self) -> None:
        for tap in self._taps.values():
            tap.stop()

    def abandon(self) -> None:
        """Never started: release the taps (no file was made)."""
        self._stop_taps()

    def progress(self) -> SegmentProgress:
        """How this segment is doing while it records, read by ``/metrics``: cheap counters."""
        tap_drops = sum(tap.frames_dropped for tap in self._taps.values()) - self._preroll
        return SegmentProgress(
            self.writer.muxed_bytes, sum(self.dropped) + max(0, tap_drops), self.writer.backlog
        )

    async def stop(self, wall_offset: float) -> Segment:
        """Stop taking frames, let the writer finish the file, fill in the segment entry."""
        consumer_drops = [tap.frames_dropped for tap in self._taps.values()]
        self._stop_taps()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        result = await asyncio.wrap_future(self.writer.close())
        consumer_drops[Track.VIDEO] = max(0, consumer_drops[Track.VIDEO] - self._preroll)
        self._fill(result, consumer_drops, wall_offset)
        return self.entry

    def _fill(self, result: WriterResult, consumer_drops: list[int], wall_offset: float) -> None:
        entry = self.entry
        started = self._started_at()
        if started is not None:
            entry.started_at = utc_iso(started + wall_offset)
        duration = round(result.duration_s(), 3)
        entry.duration_s = duration
        entry.ended_at = utc_iso(parse_utc_iso(entry.started_at) + duration)
        if self._last_video_pts is not None:
            entry.video_pts_end = self._last_video_pts
        if result.dimensions:
            entry.width, entry.height = result.dimensions
        entry.video_kbps = round(result.video_bytes * 8 / 1000 / duration, 1) if duration else None
        entry.frames = result.packets[Track.VIDEO]
        entry.audio_packets = {t.label: result.packets[t] for t in (Track.AUDIO, Track.TALKBACK)}
        entry.track_start_s = {t.label: _round(self._start_s.get(t)) for t in Track}
        entry.dropped = {
            t.label: self.dropped[t] + result.dropped[t] + consumer_drops[t] for t in Track
        }
        entry.bytes = result.bytes
        entry.sha256 = result.sha256
        entry.writer_cpu_s = round(result.cpu_s, 4)
        entry.error = result.error
        entry.status = SegmentStatus.INTERRUPTED if result.error else SegmentStatus.CLOSED


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
