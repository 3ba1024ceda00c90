"""Helpers for the recording tests: publishers whose audio says when it was made, and readers that
take a recorded file apart (ffprobe, decoded frame stamps, audio click onsets).

How A/V sync is measured: each video frame carries (in its stamp) the wall-clock time it stands
for; the audio tracks are silent except for a 100 ms tone that starts exactly on every whole
wall-clock second. In the recorded file, ``frame_time - stamp`` is the video's offset from real
time and ``onset_time - whole_second`` is the audio's; their difference is the A/V skew a viewer of
the file sees (positive: the sound comes late).

Both sources stamp the time their RTP timestamps stand for (start + n / rate on the wall clock),
like a camera's or a microphone's capture time; stamping the moment the test process happened to
draw a frame would charge the test publisher's own scheduling lateness to the recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack

from client.testpattern import TestPatternTrack, read_stamp
from client.whip import WhipClient
from tests.peers import new_pc, wait_until
from tests.replay_support import encoded_pattern

FFPROBE = "/usr/bin/ffprobe"
SAMPLE_RATE = 48000
CLICK_S = 0.1


class CapturePatternTrack(TestPatternTrack):
    """The stamped test pattern, each frame stamped with its capture time: the wall-clock moment
    its pts stands for (first frame's time + n / fps), not the moment it was drawn."""

    last_stamp_s: float | None = None
    "The stamp (s) of the newest frame handed to the encoder."

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start, self._wall0 = time.monotonic(), time.time()
        delay = self._start + self.counter / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = self.frame(self.counter, int((self._wall0 + self.counter / self.fps) * 1000))
        frame.pts = int(self.counter * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.counter += 1
        self.last_stamp_s = self._wall0 + (self.counter - 1) / self.fps
        return frame


async def made(track: CapturePatternTrack, frames: int, timeout: float = 15) -> None:
    """Waits until the publisher's pattern made ``frames`` more frames (a loaded box makes them
    more slowly than 30 a second: a length of video is counted in frames, not seconds)."""
    until = track.counter + frames
    assert await wait_until(lambda: track.counter >= until, timeout=timeout)


class ClickTrack(MediaStreamTrack):
    """20 ms audio frames: silence, and a tone during the first ``CLICK_S`` of every wall-clock
    second; sample n stands for the first frame's wall-clock time + n / 48000."""

    kind = "audio"

    def __init__(self, hz: float = 1000.0) -> None:
        super().__init__()
        self._hz = hz
        self._samples = 0
        self._start: float | None = None
        self._wall0 = 0.0

    async def recv(self) -> av.AudioFrame:
        n = int(AUDIO_PTIME * SAMPLE_RATE)
        if self._start is None:
            self._start, self._wall0 = time.monotonic(), time.time()
        delay = self._start + self._samples / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        wall = self._wall0 + (np.arange(n) + self._samples) / SAMPLE_RATE
        tone = np.sin(2 * math.pi * self._hz * wall) * 12000
        pcm = np.where(np.mod(wall, 1.0) < CLICK_S, tone, 0).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._samples += n
        return frame


class EncodedTrack(MediaStreamTrack):
    """Access units encoded before the session (e.g. ``encoded_h264``: a tower's High profile
    or a browser's Constrained Baseline), sent as they are at ``fps``: aiortc packs an
    ``av.Packet`` without re-encoding, so the stream's own SPS reaches the relay. With
    ``separate_parameter_sets`` each keyframe's SPS and PPS go one timestamp ahead, in an access
    unit of their own, as some hardware encoders send them. Ends after the last unit."""

    kind = "video"

    def __init__(
        self, units: list[tuple[bytes, bool]], fps: int = 30, separate_parameter_sets: bool = False
    ) -> None:
        super().__init__()
        self._units = units
        self._fps = fps
        self._separate = separate_parameter_sets
        self._next = 0
        self._pending: list[av.Packet] = []
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self._pending:
            return self._pending.pop()
        if self._next >= len(self._units):
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._next / self._fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data, keyframe = self._units[self._next]
        pts = self._next * 90000 // self._fps + 1
        self._next += 1
        if not (keyframe and self._separate):
            return _packet(data, pts)
        nals = [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01")[1:]]
        sets = [n for n in nals if n[0] & 0x1F in (7, 8)]
        self._pending = [_packet(_annexb(n for n in nals if n not in sets), pts)]
        return _packet(_annexb(sets), pts - 1)


def _annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def _packet(data: bytes, pts: int) -> av.Packet:
    packet = av.Packet(data)
    packet.pts, packet.time_base = pts, fractions.Fraction(1, 90000)
    return packet


@contextlib.asynccontextmanager
async def publishing(
    endpoint: str,
    token: str,
    video: bool | MediaStreamTrack = True,
    hz: float = 1000.0,
    size: tuple[int, int] = (1280, 720),
) -> AsyncIterator[RTCPeerConnection]:
    """A WHIP publisher: the stamped test pattern (or the ``video`` track given; none if
    ``video=False``) and clicks."""
    pc = new_pc()
    if video:
        track = CapturePatternTrack(*size) if video is True else video
        pc.addTransceiver(track, direction="sendonly")
    pc.addTransceiver(ClickTrack(hz), direction="sendonly")
    client = WhipClient(endpoint, token)
    try:
        await client.connect(pc)
        yield pc
    finally:
        with contextlib.suppress(aiohttp.ClientError):  # the server may be dead (crash test)
            await client.close()
        await pc.close()


def ffprobe(path: Path) -> dict:
    """Debian's ffprobe (not PyAV's libraries): an independent reader of the file."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


@dataclass
class Decoded:
    """A recorded file decoded with PyAV."""

    counters: list[int] = field(default_factory=list)
    video_times: list[float] = field(default_factory=list)
    stamps_s: list[float] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    onsets: dict[int, list[float]] = field(default_factory=dict)
    "Audio stream index → file times at which a click starts."
    audio_start: dict[int, float] = field(default_factory=dict)
    errors: int = 0

    @property
    def video_offset_s(self) -> float:
        pairs = zip(self.video_times, self.stamps_s, strict=True)
        return statistics.median(t - s for t, s in pairs)

    def audio_offset_s(self, stream: int) -> float:
        """Median of (onset time - the whole second it marks), using the video offset to know
        which second an onset belongs to (valid while the skew is under half a second)."""
        return statistics.median(
            onset - round(onset - self.video_offset_s) for onset in self.onsets[stream]
        )

    def skew_ms(self, stream: int) -> float:
        """How late the audio of ``stream`` is against the video, in the file (median)."""
        return (self.audio_offset_s(stream) - self.video_offset_s) * 1000

    def skews_ms(self, stream: int) -> list[tuple[float, float]]:
        """(file time, skew in ms) of every click of ``stream``."""
        video = self.video_offset_s
        return [
            (onset, (onset - round(onset - video) - video) * 1000) for onset in self.onsets[stream]
        ]

    @property
    def duration_s(self) -> float:
        return self.video_times[-1] - self.video_times[0] if self.video_times else 0.0


def _unwrap_ms(stamp_ms: int) -> int:
    """The pattern stamps wall-clock ms modulo 2**40 (which is not a whole number of seconds):
    restore the full value, the one closest to now."""
    wrap = 1 << 40
    return stamp_ms + round((time.time() * 1000 - stamp_ms) / wrap) * wrap


def decode(path: Path) -> Decoded:
    result = Decoded()
    with av.open(str(path)) as container:
        audio: dict[int, list[tuple[float, np.ndarray]]] = {}
        for packet in container.demux():
            try:
                frames = packet.decode()
            except av.FFmpegError:
                result.errors += 1
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    counter, wall_ms = read_stamp(frame)
                    result.counters.append(counter)
                    result.video_times.append(float(frame.time))
                    result.stamps_s.append(_unwrap_ms(wall_ms) / 1000)
                    result.sizes.add((frame.width, frame.height))
                elif isinstance(frame, av.AudioFrame) and frame.time is not None:
                    samples = frame.to_ndarray().astype(np.float64)
                    mono = samples.reshape(-1) if frame.format.is_packed else samples[0]
                    if frame.format.is_packed and len(frame.layout.channels) > 1:
                        mono = mono[:: len(frame.layout.channels)]
                    audio.setdefault(packet.stream.index, []).append((float(frame.time), mono))
    for index, chunks in audio.items():
        result.audio_start[index] = chunks[0][0]
        result.onsets[index] = _onsets(chunks)
    return result


def _onsets(chunks: list[tuple[float, np.ndarray]]) -> list[float]:
    """File times where the signal rises out of at least 0.5 s of silence."""
    times = np.concatenate([start + np.arange(len(c)) / SAMPLE_RATE for start, c in chunks])
    level = np.abs(np.concatenate([c for _, c in chunks]))
    loud = np.flatnonzero(level > level.max() * 0.2)
    if loud.size == 0:
        return []
    before = np.concatenate([[times[0]], times[loud[:-1]]])
    quiet = times[loud] - before
    first_is_onset = times[loud[0]] - times[0] >= 0.5
    rising = quiet >= 0.5
    rising[0] = first_is_onset
    return [float(t) for t in times[loud][rising]]


def encoded_vp8(frames: int, size: tuple[int, int] = (320, 192), keyframe_every: int = 15) -> list:
    """(data, keyframe) of ``frames`` VP8 frames of the test pattern, encoded with PyAV."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return encoded_pattern(encoder, frames, size, keyframe_every)


def encoded_opus(packets: int) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = SAMPLE_RATE, "stereo", "s16"
    out: list[bytes] = []
    for n in range(packets + 2):
        pcm = np.zeros((1, 2 * 960), np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, n * 960
        out += [bytes(p) for p in encoder.encode(frame)]
    return out[:packets]
