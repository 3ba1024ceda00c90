"""What ``endolink publish`` sends: a file played at its own rate (forever with ``loop``), a V4L2
capture card or an RTSP camera, read by PyAV in a thread of its own (never on the event loop).

Why not aiortc's ``MediaPlayer``: with ``loop`` it starts the timestamps again at 0 on every pass,
so its pacing (by timestamp) stops after the first pass and its reader decodes the file as fast
as it can into an unbounded queue; and it opens a new decoding generator for every frame, so at
the end of a file whose decoder holds frames back (H.264) the decoder is drained twice, raises
``EOFError``, and playback ends instead of looping. Here one thread demuxes and decodes each
pass in one go, keeps the timestamps growing across passes (video 90 kHz, audio 48 kHz, one
clock for both), and releases each frame when its time has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fractions
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import av
from aiortc.mediastreams import VIDEO_CLOCK_RATE, MediaStreamError, MediaStreamTrack

from client.options import SourceOptions

logger = logging.getLogger(__name__)

AUDIO_RATE = 48000
AUDIO_FRAME = 960
"Audio goes out as 20 ms of 48 kHz stereo s16, what aiortc's Opus encoder takes."
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
MAX_LATE_S = 0.5
"A file frame this late (slow disk or CPU) moves the schedule instead of a burst to catch up."
PASSTHROUGH_CODECS = ("h264", "vp8")
"Codecs a consultation may use, so a live source in one of them can be sent without re-encoding."
DEVICE_HINTS = {
    errno.ENOENT: "no such device (is the capture card plugged in? ls /dev/video*)",
    errno.EBUSY: "the device is busy (another program is capturing from it)",
    errno.EACCES: "permission denied (add this user to the video group)",
    errno.ENOTTY: "not a video capture device",
    errno.EINVAL: "the card does not take this size, rate or format (v4l2-ctl --list-formats-ext)",
}
"What to do about a capture card that does not open, for the person at the tower."
REOPEN_S = 1.0
"A live source that went away is tried again this often."
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
"A camera silent this long counts as gone (then it is opened again)."


if TYPE_CHECKING:
    from client.reconnect import Media


class SourceError(Exception):
    """The source cannot be opened or stopped delivering (one readable line)."""


class MediaSource:
    """A file, device or stream with at most one ``video`` and one ``audio`` track.

    ``live`` sources (devices, RTSP) deliver frames as they come; files are paced by their own
    timestamps. ``error`` says why a source ended early (None: the file simply ended)."""

    def __init__(
        self,
        url: str,
        *,
        format: str | None = None,
        options: dict[str, str] | None = None,
        loop: bool = False,
        live: bool = False,
    ) -> None:
        self._url, self._format, self._options = url, format, options or {}
        self._open()
        streams = self._container.streams
        self.video = _SourceTrack(self, "video") if streams.video else None
        self.audio = _SourceTrack(self, "audio") if streams.audio else None
        self.error: str | None = None
        self._loop, self._live = loop, live
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracks = [t for t in (self.video, self.audio) if t is not None]
        video_codec = streams.video[0].codec_context.name if streams.video else None
        self._passthrough = video_codec if live and video_codec in PASSTHROUGH_CODECS else None
        "A live source's codec that can be sent without re-encoding (files are always decoded:"
        " aiortc ignores a viewer's keyframe request for packets, and a file's keyframes are rare)."
        self._send_packets: bool | None = None if self._passthrough else False
        "True: video packets go out as they are; False: decoded; None: not known yet (dropped)."

    def _open(self) -> None:
        try:
            self._container = av.open(
                self._url,
                format=self._format,
                options=self._options,
                timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except (av.FFmpegError, OSError) as exc:
            hint = DEVICE_HINTS.get(exc.errno or 0) if self._format == "v4l2" else None
            raise SourceError(f"cannot open {shown(self._url)}: {hint or _reason(exc)}") from exc
        streams = self._container.streams
        self._streams: list[Any] = [*streams.video[:1], *streams.audio[:1]]

    def start(self) -> None:
        """Start reading (once; the tracks call it on their first ``recv``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run,
                args=(asyncio.get_running_loop(),),
                name="publish-source",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop reading; the thread ends within one read timeout and closes the source."""
        self._quit.set()
        if self._thread is None:
            self._container.close()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = _Clock(paced=not self._live)
        try:
            while not self._quit.is_set():
                try:
                    for frame in self._one_pass(clock):
                        if not clock.wait(frame, self._quit):
                            return
                        self._deliver(loop, frame)
                except (av.FFmpegError, OSError) as exc:
                    if not self._live:
                        raise
                    lost = _reason(exc)
                else:
                    lost = "the stream ended"
                if self._quit.is_set() or not (self._live or self._loop):
                    return
                if self._live:
                    if not self._reopen(lost):
                        return
                else:
                    self._container.seek(0)
                    for stream in self._streams:
                        stream.codec_context.flush_buffers()
                clock.next_pass(live=self._live)
        except (av.FFmpegError, OSError) as exc:
            self.error = _reason(exc)
            logger.warning("the source stopped: %s", self.error)
        except RuntimeError:  # the event loop is gone: nobody to deliver to
            return
        finally:
            self._container.close()
            for track in self._tracks:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(track.queue.put_nowait, None)

    def _reopen(self, reason: str) -> bool:
        """A camera or card that went away is opened again about every second until it is back
        (True) or publishing stops (False): a tower's feed comes back by itself."""
        self._container.close()
        print(f"the source was lost ({reason}) — opening it again every second", flush=True)
        lost_at = time.monotonic()
        while not self._quit.wait(REOPEN_S):
            try:
                self._open()
            except SourceError:
                continue
            print(f"the source is back after {time.monotonic() - lost_at:.1f} s", flush=True)
            return True
        return False

    def negotiated(self, codec: str) -> str | None:
        """The session's answer chose ``codec`` for video: send the source's packets as they are
        if it is theirs, decode and let aiortc encode otherwise. A line to tell the person
        publishing, the first time and whenever it changes (None otherwise)."""
        if self._passthrough is None:
            return None
        send_packets = codec.lower() == self._passthrough
        if send_packets is self._send_packets:
            return None
        self._send_packets = send_packets
        source = self._passthrough.upper()
        if send_packets:
            return f"sending the source's {source} as it is (no re-encoding)"
        return f"re-encoding the source's {source} as {codec} (this consultation's codec)"

    def _with_parameter_sets(self, packet: av.Packet[Any]) -> av.Packet[Any]:
        """An H.264 keyframe with SPS/PPS in front (cameras often give them only in the RTSP
        SDP, which FFmpeg keeps as extradata): a viewer can start decoding at any keyframe."""
        extradata = packet.stream.codec_context.extradata
        if (
            self._passthrough != "h264"
            or not packet.is_keyframe
            or not extradata
            or not extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
            or extradata in (data := bytes(packet))
        ):
            return packet
        framed = av.Packet(extradata + data)
        framed.pts, framed.time_base = packet.pts, packet.time_base
        return framed

    def _one_pass(self, clock: _Clock) -> Iterator[Media]:
        """Every frame of one pass (one run of a live source), timestamps set by ``clock``."""
        resampler = av.AudioResampler("s16", "stereo", AUDIO_RATE, AUDIO_FRAME)
        packets = self._container.demux(*self._streams)
        while not self._quit.is_set():
            try:
                packet = next(packets)
                if packet.stream.type == "video" and self._send_packets is not False:
                    if self._send_packets and packet.size and packet.pts is not None:
                        yield clock.packet(self._with_parameter_sets(packet))
                    continue  # sent as is, or dropped until the first answer names the codec
                decoded = packet.decode()
            except StopIteration:
                return
            except av.error.InvalidDataError:
                continue  # a damaged packet: the decoder resynchronises at the next keyframe
            except av.FFmpegError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                time.sleep(0.01)  # a device with no frame ready yet
                packets = self._container.demux(*self._streams)
                continue
            for frame in decoded:
                if isinstance(frame, av.VideoFrame):
                    yield clock.video(frame)
                elif isinstance(frame, av.AudioFrame):
                    yield from (clock.audio(chunk) for chunk in resampler.resample(frame))

    def _deliver(self, loop: asyncio.AbstractEventLoop, frame: Media) -> None:
        track = self.audio if isinstance(frame, av.AudioFrame) else self.video
        if track is not None:
            loop.call_soon_threadsafe(track.queue.put_nowait, frame)


class _Clock:
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


class _SourceTrack(MediaStreamTrack):
    def __init__(self, source: MediaSource, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self._source = source

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        self._source.start()
        frame = await self.queue.get()
        if frame is None:
            self.queue.put_nowait(None)
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def shown(source: str) -> str:
    """``source`` fit for the console: a camera URL without its user name and password."""
    parts = urlsplit(source)
    if not parts.scheme or "@" not in parts.netloc:
        return source
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _reason(exc: Exception) -> str:
    """FFmpeg's own words without the errno prefix and the repeated file name."""
    if isinstance(exc, (av.FFmpegError, OSError)) and exc.strerror:
        return str(exc.strerror)
    return str(exc)


def open_source(source: str, options: SourceOptions) -> MediaSource:
    """A file, a V4L2 device (``/dev/…``) or an RTSP URL, with a video stream."""
    if source.startswith("/dev/"):
        media = MediaSource(source, format="v4l2", options=options.device(), live=True)
    elif source.startswith(("rtsp://", "rtsps://")):
        rtsp = {"rtsp_transport": options.rtsp_transport, "fflags": "nobuffer"}
        media = MediaSource(source, format="rtsp", options=rtsp, live=True)
    else:
        media = MediaSource(source, loop=options.loop)
    if media.video is None:
        media.stop()
        raise SourceError(f"{shown(source)} has no video stream")
    return media
