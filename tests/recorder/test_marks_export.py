"""Marks that belong to their picture, in the recording's timeline and the annotated export; the
export's burn-in layer, progress estimate and cancel."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from recorder.annotation_log import read_annotation_log
from recorder.burnin import DRAW_FIRST, BurnIn
from recorder.export import ExportSource, export_annotated
from recorder.jobs import ExportJobs, JobState
from recorder.timeline import build_timeline
from relay.annotations import Annotation
from relay.overlay import draw_yuv420
from relay.rendition import plane_array
from tests.peers import wait_until
from tests.replay_support import Made, at, stroke, write_log

from .test_export import PROBE, SIZE, frames_rgb, is_green
from .test_export import recorded as recorded  # the 3 s recording fixture


def log_with_archive(data: Path, made: Made) -> Path:
    """A stroke at 0.5 s, a new stream session at 1.5 s, the surgeon restores it at 2.5 s."""
    cid = made.manifest.consultation["id"]
    restored = {**stroke(), "updated_at": "2025-01-01T00:00:02.000+00:00"}
    return write_log(
        data,
        cid,
        [
            at(made, 0.5, op="add", by="surgeon-test", annotation=stroke()),
            at(made, 1.5, op="archive", by=None, count=1),
            at(made, 2.5, op="restore", by="surgeon-test", annotations=[restored]),
        ],
    )


async def test_archived_marks_leave_the_timeline_and_the_export_until_restored(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    timeline = build_timeline(read_annotation_log(log_with_archive(data, made)), made.manifest)
    first, back = timeline.marks
    assert (first.start_t, first.end_t, first.end) == (0.5, 1.5, "archive")
    assert (back.start_t, back.end_t) == (2.5, None)
    assert [len(timeline.visible(t)) for t in (1.0, 2.0, 3.0)] == [1, 0, 1]

    output = data / "archive.mp4"
    await asyncio.to_thread(
        export_annotated, [ExportSource(made.segment_path(), 0.0, 90)], timeline, output
    )
    x, y = PROBE
    for t, rgb in frames_rgb(output):
        if 0.55 < t < 1.45 or t > 2.55:
            assert is_green(rgb[y, x]), f"mark missing at {t:.2f} s"
        elif 1.55 < t < 2.45 or t < 0.45:
            assert not is_green(rgb[y, x]), f"archived mark burned in at {t:.2f} s"


def test_the_burn_in_layer_draws_what_direct_drawing_draws() -> None:
    """Frames after the first few of a set of marks are composited from the cached layer: the
    result matches drawing straight into the frame, anti-aliased edges included."""
    width, height = 320, 192
    rng = np.random.default_rng(1)
    source = av.VideoFrame.from_ndarray(
        rng.integers(16, 235, (height * 3 // 2, width), dtype=np.uint8), format="yuv420p"
    )
    marks = tuple(
        Annotation.from_json(stroke(f"m{i}", points=points, color=color), "s", 0.0, None)
        for i, (points, color) in enumerate(
            [([[0.1, 0.2], [0.9, 0.8]], "#00e676"), ([[0.2, 0.8], [0.8, 0.2]], "#ff1744")]
        )
    )
    untouched = source.to_ndarray().copy()
    expected = source.reformat(format="yuv420p")
    planes = [plane_array(p).copy() for p in expected.planes]
    draw_yuv420(planes, marks)
    burn_in = BurnIn(width, height)
    outputs = [burn_in.frame(source, marks) for _ in range(5)]
    assert burn_in.drawn == DRAW_FIRST  # the first frames of the set drawn, then the layer
    for out in outputs:
        for got, want in zip((plane_array(p) for p in out.planes), planes, strict=True):
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 2
    assert burn_in.frame(source, ()) is source  # nothing to draw: the decoded frame itself
    assert np.array_equal(source.to_ndarray(), untouched)  # never drawn on


async def test_a_cancelled_export_stops_removes_its_files_and_leaves_the_recording(
    recorded: tuple[Path, Made],
) -> None:
    data, made = recorded
    timeline = build_timeline(read_annotation_log(log_with_archive(data, made)), made.manifest)
    original = hashlib.sha256(made.segment_path().read_bytes()).hexdigest()
    # A long input (the segment ten times) so the export is still running when cancelled.
    sources = [ExportSource(made.segment_path(), 3.0 * n, 90) for n in range(10)]
    jobs = ExportJobs()
    try:
        job = jobs.start(made.id, made.directory, "surgeon-test", lambda: (sources, timeline))
        assert await wait_until(lambda: job.progress >= 3.0, 30.0), job
        assert job.state is JobState.RUNNING
        assert job.to_json()["eta_s"] is not None and job.to_json()["eta_s"] >= 0
        assert await asyncio.to_thread(jobs.cancel, job)  # bounded: CANCEL_WAIT_S
        assert job.state is JobState.CANCELLED and job.error is None
        exports = made.directory / "exports"
        assert sorted(p.name for p in exports.iterdir()) == [f"{job.id}.json"]
        assert hashlib.sha256(made.segment_path().read_bytes()).hexdigest() == original
        assert await asyncio.to_thread(jobs.cancel, job)  # already over: nothing to do
        again = jobs.start(made.id, made.directory, "surgeon-test", lambda: (sources, timeline))
        assert again.id != job.id  # a cancelled job is not handed back
        assert await asyncio.to_thread(jobs.cancel, again)
    finally:
        await asyncio.to_thread(jobs.close)


async def test_a_queued_export_is_cancelled_at_once_and_not_handed_back(
    recorded: tuple[Path, Made],
) -> None:
    """One worker: a job waiting behind another ends when cancelled, not when its turn comes."""
    data, made = recorded
    timeline = build_timeline(read_annotation_log(log_with_archive(data, made)), made.manifest)
    sources = [ExportSource(made.segment_path(), 3.0 * n, 90) for n in range(10)]
    jobs = ExportJobs()
    try:
        running = jobs.start(made.id, made.directory, "surgeon-test", lambda: (sources, timeline))
        queued = jobs.start("other", made.directory, "surgeon-test", lambda: (sources, timeline))
        assert queued.state is JobState.QUEUED
        started = time.monotonic()
        assert await asyncio.to_thread(jobs.cancel, queued)
        assert time.monotonic() - started < 1.0
        assert queued.state is JobState.CANCELLED
        again = jobs.start("other", made.directory, "surgeon-test", lambda: (sources, timeline))
        assert again.id != queued.id and again.state is JobState.QUEUED
        assert await asyncio.to_thread(jobs.cancel, again)
        assert await asyncio.to_thread(jobs.cancel, running)
        assert running.state is JobState.CANCELLED
    finally:
        await asyncio.to_thread(jobs.close)


async def test_an_anchored_mark_is_exported_where_its_logged_placements_put_it(
    recorded: tuple[Path, Made],
) -> None:
    """Added at 0.5 s on the tissue; the log says it moved down by a quarter of the picture at
    1.5 s and that its place was lost at 2.5 s: the export draws it there, grey when lost."""
    data, made = recorded
    cid = made.manifest.consultation["id"]
    mark = {**stroke(), "anchored": True}

    def moved(t: float, dy: float, lost: bool = False) -> dict[str, Any]:
        placement = {"author": "surgeon-test", "id": "m1", "m": [1, 0, 0, 0, 1, dy]}
        marks = [{**placement, "confidence": 0.2 if lost else 0.9, "lost": lost}]
        return at(made, t, op="placements", by=None, marks=marks)

    log = write_log(
        data,
        cid,
        [
            at(made, 0.5, op="add", by="surgeon-test", annotation=mark),
            moved(0.6, 0.0),
            moved(1.5, 0.25),
            moved(2.5, 0.25, lost=True),
        ],
    )
    timeline = build_timeline(read_annotation_log(log), made.manifest)
    assert [len(timeline.placed_at(t)) for t in (0.55, 1.0, 2.0)] == [1, 1, 1]
    output = data / "anchored.mp4"
    await asyncio.to_thread(
        export_annotated, [ExportSource(made.segment_path(), 0.0, 90)], timeline, output
    )
    x, y = PROBE
    below = y + SIZE[1] // 4
    for t, rgb in frames_rgb(output):
        if 0.65 < t < 1.45:
            assert is_green(rgb[y, x]) and not is_green(rgb[below, x]), f"as drawn at {t:.2f}"
        elif 1.55 < t < 2.45:
            assert is_green(rgb[below, x]) and not is_green(rgb[y, x]), f"moved at {t:.2f}"
        elif t > 2.55:
            r, g, b = (int(c) for c in rgb[below, x])
            assert abs(r - 158) < 30 and abs(g - 158) < 30 and abs(b - 158) < 30, f"grey at {t}"
