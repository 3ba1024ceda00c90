"""The annotated export: a recording decoded, the marks drawn on the frames where they were live,
encoded as H.264 MP4 with the audio mixed to AAC; the annotation timeline it draws from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.annotation_log import read_annotation_log
from recorder.export import ExportSource, export_annotated
from recorder.index import RecordingIndex
from recorder.jobs import ExportJob, ExportJobs, JobState
from recorder.log_entry import LogEntry
from recorder.timeline import build_timeline
from signaling.db.store import DB_FILENAME, ConsultationStore
from tests import glyphs
from tests.peers import wait_until
from tests.replay_support import (
    GREEN,
    Made,
    at,
    make_recording,
    stroke,
    ten_second_manifest,
    write_log,
)

from .media import ffprobe

STROKE_T = 1.5
SIZE = (320, 192)
# The stroke runs across the middle: (0.3, 0.5) → (0.7, 0.5), 3 % of the height wide.
PROBE = (SIZE[0] // 2, SIZE[1] // 2)


@pytest.fixture
async def recorded(tmp_path: Path) -> AsyncIterator[tuple[Path, Made]]:
    data = tmp_path / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("export", "VP8", consent_by="Dr. A", recorded_by="t")
    await store.close()
    index = RecordingIndex(data / DB_FILENAME)
    try:
        made = await make_recording(data, index, consultation.id, segments=(3.0,), size=SIZE)
        yield data, made
    finally:
        await index.close()


def is_green(rgb: np.ndarray) -> bool:
    r, g, b = (int(c) for c in rgb)
    return g > 150 and r < 90 and b < 150


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def frames_rgb(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


async def test_the_export_shows_the_stroke_only_from_its_time_on_and_decodes(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    cid = made.manifest.consultation["id"]
    log = write_log(
        data,
        cid,
        [
            at(made, STROKE_T, op="add", by="surgeon-test", annotation=stroke()),
            at(made, 2.5, op="remove", by="surgeon-test", id="m1"),
        ],
    )
    timeline = build_timeline(read_annotation_log(log), made.manifest)
    output = data / "out.mp4"
    progress: list[float] = []
    result = await asyncio.to_thread(
        export_annotated,
        [ExportSource(made.segment_path(), 0.0, made.manifest.segments[0].frames)],
        timeline,
        output,
        progress.append,
    )
    assert result.frames == made.manifest.segments[0].frames == 90
    assert progress[-1] == 1.0 and progress == sorted(progress)

    probe = ffprobe(output)
    assert "mp4" in probe["format"]["format_name"]
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert (streams["video"]["width"], streams["video"]["height"]) == SIZE
    assert streams["audio"]["codec_name"] == "aac"
    assert abs(float(probe["format"]["duration"]) - 3.0) < 0.2
    # faststart: the index (moov) comes before the media (mdat)
    head = output.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < max(head.find(b"mdat"), 4096)

    decoded = frames_rgb(output)
    assert len(decoded) == 90
    x, y = PROBE
    for t, rgb in decoded:
        pixel = rgb[y, x]
        if t < STROKE_T - 0.05 or t > 2.5 + 0.05:
            assert not is_green(pixel), f"stroke visible at {t:.2f} s: {pixel}"
        elif STROKE_T + 0.05 < t < 2.5 - 0.05:
            assert is_green(pixel), f"stroke missing at {t:.2f} s: {pixel}"
    # off the stroke the picture is the recording's, not paint
    assert not any(is_green(rgb[20, 20]) for _, rgb in decoded)


async def test_a_freeze_holds_the_picture_and_marks_still_appear_on_it(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    cid = made.manifest.consultation["id"]
    log = write_log(
        data,
        cid,
        [
            at(made, 1.0, op="freeze", by="surgeon-test", snapshot_id=None),
            at(made, 1.5, op="add", by="surgeon-test", annotation=stroke(fade_s=0.5)),
            at(made, 2.5, op="resume", by="surgeon-test", snapshot_id=None),
        ],
    )
    timeline = build_timeline(read_annotation_log(log), made.manifest)
    assert [(f.start_t, f.end_t) for f in timeline.freezes] == [(1.0, 2.5)]
    (mark,) = timeline.marks
    assert (mark.start_t, mark.end_t, mark.end) == (1.5, 2.0, "fade")
    output = data / "freeze.mp4"
    await asyncio.to_thread(
        export_annotated, [ExportSource(made.segment_path(), 0.0, 90)], timeline, output
    )
    decoded = frames_rgb(output)
    held = [rgb for t, rgb in decoded if 1.05 < t < 1.45]
    assert len(held) > 5
    # the held frame only changes by the encoder's noise; the live picture drifts far more
    held_change = max(difference(held[0], rgb) for rgb in held)
    moving = [rgb for t, rgb in decoded if 0.1 < t < 0.9]
    moving_change = difference(moving[0], moving[-1])
    print(f"held frames differ by {held_change:.2f}, moving ones by {moving_change:.2f}")
    assert held_change < 1.0 < moving_change
    x, y = PROBE
    assert any(is_green(rgb[y, x]) for t, rgb in decoded if 1.55 < t < 1.95)
    assert not any(is_green(rgb[y, x]) for t, rgb in decoded if 2.05 < t)


async def test_jobs_run_in_a_worker_report_progress_and_persist(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    timeline = build_timeline([], made.manifest)
    jobs = ExportJobs()
    try:
        job = jobs.start(
            made.id,
            made.directory,
            "surgeon-test",
            lambda: ([ExportSource(made.segment_path(), 0.0, 90)], timeline),
        )
        # a second request for the same recording joins the running job
        assert jobs.start(made.id, made.directory, "x", lambda: ([], timeline)) is job
        assert await wait_until(lambda: job.state is JobState.DONE, timeout=20), job
        assert job.progress == 100.0 and job.file.is_file() and job.bytes
        loaded = ExportJob.load(job.directory, job.id)
        assert loaded is not None and loaded.state is JobState.DONE
        assert ExportJob.load(job.directory, "../../etc/pa") is None

        failing = jobs.start(made.id, made.directory, "x", lambda: ([], timeline))
        assert failing is not job
        assert await wait_until(lambda: failing.state is JobState.FAILED, timeout=10)
        assert "no video" in (failing.error or "")
    finally:
        jobs.close()


def test_a_pen_stroke_streamed_as_updates_is_stored_as_one_shape_with_point_counts() -> None:
    manifest = ten_second_manifest(0)
    points = [[0.1 + i * 0.01, 0.5] for i in range(20)]
    entries = [
        {
            "ts": "2025-01-01T00:00:01.000+00:00",
            "op": "add",
            "by": "s",
            "media_pts": 90_000,
            "annotation": {**stroke(author="s", points=points[:1])},
        }
    ]
    for n in range(2, 21):
        entries.append(
            {
                "ts": "x",
                "op": "update",
                "by": "s",
                "media_pts": 90_000 + n * 3000,
                "annotation": stroke(author="s", points=points[:n]),
            }
        )
    entries.append(
        {
            "ts": "2025-01-01T00:00:02.000+00:00",
            "op": "update",
            "by": "s",
            "media_pts": 200_000,
            "annotation": stroke(author="s", points=points, color="#ffffff"),
        }
    )
    entries.append(
        {"ts": "2025-01-01T00:00:03.000+00:00", "op": "clear", "by": "s", "media_pts": 270_000}
    )
    entries.append(
        {
            "ts": "2025-01-01T00:00:20.000+00:00",
            "op": "add",
            "by": "s",
            "media_pts": None,
            "annotation": stroke(author="s", mark_id="late"),
        }
    )
    timeline = build_timeline([e for e in map(LogEntry.from_json, entries) if e], manifest)
    (mark,) = timeline.marks  # the add 20 s in lies past the recording's end
    assert len(mark.shapes) == 2 and len(mark.versions) == 21
    assert mark.versions[0] == (1.0, 0, 1) and mark.versions[-2][1:] == (0, 20)
    assert (mark.end, mark.end_t) == ("clear", 3.0)
    assert len(timeline.visible(1.5)[0].mark.points) == 15
    assert timeline.visible(2.5)[0].mark.color == "#ffffff"
    assert timeline.visible(3.0) == [] and timeline.visible(0.9) == []
    assert GREEN == timeline.visible(1.1)[0].mark.color


async def test_the_export_burns_hangul_and_cyrillic_labels_in_as_glyphs(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    cid = made.manifest.consultation["id"]
    label = {**glyphs.text_mark(0.05, 0.6, 0.03, GREEN), "author": "surgeon-test"}
    log = write_log(data, cid, [at(made, 0.5, op="add", by="surgeon-test", annotation=label)])
    timeline = build_timeline(read_annotation_log(log), made.manifest)
    output = data / "label.mp4"
    segment = ExportSource(made.segment_path(), 0.0, made.manifest.segments[0].frames)
    await asyncio.to_thread(export_annotated, [segment], timeline, output, lambda _: None)
    t, rgb = frames_rgb(output)[-1]
    assert t > 1.0
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    found = glyphs.match((g > 150) & (r < 110), 0.05, 0.6, 0.03)
    assert found.on_glyphs > 0.7 and found.off_glyphs < 0.25, found
    assert found.like_text > 0.25 and found.like_text > 2.5 * found.like_fallback, found
