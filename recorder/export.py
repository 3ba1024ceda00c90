"""Annotated export: a recording re-encoded as one H.264 MP4 with the marks burned in.

Every segment file is decoded (PyAV), each video frame gets the marks visible at its recording time
drawn into it (``relay/overlay.py``, the live burn-in's drawing, on the 4:2:0 planes), and is
encoded with libx264 (yuv420p, CRF 20, fast settings: ``X264_OPTIONS``) into an MP4 whose index sits
in front (``+faststart``: it plays while downloading). The clinic's microphone and the surgeon's
talk-back are decoded and mixed into one AAC track (Opus in MP4 is not what most players expect, and
a second track is one most players never play). During a freeze the picture holds the frame shown
when the surgeon froze it (the live rendition's rule), with the marks drawn during the freeze.
Anchored marks are drawn where the tracker put them live (the log's ``placements``, the newest
not newer than the picture shown: ``Timeline.placed_at``), through ``relay.overlay.placed`` as the
live burn-in does, grey where it had lost them.

Spans filmed outside the body (``timeline.out_of_body``, the privacy guard's) are blurred
(``recorder/privacy_spans.py``) unless ``include_out_of_body``: blurred rather than cut, so the
export keeps the recording's timing, its sound and the marks drawn meanwhile.

Segments are joined end to end (the time a publisher was away is not reproduced as black video);
each segment's marks are placed with its own ``offset_s`` on the recording clock.

Speed (docs/benchmarks.md, ``python -m bench.export``): frames without marks go to the encoder
as decoded, marks that stay on screen are drawn once and composited (``recorder/burnin.py``), the
decoder and the encoder use both cores.

Blocking and CPU-heavy: ``recorder/jobs.py`` runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from persistence.files import Sync, move_into_place
from relay.overlay import placed

from .burnin import BurnIn
from .privacy_spans import blurred, covered
from .timeline import FreezeSpan, Timeline

VIDEO_TIME_BASE = Fraction(1, 90_000)
AUDIO_RATE = 48_000
AAC_FRAME = 1024
AUDIO_SETTLE_S = 2.0
"Audio older than this behind the newest demuxed packet is final: mixed, encoded, written."
X264_OPTIONS = {"crf": "20", "preset": "ultrafast", "x264-params": "deblock=1,0:cabac=1"}
"""CRF 20 keeps mucosal texture and the marks' edges visually lossless at 720p. ``ultrafast``
with its two costly omissions put back — the in-loop deblocking filter (without it flat, dark
areas turn blocky) and CABAC (~20 % smaller files) — costs ~11 ms of CPU per 720p frame against
~15 for ``superfast`` and ~25 for ``veryfast`` (the old setting), at the same SSIM to the source
(0.985; docs/benchmarks.md). The files are larger (~4.8 against ~3.3 Mbit/s): fine for a
download, and what buys the ≥ 2× real-time export on two cores."""
THREADS = 2
"Decoder and encoder threads each: the machine's two cores (the job runs at a lower priority)."


class ExportCancelled(Exception):
    pass


@dataclass(frozen=True)
class ExportSource:
    """One segment file and where its time 0 sits on the recording clock."""

    path: Path
    offset_s: float
    frames: int = 0
    "Video frames the manifest counted (for progress; 0 if unknown)."


@dataclass
class ExportResult:
    frames: int = 0
    audio_samples: int = 0
    duration_s: float = 0.0
    bytes: int = 0
    width: int = 0
    height: int = 0


class _Mixer:
    """Sums stereo float audio placed by sample position; hands out finished stretches."""

    def __init__(self) -> None:
        self.base = 0
        self.buffer = np.zeros((2, 0), np.float32)

    def add(self, start: int, samples: np.ndarray) -> None:
        if start < self.base:  # already written out (it came too late): drop the overlap
            samples = samples[:, self.base - start :]
            start = self.base
        if samples.shape[1] == 0:
            return
        end = start - self.base + samples.shape[1]
        if end > self.buffer.shape[1]:
            grown = np.zeros((2, end), np.float32)
            grown[:, : self.buffer.shape[1]] = self.buffer
            self.buffer = grown
        self.buffer[:, start - self.base : end] += samples

    def take(self, until: int) -> np.ndarray:
        """Samples from ``base`` up to ``until`` (silence where nothing was added)."""
        count = max(0, until - self.base)
        out = np.zeros((2, count), np.float32)
        have = min(count, self.buffer.shape[1])
        out[:, :have] = self.buffer[:, :have]
        self.buffer = self.buffer[:, have:]
        self.base = until
        return np.clip(out, -1.0, 1.0)


def _stereo(frame: av.AudioFrame, resampler: av.AudioResampler) -> list[tuple[float, np.ndarray]]:
    """(file time, 2 × n float samples) pieces of a decoded frame at 48 kHz stereo."""
    out, start, done = [], float(frame.time or 0.0), 0
    for piece in resampler.resample(frame):
        data = piece.to_ndarray().astype(np.float32).reshape(2, -1)
        out.append((start + done / AUDIO_RATE, data))
        done += data.shape[1]
    return out


def _first_size(sources: Sequence[ExportSource]) -> tuple[int, int]:
    for source in sources:
        with contextlib.suppress(av.FFmpegError, OSError), av.open(str(source.path)) as container:
            if container.streams.video:
                ctx = container.streams.video[0].codec_context
                if ctx.width and ctx.height:
                    return ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
                for frame in container.decode(video=0):
                    return frame.width - frame.width % 2, frame.height - frame.height % 2
    raise ValueError("the recording has no video to export")


def export_annotated(
    sources: Sequence[ExportSource],
    timeline: Timeline,
    output: Path,
    on_progress: Callable[[float], None] = lambda fraction: None,
    cancelled: Callable[[], bool] = lambda: False,
    x264: Mapping[str, str] = X264_OPTIONS,
    include_out_of_body: bool = False,
) -> ExportResult:
    """Write ``output`` (MP4). Blocking and CPU-heavy: call it in a worker thread. The file
    appears only when complete (written as ``<output>.partial`` first); ``cancelled`` is asked
    before every packet, so a cancel ends the export within one frame's work and leaves no file."""
    width, height = _first_size(sources)
    hidden = [] if include_out_of_body else timeline.out_of_body
    partial = output.with_name(output.name + ".partial")
    expected = sum(s.frames for s in sources)
    result = ExportResult(width=width, height=height)
    out = av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        video = out.add_stream("libx264", rate=30, options=dict(x264))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = VIDEO_TIME_BASE
        video.codec_context.thread_count = THREADS
        burn_in = BurnIn(width, height)
        video.time_base = VIDEO_TIME_BASE
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.bit_rate = 128_000
        mixer = _Mixer()
        written_samples = 0
        last_pts = -1
        shift = 0.0  # output time of the current source's time 0 (segments end to end)

        def write_audio(until_s: float, final: bool = False) -> None:
            nonlocal written_samples
            until = int(until_s * AUDIO_RATE)
            usable = until if final else until - (until - mixer.base) % AAC_FRAME
            if final:
                usable += (-(usable - mixer.base)) % AAC_FRAME  # whole AAC frames
            if usable <= mixer.base:
                return
            samples = mixer.take(usable)
            for i in range(0, samples.shape[1], AAC_FRAME):
                chunk = np.ascontiguousarray(samples[:, i : i + AAC_FRAME])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = AUDIO_RATE
                frame.pts = written_samples
                frame.time_base = Fraction(1, AUDIO_RATE)
                written_samples += chunk.shape[1]
                out.mux(audio.encode(frame))

        for source in sources:
            end_s = shift
            with av.open(str(source.path)) as container:
                streams = [s for s in container.streams if s.type in ("video", "audio")]
                for stream in container.streams.video:
                    stream.thread_type, stream.thread_count = "AUTO", THREADS
                resamplers = {
                    s.index: av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
                    for s in streams
                    if s.type == "audio"
                }
                frozen: tuple[FreezeSpan, av.VideoFrame] | None = None
                for packet in container.demux(streams):
                    if cancelled():
                        raise ExportCancelled
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:
                        continue  # a damaged packet (e.g. the torn end of an interrupted file)
                    for frame in frames:
                        if (
                            not isinstance(frame, av.VideoFrame | av.AudioFrame)
                            or frame.time is None
                        ):
                            continue
                        t_file = float(frame.time)
                        if isinstance(frame, av.AudioFrame):
                            for start_s, data in _stereo(frame, resamplers[packet.stream.index]):
                                mixer.add(int(round((shift + start_s) * AUDIO_RATE)), data)
                                end_s = max(end_s, shift + start_s + data.shape[1] / AUDIO_RATE)
                            continue
                        if not isinstance(frame, av.VideoFrame):
                            continue
                        t_recording = source.offset_s + t_file
                        span = timeline.freeze_at(t_recording)
                        if span is None:
                            frozen = None
                        elif frozen is None or frozen[0] is not span:
                            frozen = (span, frame)
                        shown = frozen[1] if frozen is not None else frame
                        t_shown = source.offset_s + float(shown.time or 0.0)
                        # a freeze may hold a room frame after its span ended
                        if covered(hidden, t_recording) or covered(hidden, t_shown):
                            shown = blurred(shown)
                        marks = placed(timeline.visible(t_recording), timeline.placed_at(t_shown))
                        picture = burn_in.frame(shown, marks)
                        pts = max(last_pts + 1, int(round((shift + t_file) * 90_000)))
                        last_pts = pts
                        picture.pts = pts
                        picture.time_base = VIDEO_TIME_BASE
                        picture.pict_type = av.video.frame.PictureType.NONE
                        out.mux(video.encode(picture))
                        result.frames += 1
                        end_s = max(end_s, shift + t_file + 1 / 30)
                        if expected:
                            on_progress(min(0.99, result.frames / expected))
                    write_audio(max(0.0, end_s - AUDIO_SETTLE_S))
            shift = end_s
        write_audio(shift, final=True)
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
        result.audio_samples = written_samples
        result.duration_s = round(shift, 3)
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    out.close()
    move_into_place(partial, output, sync=Sync.NONE)
    result.bytes = output.stat().st_size
    on_progress(1.0)
    return result
