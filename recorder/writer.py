"""SegmentWriter: one segment file, muxed and written by its own thread.

The event loop only hands over encoded frames (``submit``, never blocks); a thread owns the PyAV
container and every disk operation. The frames are remuxed, not re-encoded: VP8 + Opus into WebM,
H.264 + Opus into fragmented MP4, both cut into clusters / fragments of at most
``FRAGMENT_S`` that are flushed to the OS as soon as they close. A ``kill -9`` of the server
therefore loses at most the fragment being filled, and the file up to there plays. The file is
also fsynced about once a second (power loss), and on close its SHA-256 is computed here, off the
loop.

If the thread falls behind, the bounded queue fills and the caller drops frames (it counts and
logs them); the live relay is never held up by the disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from fractions import Fraction
from pathlib import Path

import av
from av.stream import Disposition

from persistence.files import fsync_dir

from .bitstream import h264_parameter_sets, video_dimensions
from .integrity import sha256_file

logger = logging.getLogger(__name__)

FRAGMENT_S = 0.5
"Longest WebM cluster / MP4 fragment: the most a crash of the server can lose."
FSYNC_INTERVAL_S = 1.0
QUEUE_FRAMES = 512
"Frames waiting for the writer thread (~4 s of 720p30 video + two Opus tracks)."
INTERLEAVE_S = 0.1
"The muxer holds a frame at most this long waiting for the other tracks (e.g. silent talk-back)."
OPUS_FRAME = 960
"20 ms at 48 kHz: what WebRTC sends per Opus packet."


class Track(IntEnum):
    """Tracks of every segment file, in file order."""

    VIDEO = 0
    "The endoscope video (clinic)."
    AUDIO = 1
    "The clinic's microphone."
    TALKBACK = 2
    "The surgeon's microphone."

    @property
    def label(self) -> str:
        return ("video", "audio", "talkback")[self]

    @property
    def clock_rate(self) -> int:
        return 90_000 if self is Track.VIDEO else 48_000

    @property
    def time_base(self) -> Fraction:
        """1 / ``clock_rate``, made once instead of a new ``Fraction`` per muxed frame."""
        return _TIME_BASES[self]


_TIME_BASES = {track: Fraction(1, track.clock_rate) for track in Track}


@dataclass(frozen=True)
class ContainerFormat:
    """How one video codec is stored."""

    codec: str
    format: str
    extension: str
    mime_type: str
    options: dict[str, str]


_COMMON_OPTIONS = {
    "flush_packets": "1",  # hand every completed cluster/fragment to the OS at once
    "max_interleave_delta": str(int(INTERLEAVE_S * 1_000_000)),
}
CONTAINERS: dict[str, ContainerFormat] = {
    "VP8": ContainerFormat(
        codec="VP8",
        format="webm",
        extension=".webm",
        mime_type="video/webm",
        options={**_COMMON_OPTIONS, "cluster_time_limit": str(int(FRAGMENT_S * 1000))},
    ),
    "H264": ContainerFormat(
        codec="H264",
        format="mp4",
        extension=".mp4",
        mime_type="video/mp4",
        options={
            **_COMMON_OPTIONS,
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": str(int(FRAGMENT_S * 1_000_000)),
        },
    ),
}
_STREAM_CODECS = {"VP8": "vp8", "H264": "h264"}
_TITLES = {Track.VIDEO: "endoscope", Track.AUDIO: "clinic", Track.TALKBACK: "talkback"}


@dataclass
class WriterResult:
    """What ended up in the file (per track, indexed by ``Track``)."""

    packets: list[int] = field(default_factory=lambda: [0, 0, 0])
    dropped: list[int] = field(default_factory=lambda: [0, 0, 0])
    "Frames the muxer refused (timestamps going backwards, frames before the first keyframe)."
    first_pts: list[int | None] = field(default_factory=lambda: [None, None, None])
    last_pts: list[int | None] = field(default_factory=lambda: [None, None, None])
    "File timestamps, in each track's clock (90 kHz video, 48 kHz audio)."
    video_bytes: int = 0
    muxed_bytes: int = 0
    "Frame bytes of every track muxed so far (read while it records, for ``/metrics``)."
    dimensions: tuple[int, int] | None = None
    bytes: int = 0
    sha256: str | None = None
    cpu_s: float = 0.0
    "CPU time of the writer thread (muxing, writing, fsync; hashing excluded)."
    error: str | None = None
    "Why writing stopped early (a disk error); None when the segment closed normally."

    def duration_s(self) -> float:
        """Media duration: the latest frame's timestamp plus one frame."""
        ends = []
        last_video = self.last_pts[Track.VIDEO]
        if last_video is not None:
            frames = self.packets[Track.VIDEO]
            span = last_video - (self.first_pts[Track.VIDEO] or 0)
            interval = span / (frames - 1) if frames > 1 else 3000
            ends.append((last_video + interval) / 90_000)
        for track in (Track.AUDIO, Track.TALKBACK):
            last = self.last_pts[track]
            if last is not None:
                ends.append((last + OPUS_FRAME) / 48_000)
        return max(ends, default=0.0)


_Item = tuple[Track, bytes, int, bool]


class SegmentWriter:
    """Writes ``path`` from a bounded queue in a thread; ``close()`` returns the result."""

    def __init__(
        self,
        path: Path,
        codec: str,
        on_error: Callable[[str], None],
        queue_frames: int = QUEUE_FRAMES,
    ) -> None:
        self.path = path
        self.container_format = CONTAINERS[codec]
        self._on_error = on_error
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        "Bounded by ``submit``; C-implemented, so handing a frame over costs the loop little."
        self._queue_frames = queue_frames
        self._closing = False
        self._done: concurrent.futures.Future[WriterResult] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"recorder {path.name}", daemon=True)
        # Touched only by the writer thread:
        self._result = WriterResult()
        self._container: av.container.OutputContainer | None = None
        self._streams: list[av.stream.Stream] = []
        self._sync_fd: int | None = None
        self._synced_at = 0.0
        self._failed = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, track: Track, data: bytes, pts: int, keyframe: bool) -> bool:
        """Queue one encoded frame (``pts`` in the file's timeline, the track's clock). Never
        blocks; False when the queue is full (the writer is behind): the frame is not written."""
        if self._queue.qsize() >= self._queue_frames:
            return False
        self._queue.put((track, data, pts, keyframe))
        return True

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def muxed_bytes(self) -> int:
        return self._result.muxed_bytes

    def close(self) -> concurrent.futures.Future[WriterResult]:
        """Write what is queued, finish the file, hash it. Safe to call more than once."""
        if not self._closing:
            self._closing = True
            self._queue.put(None)
        return self._done

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        started = time.thread_time()
        try:
            with self.path.open("xb"):  # never overwrite: a recording file is evidence
                pass
            self._sync_fd = os.open(self.path, os.O_RDONLY)
            self._drain()
        except Exception as exc:  # the disk or the muxer failed: stop writing, keep what exists
            self._fail(exc)
        finally:
            self._finish(started)

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                self._maybe_fsync()
                continue
            if item is None:
                return
            if not self._failed:
                self._write(*item)
                self._maybe_fsync()

    def _write(self, track: Track, data: bytes, pts: int, keyframe: bool) -> None:
        result = self._result
        if self._container is None:
            if track is not Track.VIDEO or not keyframe or not self._open_container(data):
                result.dropped[track] += 1  # nothing plays before the first keyframe
                return
        last = result.last_pts[track]
        if last is not None and pts <= last:
            result.dropped[track] += 1
            return
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = track.time_base
        packet.stream = self._streams[track]
        if keyframe:
            packet.is_keyframe = True
        if track is not Track.VIDEO:
            packet.duration = OPUS_FRAME
        try:
            assert self._container is not None
            self._container.mux(packet)
        except OSError:
            raise  # disk full, I/O error: the segment cannot continue
        except (av.FFmpegError, ValueError) as exc:
            result.dropped[track] += 1
            logger.warning("SegmentWriter(%s) %s frame refused: %s", self.path.name, track, exc)
            return
        result.packets[track] += 1
        result.muxed_bytes += len(data)
        if result.first_pts[track] is None:
            result.first_pts[track] = pts
        result.last_pts[track] = pts
        if track is Track.VIDEO:
            result.video_bytes += len(data)

    def _open_container(self, keyframe: bytes) -> bool:
        """The file starts with this keyframe, or not at all (False). Its H.264 header (avcC:
        profile, level, picture size) is what PyAV's muxer extracts from the first frame's SPS
        and PPS, so a keyframe without them would leave a header that no reader opens."""
        fmt = self.container_format
        dimensions = video_dimensions(fmt.codec, keyframe)
        if dimensions is None or (fmt.codec == "H264" and not h264_parameter_sets(keyframe)):
            logger.warning("SegmentWriter(%s) keyframe without parameter sets", self.path.name)
            return False
        self._result.dimensions = width, height = dimensions
        container = av.open(
            str(self.path), "w", format=fmt.format, container_options=dict(fmt.options)
        )
        video = container.add_mux_stream(_STREAM_CODECS[fmt.codec], width=width, height=height)
        video.time_base = Fraction(1, 90_000)
        streams: list[av.stream.Stream] = [video]
        for _ in (Track.AUDIO, Track.TALKBACK):
            # A codec context only for its parameters (OpusHead); it is never fed a sample.
            streams.append(container.add_stream("libopus", rate=48_000))
        for track, stream in zip(Track, streams, strict=True):
            stream.metadata["title"] = _TITLES[track]
            stream.metadata["handler_name"] = _TITLES[track]
        video.disposition = Disposition.default
        streams[Track.AUDIO].disposition = Disposition.default
        streams[Track.TALKBACK].disposition = Disposition(0)
        self._container = container
        self._streams = streams
        return True

    def _maybe_fsync(self) -> None:
        now = time.monotonic()
        if self._sync_fd is not None and now - self._synced_at >= FSYNC_INTERVAL_S:
            os.fsync(self._sync_fd)
            self._synced_at = now

    def _fail(self, exc: BaseException) -> None:
        if self._failed:
            return
        self._failed = True
        self._result.error = f"{type(exc).__name__}: {exc}"
        logger.error("SegmentWriter(%s) stopped writing: %s", self.path.name, self._result.error)
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._on_error(self._result.error)

    def _finish(self, started: float) -> None:
        result = self._result
        try:
            if self._container is not None:
                try:
                    self._container.close()  # trailer: cues, durations
                except Exception as exc:
                    self._fail(exc)
            if self._sync_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._sync_fd)
                os.close(self._sync_fd)
            fsync_dir(self.path.parent)
            result.cpu_s = time.thread_time() - started
            if self.path.exists():
                result.sha256, result.bytes = sha256_file(self.path)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._done.set_result(result)
