"""Recordings made for the replay tests without peers: the real SegmentWriter muxes VP8 (or
H.264) frames of the stamped test pattern (and silent Opus) into segment files, with a manifest
and index rows exactly like the recorder's, and an annotation log with marks at known recording
times.

Recording time ``t`` of an op is placed through ``media_pts`` (``VIDEO_PTS_START + t * 90000``),
as the live server logs it, and its ``ts`` agrees with it on the wall clock.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from client.testpattern import TestPatternTrack
from persistence.times import utc_iso
from recorder.annotation_log import FILENAME as ANNOTATION_LOG
from recorder.index import RecordingIndex
from recorder.integrity import chain_genesis, chain_next
from recorder.manifest import (
    Manifest,
    RecordingStatus,
    Segment,
    SegmentStatus,
    new_recording_id,
    recording_dir,
    segment_filename,
    write_manifest,
)
from recorder.storage import consultation_dir
from recorder.writer import CONTAINERS, SegmentWriter, Track

VIDEO_PTS_START = 900_000
FPS = 30
GREEN = "#00e676"


def encoded_pattern(
    encoder: av.CodecContext, frames: int, size: tuple[int, int], keyframe_every: int = FPS
) -> list:
    """(data, keyframe) of ``frames`` frames of the stamped test pattern through ``encoder``."""
    pattern = TestPatternTrack(*size)
    encoder.width, encoder.height = size
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    out = []
    for n in range(frames):
        frame = pattern.frame(n, 0)
        frame.pts = n
        if n % keyframe_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(frame)]
    return out


def encoded_vp8(frames: int, size: tuple[int, int], keyframe_every: int = FPS) -> list:
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.bit_rate = 1_500_000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return encoded_pattern(encoder, frames, size, keyframe_every)


def encoded_h264(frames: int, size: tuple[int, int], profile: str = "high") -> list:
    """Annex-B access units as a tower (``high``) or a browser (``baseline``: WebRTC's
    Constrained Baseline) would send them."""
    encoder = av.CodecContext.create("libx264", "w")
    # x264 signals the least profile its tools fit: ultrafast's are Constrained Baseline's.
    preset = "ultrafast" if profile == "baseline" else "veryfast"
    encoder.options = {"profile": profile, "preset": preset, "tune": "zerolatency"}
    return encoded_pattern(encoder, frames, size)


def encoded_opus(packets: int) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    out: list[bytes] = []
    n = 0
    while len(out) < packets:
        pcm = np.zeros((1, 2 * 960), np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48_000, n * 960
        out += [bytes(p) for p in encoder.encode(frame)]
        n += 1
    return out[:packets]


async def write_segment(
    path: Path,
    seconds: float,
    size: tuple[int, int],
    loop_s: float = 0.0,
    codec: str = "VP8",
    profile: str = "high",
):
    """``loop_s``: encode only that many seconds and repeat them (a long recording made fast)."""
    frames = int(seconds * FPS)
    count = min(frames, int(loop_s * FPS)) if loop_s else frames
    encoded = encoded_vp8(count, size) if codec == "VP8" else encoded_h264(count, size, profile)
    video = [encoded[n % len(encoded)] for n in range(frames)]
    audio = encoded_opus(int(seconds * 50))
    frames = sorted(
        [(n / FPS, Track.VIDEO, d, n * 90_000 // FPS, k) for n, (d, k) in enumerate(video)]
        + [(n * 0.02, Track.AUDIO, d, n * 960, True) for n, d in enumerate(audio)]
        + [(n * 0.02, Track.TALKBACK, d, n * 960, True) for n, d in enumerate(audio)],
        key=lambda f: (f[0], f[1]),
    )
    writer = SegmentWriter(path, codec, on_error=lambda message: None, queue_frames=100_000)
    writer.start()
    for _, track, data, pts, keyframe in frames:
        assert writer.submit(track, data, pts, keyframe)
    result = await asyncio.wrap_future(writer.close())
    assert result.sha256 is not None and result.error is None
    return result, len(video)


@dataclass
class Made:
    manifest: Manifest
    directory: Path
    started: float
    "Unix time of recording time 0."

    @property
    def id(self) -> str:
        return self.manifest.recording_id

    def segment_path(self, seq: int = 1) -> Path:
        return self.directory / self.manifest.segments[seq - 1].file


async def make_recording(
    data_dir: Path,
    index: RecordingIndex,
    cid: str,
    title: str = "Replay test",
    segments: tuple[float, ...] = (4.0,),
    size: tuple[int, int] = (320, 192),
    gap_s: float = 2.0,
    started: float | None = None,
    participants: list[dict[str, Any]] | None = None,
    loop_s: float = 0.0,
    codec: str = "VP8",
    profile: str = "high",
) -> Made:
    """A finished recording of ``len(segments)`` segments (seconds each, ``gap_s`` apart);
    ``codec`` H264 with ``profile`` high or baseline."""
    started = time.time() - 600 if started is None else started
    rid = new_recording_id(started)
    directory = recording_dir(data_dir, rid)
    directory.mkdir(parents=True)
    manifest = Manifest(
        recording_id=rid,
        consultation={"id": cid, "title": title},
        status=RecordingStatus.COMPLETE,
        started_at=utc_iso(started),
        container=CONTAINERS[codec].format,
        mime_type=CONTAINERS[codec].mime_type,
        video_codec=codec,
        keyframe_interval_s=1.0,
        stop_reason="feed-offline",
        participants=participants
        or [
            {"identity": "surgeon-test", "name": "Dr. Test", "role": "surgeon"},
            {"identity": "clinic-test", "name": "", "role": "clinic"},
        ],
    )
    chain = chain_genesis(rid)
    offset = 0.0
    pts = VIDEO_PTS_START
    for seq, seconds in enumerate(segments, start=1):
        name = segment_filename(seq, CONTAINERS[codec].extension)
        result, frames = await write_segment(
            directory / name, seconds, size, loop_s, codec, profile
        )
        chain = chain_next(chain, result.sha256)
        duration = round(result.duration_s(), 3)
        manifest.segments.append(
            Segment(
                seq=seq,
                file=name,
                status=SegmentStatus.CLOSED,
                started_at=utc_iso(started + offset),
                ended_at=utc_iso(started + offset + duration),
                offset_s=round(offset, 3),
                duration_s=duration,
                publisher="clinic-test",
                video_pts_start=pts,
                video_pts_end=pts + (frames - 1) * 90_000 // FPS,
                width=size[0],
                height=size[1],
                frames=result.packets[Track.VIDEO],
                audio_packets={
                    "audio": result.packets[Track.AUDIO],
                    "talkback": result.packets[Track.TALKBACK],
                },
                bytes=result.bytes,
                sha256=result.sha256,
                chain=chain,
            )
        )
        offset += duration + gap_s
        pts += int((duration + gap_s) * 90_000)
    last = manifest.segments[-1]
    manifest.ended_at = last.ended_at
    write_manifest(directory, manifest)
    await index.save(manifest)
    return Made(manifest, directory, started)


def at(made: Made, t: float, **entry: Any) -> dict[str, Any]:
    """A log entry for recording time ``t`` (media_pts of that frame, ts on the wall clock)."""
    segment = next(
        s
        for s in reversed(made.manifest.segments)
        if s.offset_s <= t or s is made.manifest.segments[0]
    )
    pts = segment.video_pts_start + round((t - segment.offset_s) * 90_000)
    return {"ts": utc_iso(made.started + t), **entry, "media_pts": pts}


def stroke(
    mark_id: str = "m1",
    author: str = "surgeon-test",
    points: list[list[float]] | None = None,
    color: str = GREEN,
    width: float = 0.03,
    fade_s: float | None = None,
) -> dict[str, Any]:
    return {
        "id": mark_id,
        "tool": "pen",
        "color": color,
        "width": width,
        "points": points or [[0.3, 0.5], [0.7, 0.5]],
        "fade_s": fade_s,
        "author": author,
        "created_at": "2025-01-01T00:00:00.000+00:00",
        "updated_at": "2025-01-01T00:00:00.000+00:00",
        "media_pts": None,
    }


def write_log(data_dir: Path, cid: str, entries: list[dict[str, Any]]) -> Path:
    path = consultation_dir(data_dir, cid) / ANNOTATION_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        for entry in entries:
            file.write(json.dumps(entry) + "\n")
    return path


def ten_second_manifest(*starts_s: int) -> Manifest:
    """A manifest of 10 s segments starting ``starts_s`` seconds into 2025-01-01, each holding
    relay pts 0 .. 900 000 (as after a server restart, when the relay clock starts again)."""
    segments = [
        Segment(
            seq=n,
            file=f"segment-{n:03d}.webm",
            status=SegmentStatus.CLOSED,
            started_at=f"2025-01-01T00:00:{start:02d}.000+00:00",
            ended_at=f"2025-01-01T00:00:{start + 10:02d}.000+00:00",
            offset_s=float(start - starts_s[0]),
            duration_s=10.0,
            video_pts_start=0,
            video_pts_end=900_000,
        )
        for n, start in enumerate(starts_s, 1)
    ]
    return Manifest(
        recording_id="20250101T000000Z-AAAAAAAA",
        consultation={"id": "c", "title": "t"},
        status=RecordingStatus.COMPLETE,
        started_at=segments[0].started_at,
        container="webm",
        mime_type="video/webm",
        video_codec="VP8",
        keyframe_interval_s=1.0,
        segments=segments,
    )
