"""Spans filmed outside the body in exports: the annotated MP4 and the DICOM video blur them by
default and keep them when asked; the recording's files are never changed (checksums)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import av
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragments

from recorder.dicom_export import SIDECAR, export_dicom
from recorder.index import RecordingIndex
from recorder.jobs import JobState
from recorder.library import RecordingLibrary
from recorder.manifest import MANIFEST, OutOfBodySpan, read_manifest, write_manifest
from signaling.db.store import DB_FILENAME, ConsultationStore
from tests.peers import wait_until
from tests.replay_support import Made, make_recording

from .test_dicom import PATIENT

SIZE = (320, 192)
SPAN = (1.0, 2.0)


class World:
    def __init__(self, data: Path, index: RecordingIndex, made: Made) -> None:
        self.data, self.index, self.made = data, index, made
        self.library = RecordingLibrary(data, index)

    def checksums(self) -> dict[str, str]:
        return {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(self.made.directory.iterdir())
            if path.is_file()
        }


@pytest.fixture(params=["VP8", "H264"])
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    data = tmp_path / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("privacy", request.param, consent_by="A", recorded_by="t")
    await store.close()
    index = RecordingIndex(data / DB_FILENAME)
    made = await make_recording(
        data, index, consultation.id, segments=(3.0,), size=SIZE, codec=request.param
    )
    made.manifest.out_of_body = [OutOfBodySpan(*SPAN)]
    write_manifest(made.directory, made.manifest)
    world = World(data, index, made)
    try:
        yield world
    finally:
        await world.library.close()
        await index.close()


def sharpness(frame: av.VideoFrame) -> float:
    """Variance of the Laplacian: the test pattern's edges score high, a blurred frame ~0."""
    gray = frame.to_ndarray(format="gray")
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def sharpness_by_time(path: Path) -> list[tuple[float, float]]:
    with av.open(str(path)) as container:
        return [(float(f.time or 0.0), sharpness(f)) for f in container.decode(video=0)]


def assert_blurred_in_span(frames: list[tuple[float, float]], blurred: bool) -> None:
    inside = [s for t, s in frames if SPAN[0] + 0.05 < t < SPAN[1] - 0.05]
    outside = [s for t, s in frames if t < SPAN[0] - 0.05 or t > SPAN[1] + 0.05]
    assert len(inside) >= 25 and len(outside) >= 50
    sharp = float(np.median(outside))
    if blurred:
        assert max(inside) < 0.1 * sharp, (max(inside), sharp)
    else:
        assert min(inside) > 0.5 * sharp, (min(inside), sharp)
    assert min(outside) > 0.3 * sharp  # only the span is touched


@pytest.mark.parametrize("include", [False, True])
async def test_the_annotated_export_blurs_the_span_unless_asked_and_leaves_the_files(
    world: World, include: bool
) -> None:
    before = world.checksums()
    row = await world.library.recording(world.made.id)
    job = world.library.start_export(row, "surgeon-test", include_out_of_body=include)
    await wait_until(lambda: job.state in (JobState.DONE, JobState.FAILED), timeout=60)
    assert job.state is JobState.DONE, job.error
    frames = sharpness_by_time(job.file)
    assert len(frames) == 90  # blurred, not cut: the timing is the recording's
    assert_blurred_in_span(frames, blurred=not include)
    assert world.checksums() == before


async def test_the_dicom_video_blurs_the_span_unless_asked_and_the_sidecar_lists_it(
    world: World, tmp_path: Path
) -> None:
    before = world.checksums()
    row = await world.library.recording(world.made.id)
    for include in (False, True):
        out = tmp_path / f"dicom-{include}"
        plan = world.library.dicom_plan(row, PATIENT, [], False, "UTC", include)
        result = await asyncio.to_thread(export_dicom, plan, out)
        (video,) = [f for f in result.files if f.parent.name == "video"]
        fragments = list(generate_fragments(pydicom.dcmread(video).PixelData))
        mp4 = tmp_path / f"embedded-{include}.mp4"
        mp4.write_bytes(fragments[1])
        frames = sharpness_by_time(mp4)
        assert len(frames) == 90
        assert_blurred_in_span(frames, blurred=not include)
        sidecar = json.loads((out / SIDECAR).read_text())
        assert sidecar["out_of_body"] == [{"start_s": SPAN[0], "end_s": SPAN[1]}]
        assert sidecar["out_of_body_blurred"] is (not include)
    assert world.checksums() == before


def test_a_manifest_without_spans_reads_and_one_with_them_round_trips(tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    directory.mkdir()
    base = {
        "format": "endolink-recording",
        "recording_id": "20250131T091502Z-Ab3dE_9x",
        "consultation": {"id": "c", "title": None},
        "status": "complete",
        "started_at": "2025-01-31T09:15:02.000+00:00",
        "container": "webm",
        "mime_type": "video/webm",
        "video": {"codec": "VP8"},
        "keyframe_interval_s": 2.0,
    }
    (directory / MANIFEST).write_text(json.dumps(base))
    old = read_manifest(directory)
    assert old is not None and old.out_of_body == []
    old.out_of_body = [OutOfBodySpan(1.25, 3.5), OutOfBodySpan(9.0, None)]
    write_manifest(directory, old)
    written = json.loads((directory / MANIFEST).read_text())
    assert written["out_of_body"] == [
        {"start_s": 1.25, "end_s": 3.5},
        {"start_s": 9.0, "end_s": None},
    ]
    again = read_manifest(directory)
    assert again is not None and again.out_of_body == old.out_of_body
