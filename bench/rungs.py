"""CPU per rung of the viewer quality ladder, in one run.

The 1280×720 30 fps stamped test pattern, encoded once like a clinic (~2 Mbit/s), is fed in real
time (on the event loop, like the receiver tap) to a real ``relay.ladder.Ladder``; each rendition
runs on its own with one viewer of its Producer: the annotated original (today's burn-in, with
``--marks`` marks: the baseline), then the plain 540p and 360p rungs. Per codec and rendition:
output size, kbit/s achieved against the rung's target, the worker thread's CPU (thread time /
wall, % of one core), CPU ms per encoded frame (decode, scale, draw, encode; the decode of skipped
frames included), and the frames skipped as stale. Targets (issue 9): a 540p VP8 rung ≤ 35 % of a
core, a 360p rung ≤ 20 %.

Thread CPU time is robust to other load on the machine; frame rate and skipped frames are not
(an oversubscribed machine starves the worker, which then skips stale frames by design).

    python -m bench.rungs [--seconds 20] [--codec VP8|H264|both] [--marks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os

from relay.ladder import Ladder, Quality

from .burnin import FPS, RenditionRun, bench_source, measure, print_table, source_stream

RENDITIONS = ((True, Quality.ORIGINAL), (False, Quality.P540), (False, Quality.P360))
"(annotated, quality), the baseline first."


async def run(
    codec: str, stream: list[bytes], annotated: bool, quality: Quality, count: int, seconds: float
) -> RenditionRun:
    """One rendition of a fresh Ladder, measured alone (no other worker competes for a core)."""
    source, board = bench_source(codec, count)
    ladder = Ladder(source, board, "bench")
    ladder.producer(annotated, quality)
    try:
        return await measure(source, ladder.renditions()[(annotated, quality)], stream, seconds)
    finally:
        await ladder.close()


def row(annotated: bool, quality: Quality, r: RenditionRun, load: float) -> tuple[object, ...]:
    width, height = r.size or (0, 0)
    encoded = max(1, r.frames_out)
    return (
        r.codec,
        f"{'annotated ' if annotated else ''}{quality}",
        f"{width}×{height}",
        round(r.bytes_out * 8 / r.seconds / 1000),
        f"{r.worker_cpu_s / r.seconds * 100:.1f}",
        f"{r.worker_cpu_s * 1000 / encoded:.2f}",
        f"{r.frames_out / r.seconds:.1f}",
        f"{r.skipped} of {r.frames_in}",
        f"{load:.1f}",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--codec", choices=("VP8", "H264", "both"), default="both")
    parser.add_argument("--marks", type=int, default=20, help="marks on the annotated baseline")
    args = parser.parse_args()
    codecs = ("VP8", "H264") if args.codec == "both" else (args.codec,)
    rows = []
    for codec in codecs:
        stream = source_stream(codec)
        for annotated, quality in RENDITIONS:
            result = await run(codec, stream, annotated, quality, args.marks, args.seconds)
            rows.append(row(annotated, quality, result, os.getloadavg()[0]))
    print_table(
        f"Viewer quality ladder: CPU per rung, 1280×720 {FPS} fps in, {args.seconds:g} s each "
        f"(steady state after the first second; annotated: {args.marks} marks)",
        (
            "codec",
            "rendition",
            "output",
            "kbit/s",
            "worker CPU % of a core",
            "CPU ms / frame",
            "fps out",
            "skipped (stale)",
            "load avg",
        ),
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
