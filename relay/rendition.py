"""Rendition: the endoscope video re-encoded once for a group of viewers — with the current
annotations burned in (``?annotated=1``), scaled down to a rung of the quality ladder
(``?quality=540p``, ``relay/ladder.py``), or both.

One pipeline per rendition, for viewers that cannot draw overlays (OBS, a monitor at the clinic)
or whose link cannot take the original: a Consumer of the endoscope Producer → ONE worker thread
that decodes every packet (later frames reference earlier ones), scales it (never up), draws the
board's visible marks (normalised coordinates, sized by the frame height: they land at the same
place on any size), encodes once at the rung's bitrate → a second Producer whose Consumers are
the viewers. So fan-out, keyframe gating and keyframe requests are the forwarding path's; a
viewer's keyframe request makes the encoder's next frame a keyframe.

The raw forwarded stream never waits for this: the worker has its own bounded Consumer and a
bounded hand-off. A frame that waited over ``STALE_S`` with a newer one already waiting is decoded
but neither drawn nor encoded (stale: showing it would only add delay; a frame that merely came
in a burst of a busy event loop is still shown, or viewers of a rung lose frame rate), yet one
frame is shown every ``SHOW_EVERY_S`` whatever its age: a starved worker that keeps pace decoding
but stays behind would otherwise skip every frame for as long as the starvation lasts (a rung
just started made its keyframe, then nothing for a second); if the worker cannot even decode at
the source rate, the hand-off is flushed and decoding restarts at the next (requested) keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from .annotations import Annotation, AnnotationBoard
from .codecs import VIDEO_CLOCK_RATE
from .decoded import (
    INBOX_FRAMES,
    JOIN_TIMEOUT_S,
    Inbox,
    decode,
    drain,
    fresh,
    hand_over,
    new_decoder,
)
from .overlay import draw_yuv420, placed
from .producer import Producer

logger = logging.getLogger(__name__)

KEYFRAME_INTERVAL_FRAMES = 60
"A keyframe every ~2 s at 30 fps, besides the ones viewers ask for."
FRAME_RATE = 30
BITRATE_720P = 2_000_000
MIN_BITRATE = 300_000
MAX_BITRATE = 6_000_000
VP8_SPEED = "8"
"""libvpx ``cpu-used`` in realtime mode: higher is faster and coarser. Positive: libvpx picks the
speed itself, to spend at most (16 - 8) / 16 of a frame interval encoding (so its CPU follows the
machine's load)."""
RUNG_VP8_SPEED = "-12"
"""A rung's ``cpu-used``: negative is a fixed speed, so a rung's CPU does not grow on an idle
machine (540p 5.4 ms, 360p 2.4 ms a frame; SSIM 0.958 / 0.935 against 0.959 / 0.945 with ``8``;
docs/benchmarks.md)."""
H264_VBV_S = 0.5
"""libx264's rate buffer, in seconds at the target rate: the stream never exceeds its rate over
any half second, so a rung fits a link only a little wider than it (keyframes included)."""
SCALER = av.video.reformatter.Interpolation.AREA
"""Scaling down: swscale's area average, no aliasing, and as cheap as its fast bilinear (720p to
540p 0.7 ms, to 360p 0.5 ms a frame; bicubic 1.3 / 0.9 ms; docs/benchmarks.md)."""
TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)


@dataclass(frozen=True)
class Rung:
    """A lower rendition's size and rate: ``height`` lines (never more than the source's), the
    source's aspect, ``kbps`` kbit/s of video."""

    height: int
    kbps: int

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The rung's picture for a ``width`` × ``height`` source: never upscaled, the aspect
        kept, both sides even (4:2:0 chroma and the encoders want them so)."""
        if height <= self.height:
            return width, height
        lines = self.height - self.height % 2
        return max(2, round(width * lines / height / 2) * 2), lines


class Rendition:
    """Started on construction (by its first viewer), ``stop()`` after the last. ``board``: burn
    its marks in (None: the plain picture); ``rung``: scale down to it (None: the source's size at
    ~2 Mbit/s per 720p)."""

    def __init__(
        self,
        source: Producer,
        board: AnnotationBoard | None,
        label: str,
        rung: Rung | None = None,
    ) -> None:
        kind = ("annotated " if board is not None else "") + (f"{rung.height}p" if rung else "")
        self.label = f"{label} {kind.strip() or 'original'}"
        self.codec = source.codec
        self.producer = Producer("video", source.codec, self.label)
        self.producer.attach(self._request_keyframe)
        self.frames_decoded = 0
        self.frames_encoded = 0
        self.frames_skipped = 0
        self.resyncs = 0
        self.cpu_s = 0.0
        "CPU time of the worker thread: decoding, drawing and encoding."
        self._board = board
        self.rung = rung
        self.size: tuple[int, int] | None = None
        "The encoded picture's width and height, once the first frame is shown."
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._inbox: Inbox = queue.Queue(INBOX_FRAMES)
        "Packets with their arrival time (``time.monotonic()``), None to stop."
        self._keyframe_wanted = threading.Event()
        # Touched by the worker thread only:
        self._encoder: av.VideoCodecContext | None = None
        self._frozen: tuple[av.VideoFrame, int] | None = None
        "The picture everyone stays on while the board is frozen, with its source pts."
        self._pts = -1
        self._shown_at = 0.0
        self._source = source.consume(f"{self.label} source")
        self._thread = threading.Thread(
            target=self._work, name=f"rendition {self.label}", daemon=True
        )
        self._thread.start()
        self._pump = asyncio.ensure_future(
            hand_over(self._source, self._inbox, self.codec, repr(self), self._resynced)
        )
        logger.info("Rendition(%s) started (%s)", self.label, self.codec)

    def __repr__(self) -> str:
        return (
            f"Rendition({self.label}: {self.frames_decoded} decoded, {self.frames_encoded} "
            f"encoded, {self.frames_skipped} stale skipped, {self.resyncs} resyncs)"
        )

    async def stop(self) -> None:
        """Stop the pipeline and join its thread (off the loop)."""
        if self._stopped:
            return
        self._stopped = True
        self._source.stop()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        drain(self._inbox)
        self._inbox.put_nowait(None)
        await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            logger.warning("Rendition(%s) worker did not stop in time", self.label)
        self.producer.close()
        logger.info(
            "Rendition(%s) stopped: %d decoded, %d encoded, %d stale skipped, %.1f s CPU",
            self.label,
            self.frames_decoded,
            self.frames_encoded,
            self.frames_skipped,
            self.cpu_s,
        )

    # -- event loop side -----------------------------------------------------------------------

    def _resynced(self) -> None:
        self.resyncs += 1

    def _request_keyframe(self) -> bool:
        """The annotated Producer's keyframe requests (viewers joining, PLI/FIR) land here."""
        self._keyframe_wanted.set()
        return True

    def _emit(self, data: bytes, pts: int) -> None:
        if not self._stopped:
            self.producer.on_frame(data, pts)

    # -- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        """Every packet is decoded (later frames reference it); only fresh frames are drawn on
        and encoded: a frame that waited ``STALE_S`` with a newer one waiting is stale."""
        decoder = new_decoder(self.codec)  # on this thread: its CPU is all in ``cpu_s``
        while (item := self._inbox.get()) is not None:
            packet, arrived, *_ = item
            started = time.thread_time()
            try:
                frames = decode(decoder, packet, repr(self), self._request_source_keyframe)
                self.frames_decoded += len(frames)
                for frame in frames:
                    now = time.monotonic()
                    if fresh(now - arrived, now - self._shown_at, not self._inbox.empty()):
                        self._shown_at = now
                        self._show(frame)
                    else:
                        self.frames_skipped += 1
            except Exception:  # one bad frame must not end the rendition
                logger.exception("Rendition(%s) frame failed", self.label)
                self._encoder = None
            self.cpu_s += time.thread_time() - started

    def _request_source_keyframe(self) -> None:
        self._loop.call_soon_threadsafe(self._source.request_keyframe)

    def _show(self, frame: av.VideoFrame) -> None:
        picture = self._scaled(frame)
        if self._board is not None:
            if self._board.freeze is None:
                self._frozen = None
            elif self._frozen is None:
                self._frozen = picture, frame.pts or 0  # until the surgeon resumes
            shown, pts = (picture, frame.pts or 0) if self._frozen is None else self._frozen
            marks = self._board.visible(time.time())
            picture = burned_in(shown, placed(marks, self._board.placed_at(pts)))
        self._pts = max(self._pts + 1, frame.pts or 0)  # encoders need increasing pts
        self._encode(picture, self._pts)

    def _scaled(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The rung's size (a new picture, never the decoder's), or ``frame`` itself."""
        if self.rung is None:
            return frame
        width, height = self.rung.size(frame.width, frame.height)
        if (width, height) == (frame.width, frame.height):
            return frame
        return frame.reformat(width, height, "yuv420p", interpolation=SCALER)

    def _encode(self, picture: av.VideoFrame, pts: int) -> None:
        size = (picture.width, picture.height)
        if self._encoder is None or (self._encoder.width, self._encoder.height) != size:
            # its first frame is a keyframe
            if self.rung is None:
                self._encoder = new_encoder(self.codec, *size)
            else:
                self._encoder = new_encoder(self.codec, *size, self.rung.kbps, RUNG_VP8_SPEED)
            self.size = size
        picture.pts = pts
        picture.time_base = TIME_BASE
        # Encoders honour the input's picture type, and decoded keyframes arrive tagged I: reset
        # it, or every source keyframe (and with some sources every frame) becomes a keyframe.
        wanted = self._keyframe_wanted.is_set()
        self._keyframe_wanted.clear()
        picture.pict_type = (
            av.video.frame.PictureType.I if wanted else av.video.frame.PictureType.NONE
        )
        for packet in self._encoder.encode(picture):
            self.frames_encoded += 1
            self._loop.call_soon_threadsafe(self._emit, bytes(packet), pts)


def burned_in(frame: av.VideoFrame, marks: Sequence[Annotation]) -> av.VideoFrame:
    """A yuv420p copy of ``frame`` with ``marks`` drawn in; ``frame`` itself if there are none
    (a decoded frame's buffer may be the decoder's reference picture: never draw on it)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    if not marks:
        return frame
    picture = av.VideoFrame(frame.width, frame.height, "yuv420p")
    planes = [plane_array(p) for p in picture.planes]
    for target, plane in zip(planes, frame.planes, strict=True):
        np.copyto(target, plane_array(plane))
    draw_yuv420(planes, marks)
    return picture


def new_encoder(
    codec: str, width: int, height: int, kbps: int | None = None, vp8_speed: str = VP8_SPEED
) -> av.VideoCodecContext:
    """A realtime encoder for the consultation's codec: libvpx VP8 or libx264 constrained
    baseline, one frame in, one packet out, held to its rate (CBR / VBV) at ``kbps`` kbit/s, or
    ~2 Mbit/s at 720p scaled by pixel count."""
    if kbps is None:
        bitrate = int(BITRATE_720P * width * height / (1280 * 720))
        bitrate = max(MIN_BITRATE, min(MAX_BITRATE, bitrate))
    else:
        bitrate = kbps * 1000
    encoder = av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = TIME_BASE
    encoder.framerate = Fraction(FRAME_RATE, 1)
    encoder.bit_rate = bitrate
    encoder.gop_size = KEYFRAME_INTERVAL_FRAMES
    encoder.thread_count = 1  # the worker is one core's worth of work at most, on purpose
    if codec == "VP8":
        encoder.qmin = 2
        encoder.qmax = 56
        encoder.options = {
            "deadline": "realtime",
            "cpu-used": vp8_speed,
            "lag-in-frames": "0",
            # minrate = maxrate = bit_rate: CBR with a 1 s buffer, as aiortc's own VP8 encoder.
            "bufsize": str(bitrate),
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "undershoot-pct": "100",
            "overshoot-pct": "15",
            "static-thresh": "1",
        }
    else:
        encoder.profile = "Constrained Baseline"
        encoder.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "maxrate": str(bitrate),
            "bufsize": str(int(bitrate * H264_VBV_S)),
        }
    return encoder


def plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A ``(height, width)`` view of a picture plane (its rows may be padded); writable when the
    frame's buffer is."""
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    view: np.ndarray = rows[:, : plane.width]
    return view
