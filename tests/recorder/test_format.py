"""The pieces of the recording format on their own: picture sizes read from the bitstream, the
hash chain, recording ids, the manifest, the writer's bounded queue, and crash recovery of a cut
fragmented MP4 (the WebM case runs end to end in test_crash.py)."""

from __future__ import annotations

import asyncio
import fractions
import json
from pathlib import Path

import av
import numpy as np
import pytest

from client.testpattern import TestPatternTrack
from persistence.times import utc_now_iso
from recorder.bitstream import video_dimensions
from recorder.index import RecordingIndex
from recorder.integrity import chain_genesis, chain_next, chain_of, sha256_file
from recorder.manifest import (
    MANIFEST,
    Manifest,
    RecordingStatus,
    Segment,
    SegmentStatus,
    new_recording_id,
    read_manifest,
    recording_dir,
    valid_recording_id,
    write_manifest,
)
from recorder.recovery import probe_segment, recover_recording
from recorder.verify import verify_recording
from recorder.writer import SegmentWriter, Track
from signaling.db.store import DB_FILENAME, ConsultationStore

from .media import decode, encoded_opus, encoded_vp8, ffprobe


def encoded_h264(frames: int, size: tuple[int, int], profile: str = "baseline") -> list:
    pattern = TestPatternTrack(*size)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = size
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": profile}
    encoder.gop_size = 30
    out = []
    for n in range(frames):
        frame = pattern.frame(n, 0)
        frame.pts = n
        out += [(bytes(p), p.is_keyframe) for p in encoder.encode(frame)]
    return out


@pytest.mark.parametrize(
    ("codec", "size", "profile"),
    [
        ("VP8", (320, 192), None),
        ("VP8", (1280, 720), None),
        ("H264", (1280, 720), "baseline"),
        ("H264", (640, 360), "baseline"),  # 368 coded rows, cropped to 360
        ("H264", (1920, 1088), "high"),
    ],
)
def test_the_picture_size_is_read_from_a_keyframe_without_decoding(
    codec: str, size: tuple[int, int], profile: str | None
) -> None:
    frames = encoded_vp8(1, size) if codec == "VP8" else encoded_h264(1, size, profile or "")
    data, keyframe = frames[0]
    assert keyframe
    assert video_dimensions(codec, data) == size
    assert video_dimensions(codec, b"\x00\x00\x01\x41garbage") is None


def test_the_hash_chain_binds_each_segment_to_its_place_and_its_recording() -> None:
    a, b = "aa" * 32, "bb" * 32
    chain = chain_of("20250101T000000Z-AAAAAAAA", [a, b])
    assert chain[0] == chain_next(chain_genesis("20250101T000000Z-AAAAAAAA"), a)
    assert chain[1] == chain_next(chain[0], b)
    assert chain_of("20250101T000000Z-AAAAAAAA", [b, a])[1] != chain[1]  # order matters
    assert chain_of("20250101T000000Z-BBBBBBBB", [a, b])[1] != chain[1]  # so does the recording


def test_recording_ids_are_checked_before_they_become_paths(tmp_path: Path) -> None:
    rid = new_recording_id()
    assert valid_recording_id(rid)
    assert recording_dir(tmp_path, rid) == tmp_path / "recordings" / rid
    for bad in ("../../etc", "20250101T000000Z-AAAAAAA/", "", None, "x" * 26):
        assert not valid_recording_id(bad)
    with pytest.raises(ValueError):
        recording_dir(tmp_path, "../x")


def test_the_manifest_round_trips_and_a_reader_never_sees_a_half_written_one(
    tmp_path: Path,
) -> None:
    manifest = Manifest(
        recording_id=new_recording_id(),
        consultation={"id": "c1", "title": "t"},
        status=RecordingStatus.RECORDING,
        started_at=utc_now_iso(),
        container="webm",
        mime_type="video/webm",
        video_codec="VP8",
        keyframe_interval_s=2.0,
        segments=[
            Segment(seq=1, file="segment-001.webm", status=SegmentStatus.OPEN, started_at="x")
        ],
    )
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / MANIFEST).write_text('{"format": "endolink-recording", "vers')  # torn by hand
    assert read_manifest(tmp_path) is None


async def test_a_full_writer_queue_refuses_frames_instead_of_blocking(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "s.webm", "VP8", on_error=lambda m: None, queue_frames=3)
    (data, _), *_ = encoded_vp8(1)
    accepted = [writer.submit(Track.VIDEO, data, n * 3000, True) for n in range(4)]
    assert accepted == [True, True, True, False]
    writer.start()
    result = await asyncio.wrap_future(writer.close())
    assert result.packets[Track.VIDEO] == 3 and result.error is None


async def test_a_cut_fragmented_mp4_is_hashed_as_found_and_repaired_beside_the_original(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("crash", "H264", consent_by="Dr. A", recorded_by="t")
    await store.close()
    rid = new_recording_id()
    directory = recording_dir(data, rid)
    directory.mkdir(parents=True)
    writer = SegmentWriter(directory / "segment-001.mp4", "H264", on_error=lambda m: None)
    writer.start()
    video, audio = encoded_h264(90, (640, 360)), encoded_opus(150)
    frames = sorted(
        [(n / 30, Track.VIDEO, d, n * 3000, k) for n, (d, k) in enumerate(video)]
        + [(n / 50, Track.AUDIO, d, n * 960, True) for n, d in enumerate(audio)],
        key=lambda f: f[0],
    )
    for _, track, payload, pts, keyframe in frames:
        assert writer.submit(track, payload, pts, keyframe)
    await asyncio.wrap_future(writer.close())
    path = directory / "segment-001.mp4"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])  # the crash
    cut_sha, cut_size = sha256_file(path)
    manifest = Manifest(
        recording_id=rid,
        consultation={"id": consultation.id, "title": "crash"},
        status=RecordingStatus.RECORDING,
        started_at=utc_now_iso(),
        container="mp4",
        mime_type="video/mp4",
        video_codec="H264",
        keyframe_interval_s=2.0,
        segments=[
            Segment(seq=1, file=path.name, status=SegmentStatus.OPEN, started_at=utc_now_iso())
        ],
    )
    write_manifest(directory, manifest)
    index = RecordingIndex(data / DB_FILENAME)
    try:
        await index.save(manifest)
        (row,) = await index.unfinished()
        recovered = await asyncio.to_thread(recover_recording, data, row)
        await index.save(recovered)
        row = await index.get(rid)
        assert row is not None and await index.unfinished() == []
    finally:
        await index.close()

    (segment,) = recovered.segments
    assert (recovered.status, recovered.stop_reason) == ("interrupted", "crash")
    assert (segment.status, segment.sha256, segment.bytes) == ("interrupted", cut_sha, cut_size)
    assert sha256_file(path) == (cut_sha, cut_size), "recovery must not touch the original"
    assert 1.0 < segment.duration_s < 3.0
    assert segment.repaired is not None
    repaired = directory / segment.repaired.file
    assert repaired.name == "segment-001.repaired.mp4"
    probe = ffprobe(repaired)
    assert abs(float(probe["format"]["duration"]) - segment.duration_s) < 0.2
    decoded = decode(repaired)
    assert decoded.errors == 0 and decoded.counters == list(range(len(decoded.counters)))
    assert probe_segment(repaired).packets[Track.VIDEO] == segment.frames
    check = verify_recording(data, row)
    assert check.ok, check.to_json()
    assert json.loads((directory / MANIFEST).read_text())["status"] == "interrupted"
    assert np.isclose(segment.repaired.duration_s, segment.duration_s, atol=0.2)
