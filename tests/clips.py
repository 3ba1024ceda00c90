"""Short media files made by the tests themselves: the test pattern's stamped frames (counter =
frame index) encoded by PyAV, in the containers and codecs a tower may hand ``endolink publish``."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from client.testpattern import TestPatternTrack

ENCODERS = {"VP8": "libvpx", "H264": "libx264"}
SAMPLE_RATE = 48000


def stamped_clip(
    path: Path,
    frames: int,
    codec: str = "VP8",
    fps: Fraction = Fraction(30),
    audio: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """``frames`` 640×360 frames at ``fps`` (counter = index), optionally with a 440 Hz tone as
    long as the video; the container follows ``path``'s suffix (.webm, .mp4, .mkv). ``options``
    go to the encoder (libx264: ``{"profile": "high", "bf": "3"}`` for a High-profile camera)."""
    pattern = TestPatternTrack(640, 360)
    with av.open(str(path), "w") as container:
        video = container.add_stream(ENCODERS[codec], rate=fps, options=options or {})
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.bit_rate = 1_500_000
        sound = container.add_stream("libopus", rate=SAMPLE_RATE) if audio else None
        for i in range(frames):
            frame = pattern.frame(i, 0)
            frame.pts, frame.time_base = i, 1 / fps
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            samples = int(frames / fps * SAMPLE_RATE)
            step = 960
            for start in range(0, samples, step):
                t = (np.arange(step) + start) / SAMPLE_RATE
                pcm = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
                tone = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                tone.sample_rate, tone.pts = SAMPLE_RATE, start
                tone.time_base = Fraction(1, SAMPLE_RATE)
                container.mux(sound.encode(tone))
            container.mux(sound.encode(None))
    return path
