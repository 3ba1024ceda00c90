"""The clock of ``endolink publish``'s sources (client/source.py): timestamps that keep growing
across the passes of a looped file or the reopenings of a live source, and the schedule that
releases a file's frames at their own rate."""

from __future__ import annotations

import fractions
import threading
import time
from typing import TYPE_CHECKING, Any

import av
from aiortc.mediastreams import VIDEO_CLOCK_RATE

if TYPE_CHECKING:
    from client.reconnect import Media

AUDIO_RATE = 48000
AUDIO_FRAME = 960
"Audio goes out as 20 ms of 48 kHz stereo s16, what aiortc's Opus encoder takes."
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
MAX_LATE_S = 0.5
"A file frame this late (slow disk or CPU) moves the schedule instead of a burst to catch up."


class Clock:
    """Timestamps that keep growing across passes and the schedule that releases frames.

    A pass's frames are placed after the end of the previous pass (its last frame plus that
    frame's duration, audio or video whichever ends later); video pts in 90 kHz, audio in samples
    at 48 kHz, both counted from the first timestamp of the source."""

    def __init__(self, paced: bool) -> None:
        self._paced = paced
        self._origin: float | None = None
        self._offset = 0.0
        self._end = 0.0
        self._last_video = -1
        self._step = 0.0
        "A video frame's duration: its own, else the last gap between frames."
        self._next_sample = 0
        self._start: float | None = None
        self._live_start: float | None = None
        "When the source's first timestamp came (a reopened live source continues from it)."

    def _seconds(self, frame: Media, duration: float) -> float:
        if frame.pts is None or frame.time_base is None:
            return self._end + self._offset  # no timestamp: right after the previous frame
        t = float(frame.pts * frame.time_base)
        if self._origin is None:
            self._origin = t
            self._live_start = self._live_start or time.monotonic() - self._offset
        t -= self._origin
        self._end = max(self._end, t + duration)
        return self._offset + t

    def video(self, frame: av.VideoFrame) -> av.VideoFrame:
        own = bool(frame.duration) and frame.time_base is not None
        if frame.duration and frame.time_base is not None:
            self._step = float(frame.duration * frame.time_base)
        seconds = self._seconds(frame, self._step)
        pts = max(round(seconds * VIDEO_CLOCK_RATE), self._last_video + 1)
        if not own and self._last_video >= 0 and pts - self._last_video < VIDEO_CLOCK_RATE:
            self._step = (pts - self._last_video) / VIDEO_CLOCK_RATE
        frame.pts, frame.time_base, self._last_video = pts, VIDEO_TIME_BASE, pts
        # Decoded frames come tagged as keyframes; aiortc's VP8 encoder would honour the tag and
        # send every frame as a keyframe (2–3× the bitrate).
        frame.pict_type = av.video.frame.PictureType.NONE
        return frame

    def audio(self, frame: av.AudioFrame) -> av.AudioFrame:
        seconds = self._seconds(frame, frame.samples / AUDIO_RATE)
        pts = max(round(seconds * AUDIO_RATE), self._next_sample)
        frame.pts, frame.time_base = pts, AUDIO_TIME_BASE
        self._next_sample = pts + frame.samples
        return frame

    def next_pass(self, live: bool) -> None:
        """A file starts again after its end (a clip too short to have a length still moves
        on); a live source that was opened again goes on from now, its timestamps from anew."""
        if live:
            self._origin = None
            self._offset = (time.monotonic() - self._live_start) if self._live_start else 0.0
        else:
            self._offset += max(self._end, 0.001)
        self._end = 0.0

    def packet(self, packet: av.Packet[Any]) -> av.Packet[Any]:
        """A live source's encoded video frame, its pts on the 90 kHz clock from the source's
        first timestamp (not forced to grow: H.264 with B-frames has pts out of decode order)."""
        seconds = self._seconds(packet, 0.0)
        packet.pts, packet.time_base = round(seconds * VIDEO_CLOCK_RATE), VIDEO_TIME_BASE
        return packet

    def wait(self, frame: Media, quit: threading.Event) -> bool:
        """Hold a file's frame until its time (False: asked to quit meanwhile)."""
        if not self._paced or isinstance(frame, av.Packet) or frame.time is None:
            return not quit.is_set()
        now = time.monotonic()
        if self._start is None:
            self._start = now - frame.time
        late = now - (self._start + frame.time)
        if late > MAX_LATE_S:
            self._start += late
        return not quit.wait(max(0.0, -late))
