"""Annotated export speed: a 2:00 recording at the product's resolution (720p30 VP8 + the clinic's
audio + talk-back, as the recorder writes it) exported with its marks burned in.

The recording holds the 720p30 test pattern (10 s encoded once at ~1.5 Mbit/s, looped) and a
surgeon's busy annotation log: 20 marks drawn one after another (pen strokes streamed as updates
every 50 ms for 1.5 s, as the pages send them), a 10 s freeze, a clear, and 10 marks drawn again.
Each export runs in its own process (``resource`` CPU time of that process); the table gives wall
time, CPU time, × real time (recording seconds per wall second), file size and the mean luma SSIM
of 30 exported frames against the source frames they came from (marks masked out).

    python -m bench.export [--baseline REV] [--presets veryfast superfast] [--keep DIR]

``--baseline main`` also exports with git revision REV's ``recorder/export.py`` (unpacked from
git), in the same run, on the same recording. The ≥ 2× real-time requirement is asserted here
(exit status 1 when this tree's default export is slower), never in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.burnin import marks, print_table
from bench.common import ssim
from bench.recording import FPS, HEIGHT, SOURCE_SECONDS, WIDTH, encoded_opus, encoded_video
from bench.recovery import checkout
from persistence.times import utc_iso
from recorder.log_entry import LogEntry, LogOp
from recorder.manifest import (
    Manifest,
    RecordingStatus,
    Segment,
    SegmentStatus,
    new_recording_id,
    write_manifest,
)
from recorder.writer import SegmentWriter, Track
from relay.codecs import is_keyframe

SECONDS = 120
STARTED = 1_700_000_000.0
REQUIRED_SPEED = 2.0
AFTER = "this tree (after): CRF 20 ultrafast + deblock + CABAC"

RUNNER = """
import json, resource, sys, time
from pathlib import Path
from recorder.annotation_log import read_annotation_log
from recorder.export import ExportSource, export_annotated
from recorder.manifest import read_manifest
from recorder.timeline import build_timeline
directory, output, options = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
manifest = read_manifest(directory)
timeline = build_timeline(read_annotation_log(directory / "annotations.jsonl"), manifest)
sources = [ExportSource(directory / s.file, s.offset_s, s.frames) for s in manifest.segments]
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu, wall = usage.ru_utime + usage.ru_stime, time.monotonic()
result = export_annotated(sources, timeline, output, **options)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": time.monotonic() - wall, "cpu_s": usage.ru_utime + usage.ru_stime - cpu,
                  "frames": result.frames, "bytes": result.bytes, "duration_s": result.duration_s}))
"""


async def make_recording(directory: Path) -> Manifest:
    """The 2:00 segment file, its manifest and the annotation log."""
    directory.mkdir(parents=True)
    video, audio = encoded_video("VP8"), encoded_opus()
    loops = SECONDS // SOURCE_SECONDS
    writer = SegmentWriter(directory / "0001.webm", "VP8", lambda message: None, 1_000_000)
    writer.start()
    for loop in range(loops):
        base = loop * SOURCE_SECONDS
        items = [(n / FPS, Track.VIDEO, d, is_keyframe("VP8", d)) for n, d in enumerate(video)]
        for track in (Track.AUDIO, Track.TALKBACK):
            items += [(n * 0.02, track, d, True) for n, d in enumerate(audio)]
        for t, track, data, keyframe in sorted(items, key=lambda i: (i[0], i[1])):
            rate = 90_000 if track is Track.VIDEO else 48_000
            assert writer.submit(track, data, round((base + t) * rate), keyframe)
    result = await asyncio.wrap_future(writer.close())
    frames = len(video) * loops
    manifest = Manifest(
        recording_id=new_recording_id(STARTED),
        consultation={"id": "bench", "title": "export bench"},
        status=RecordingStatus.COMPLETE,
        started_at=utc_iso(STARTED),
        ended_at=utc_iso(STARTED + SECONDS),
        container="webm",
        mime_type="video/webm",
        video_codec="VP8",
        keyframe_interval_s=2.0,
    )
    manifest.segments.append(
        Segment(
            seq=1,
            file="0001.webm",
            status=SegmentStatus.CLOSED,
            started_at=utc_iso(STARTED),
            ended_at=utc_iso(STARTED + SECONDS),
            offset_s=0.0,
            duration_s=round(result.duration_s(), 3),
            width=WIDTH,
            height=HEIGHT,
            frames=frames,
            bytes=result.bytes,
        )
    )
    write_manifest(directory, manifest)
    lines = [json.dumps(entry.to_json()) for entry in annotation_log()]
    (directory / "annotations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def annotation_log() -> list[LogEntry]:
    """20 marks one after another, a freeze, a clear, 10 marks again (placed by the wall clock)."""
    entries: list[LogEntry] = []

    def log(t: float, op: LogOp, **payload: object) -> None:
        entries.append(LogEntry(op, utc_iso(STARTED + t), None, "surgeon-bench", payload))

    def draw(t: float, annotation: dict[str, object]) -> None:
        points = annotation["points"]
        assert isinstance(points, list)
        steps = 30 if annotation["tool"] == "pen" else 1
        for step in range(steps):
            shown = points[: max(1, len(points) * (step + 1) // steps)]
            op = LogOp.ADD if step == 0 else LogOp.UPDATE
            log(t + step * 0.05, op, annotation={**annotation, "points": shown})

    drawn = [{**m.to_json(), "author": m.author} for m in marks(20)]
    for i, annotation in enumerate(drawn):
        draw(2.0 + 2.5 * i, annotation)
    log(52.0, LogOp.FREEZE, snapshot_id=None)
    log(62.0, LogOp.RESUME, snapshot_id=None)
    log(65.0, LogOp.CLEAR)
    for i, annotation in enumerate(drawn[:10]):
        draw(70.0 + 4.0 * i, {**annotation, "id": f"again{i}"})
    return entries


def export(tree: Path, recording: Path, output: Path, options: dict[str, object]) -> dict:
    """One export in a child process running ``tree``'s code."""
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(recording), str(output), json.dumps(options)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    result["ssim"] = quality(recording / "0001.webm", output)
    return result


def quality(source: Path, exported: Path, samples: int = 30) -> float:
    """Mean SSIM (luma) of every ``SECONDS / samples``-th frame outside the freeze, where the
    export shows the source frame (pixels the marks cover are left out)."""
    step = SECONDS * FPS // samples
    wanted = {n for n in range(0, SECONDS * FPS, step) if not 52 * FPS <= n < 62 * FPS}
    with av.open(str(source)) as a, av.open(str(exported)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=False)
        scores = []
        for n, (x, y) in enumerate(pairs):
            if n in wanted:
                ya, yb = x.to_ndarray()[:HEIGHT], y.to_ndarray()[:HEIGHT]
                unmarked = np.abs(ya.astype(np.int16) - yb.astype(np.int16)) < 40
                scores.append(ssim(ya, yb, unmarked))
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also export with git revision REV")
    parser.add_argument("--presets", nargs="*", default=["veryfast", "superfast"])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep the files")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="endolink-export-"))
    recording = work / "recording"
    started = time.monotonic()
    asyncio.run(make_recording(recording))
    made_s = time.monotonic() - started
    print(f"2:00 recording ({WIDTH}x{HEIGHT}, {FPS} fps) made in {made_s:.0f} s")
    here = Path(__file__).resolve().parent.parent
    runs: list[tuple[str, Path, dict[str, object]]] = []
    if args.baseline:
        runs.append((f"{args.baseline} (before)", checkout(args.baseline, work / "base"), {}))
    runs.append((AFTER, here, {}))
    for preset in args.presets:
        options = {"x264": {"crf": "20", "preset": preset}}
        runs.append((f"this tree, CRF 20 {preset}", here, options))
    rows = []
    speeds = {}
    for label, tree, options in runs:
        result = export(tree, recording, work / f"export-{len(rows)}.mp4", options)
        speed = result["duration_s"] / result["wall_s"]
        speeds[label] = speed
        rows.append(
            (
                label,
                round(result["wall_s"], 1),
                round(result["cpu_s"], 1),
                f"{speed:.2f}×",
                f"{result['bytes'] * 8 / result['duration_s'] / 1e6:.2f}",
                f"{result['ssim']:.4f}",
            )
        )
        print(rows[-1], flush=True)
    header = ("export", "wall s", "CPU s", "× real time", "Mbit/s", "SSIM")
    print_table(f"Export of a {SECONDS} s {WIDTH}x{HEIGHT} recording", header, rows)
    if speeds[AFTER] < REQUIRED_SPEED:
        print(f"FAIL: slower than {REQUIRED_SPEED:g}× real time")
        sys.exit(1)


if __name__ == "__main__":
    main()
