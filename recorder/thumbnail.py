"""Files derived from a recording for replay, made once and kept beside it: the thumbnail (its first
keyframe, scaled down, as a JPEG) and each segment's talk-back track as an audio-only WebM."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from persistence.files import Sync, move_into_place, write_bytes_atomic

THUMBNAIL = "thumbnail.jpg"
WIDTH = 320
QUALITY = 80


def make_thumbnail(
    sources: list[tuple[Path, float]], target: Path, hidden: Callable[[float], bool]
) -> bool:
    """Write ``target`` from the first decodable keyframe of ``sources`` (each file with its
    offset on the recording clock, in order); a keyframe ``hidden`` at its recording time (filmed
    outside the body: the room, faces) is blurred beyond recognition. Blocking (PyAV, OpenCV,
    disk): run it in a worker thread. False if no file holds a picture yet."""
    for path, offset_s in sources:
        found = _first_keyframe(path)
        if found is None:
            continue
        image, t = found
        height, width = image.shape[:2]
        size = (WIDTH, max(2, round(height * WIDTH / width)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if hidden(offset_s + t):
            small = cv2.resize(cv2.resize(small, (8, 5), interpolation=cv2.INTER_AREA), size)
        ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            continue
        write_bytes_atomic(target, encoded.tobytes(), suffix=".partial", sync=Sync.NONE)
        return True
    return False


def _first_keyframe(path: Path) -> tuple[np.ndarray, float] | None:
    with contextlib.suppress(av.FFmpegError, OSError, ValueError, IndexError):
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                return frame.to_ndarray(format="bgr24"), float(frame.time or 0.0)
    return None


TALKBACK_TITLE = "talkback"


def talkback_filename(seq: int) -> str:
    return f"talkback-{seq:03d}.webm"


def extract_talkback(source: Path, target: Path) -> bool:
    """Stream-copy a segment's talk-back track (the surgeon's microphone, track 2: a ``<video>``
    element plays only the default audio track) into an audio-only WebM, timestamps unchanged so
    it lines up with the video's ``currentTime``. No re-encode: milliseconds. Blocking: run it in
    a worker thread. False (and no file) when the track holds no packet."""
    partial = target.with_name(target.name + ".partial")
    packets = 0
    try:
        with av.open(str(source)) as container:
            tracks = [
                s for s in container.streams.audio if s.metadata.get("title") == TALKBACK_TITLE
            ]
            if not tracks and len(container.streams.audio) >= 2:
                tracks = [container.streams.audio[1]]  # files without titles: the track order
            if not tracks:
                return False
            with av.open(str(partial), "w", format="webm") as output:
                stream = output.add_stream_from_template(tracks[0])
                for packet in container.demux(tracks[0]):
                    if packet.dts is None:
                        continue  # the demuxer's end-of-stream marker
                    packet.stream = stream
                    output.mux(packet)
                    packets += 1
        if packets:
            move_into_place(partial, target, sync=Sync.NONE)
        return packets > 0
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
