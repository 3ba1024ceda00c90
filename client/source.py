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
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from client.buffer import FrameBuffer
from client.clock import AUDIO_FRAME, AUDIO_RATE, Clock
from client.options import SourceOptions

logger = logging.getLogger(__name__)

PASSTHROUGH_CODECS = ("h264", "vp8")
"Codecs a consultation may use, so a live source in one of them can be sent without re-encoding."
BASELINE_PROFILES = ("Baseline", "Constrained Baseline")
"H.264 profiles sent as they are: what the session negotiates (profile-level-id 42…)."
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
"A camera or card silent this long counts as gone (then it is opened again)."
BUFFER_S = 2.0
"Frames the reading thread may hand over before the event loop takes them (then the oldest go)."


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
        fps = float(streams.video[0].average_rate or 30) if streams.video else 30.0
        self.video = _SourceTrack(self, "video", round(BUFFER_S * fps)) if streams.video else None
        audio_size = round(BUFFER_S * AUDIO_RATE / AUDIO_FRAME)
        self.audio = _SourceTrack(self, "audio", audio_size) if streams.audio else None
        self.error: str | None = None
        self._loop, self._live = loop, live
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracks = [t for t in (self.video, self.audio) if t is not None]
        self._live_codec: str | None = None
        "A live source's video codec (files are always decoded: aiortc ignores a viewer's"
        " keyframe request for packets, and a file's keyframes are rare)."
        self._unfit: str | None = None
        "Why the live H.264 cannot be sent as it is (None: it can)."
        self._negotiated: str | None = None
        self._said: str | None = None
        self._send_packets: bool | None = False
        "True: video packets go out as they are; False: decoded; None: not known yet (dropped)."
        self._decide()

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
        clock = Clock(paced=not self._live)
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
                    loop.call_soon_threadsafe(track.queue.put, None)

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
            line = self._decide()  # a camera reconfigured meanwhile may send another codec
            if line:
                print(line, flush=True)
            return True
        return False

    def _decide(self) -> str | None:
        """Look at the (re)opened source's video: may it go out as it is? Applied to the
        session's codec if one was negotiated (a line for the console if that changed)."""
        video = self._container.streams.video
        context = video[0].codec_context if self._live and video else None
        self._live_codec = context.name if context is not None else None
        self._unfit = unfit_for_passthrough(context) if context is not None else None
        if self._negotiated is not None:
            return self.negotiated(self._negotiated)
        fit = self._live_codec in PASSTHROUGH_CODECS and self._unfit is None
        self._send_packets = None if fit else False
        return None

    def negotiated(self, codec: str) -> str | None:
        """The session's answer chose ``codec`` for video: send a live source's packets as they
        are if they are in it and fit (see ``unfit_for_passthrough``), decode and let aiortc
        encode otherwise. A line for the person publishing that says which and why, the first
        time and whenever it changes (None otherwise)."""
        if self._live_codec is None:
            return None
        self._negotiated = codec
        if self._live_codec not in PASSTHROUGH_CODECS or codec.lower() != self._live_codec:
            why: str | None = "this consultation's codec"
        else:
            why = self._unfit
        self._send_packets = why is None
        source = self._live_codec.upper()
        if why is None:
            line = f"sending the source's {source} as it is (no re-encoding)"
        else:
            line = f"re-encoding the source's {source} as {codec} ({why})"
        if line == self._said:
            return None
        self._said = line
        return line

    def _with_parameter_sets(self, packet: av.Packet[Any]) -> av.Packet[Any]:
        """An H.264 keyframe with SPS/PPS in front (cameras often give them only in the RTSP
        SDP, which FFmpeg keeps as extradata): a viewer can start decoding at any keyframe."""
        extradata = packet.stream.codec_context.extradata
        if (
            self._live_codec != "h264"
            or not packet.is_keyframe
            or not extradata
            or not extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
            or extradata in (data := bytes(packet))
        ):
            return packet
        framed = av.Packet(extradata + data)
        framed.pts, framed.time_base = packet.pts, packet.time_base
        return framed

    def _one_pass(self, clock: Clock) -> Iterator[Media]:
        """Every frame of one pass (one run of a live source), timestamps set by ``clock``."""
        resampler = av.AudioResampler("s16", "stereo", AUDIO_RATE, AUDIO_FRAME)
        packets = self._container.demux(*self._streams)
        heard = time.monotonic()
        while not self._quit.is_set():
            try:
                packet = next(packets)
                heard = time.monotonic()
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
                if time.monotonic() - heard > READ_TIMEOUT_S:  # a card stuck on "not yet"
                    raise TimeoutError(errno.ETIMEDOUT, "no picture for a while") from exc
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
            loop.call_soon_threadsafe(track.queue.put, frame)


class _SourceTrack(MediaStreamTrack):
    def __init__(self, source: MediaSource, kind: str, size: int) -> None:
        super().__init__()
        self.kind = kind
        self.queue = FrameBuffer(size)
        "Bounded: a starved event loop loses the oldest frames, never memory without end."
        self._source = source

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        self._source.start()
        frame = await self.queue.get()
        if frame is None:
            self.queue.unget(None)
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


def unfit_for_passthrough(context: Any) -> str | None:
    """Why a live stream cannot go out as it is under the Constrained Baseline profile-level-id
    a session negotiates for H.264 (None: it can): another profile (High, Main) or B-frames make
    browsers and hardware decoders stutter or fail, so such a camera is decoded and encoded."""
    if context.name != "h264":
        return None
    faults = []
    if context.profile not in BASELINE_PROFILES:
        faults.append(f"{context.profile or 'unknown'} profile")
    if context.has_b_frames:
        faults.append("B-frames")
    if not faults:
        return None
    return " with ".join(faults) + "; browsers need Constrained Baseline without B-frames"


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
