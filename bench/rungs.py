"""CPU per rung of the viewer quality ladder, in one run.

The 1280×720 30 fps stamped test pattern, encoded once like a clinic (~2 Mbit/s), is fed (on the
event loop, like the receiver tap) to a real ``relay.ladder.Ladder``; each rendition runs on its
own with one viewer of its Producer: the annotated original (today's burn-in, with ``--marks``
marks: the baseline), then the plain 540p and 360p rungs.

1. Lockstep (``--lockstep`` frames): each frame is handed over only once the worker is done with
   the previous one, so none is skipped: CPU ms per frame (decode, scale, draw, encode), what
   that is at 30 fps in % of one core, and kbit/s at 30 fps against the rung's target — the cost
   of a rung at full rate, which an oversubscribed machine cannot show in real time.
2. Real time (``--seconds``, at 30 fps): the worker thread's CPU (thread time / wall), frames out,
   frames skipped as stale (a starved worker skips them by design), kbit/s.

Targets (issue 9): a 540p VP8 rung ≤ 35 % of a core, a 360p rung ≤ 20 %.

    python -m bench.rungs [--seconds 20] [--lockstep 600] [--codec VP8|H264|both] [--marks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass

from relay.ladder import Ladder, Quality
from relay.producer import Producer
from relay.rendition import Rendition

from .burnin import FPS, RenditionRun, bench_source, measure, print_table, source_stream

RENDITIONS = ((True, Quality.ORIGINAL), (False, Quality.P540), (False, Quality.P360))
"(annotated, quality), the baseline first."


LOCKSTEP_TIMEOUT_S = 5.0
"Longest wait for the worker to finish one frame in lockstep."


@dataclass
class Lockstep:
    frames: int
    worker_cpu_s: float
    bytes_out: int


async def run(
    codec: str,
    stream: list[bytes],
    annotated: bool,
    quality: Quality,
    args: argparse.Namespace,
) -> tuple[RenditionRun, Lockstep]:
    """One rendition of a fresh Ladder, measured alone (no other worker competes for a core):
    in lockstep, then in real time (a real-time backlog would skew the lockstep count)."""
    source, board = bench_source(codec, args.marks)
    ladder = Ladder(source, board, "bench")
    ladder.producer(annotated, quality)
    rendition = ladder.renditions()[(annotated, quality)]
    try:
        step = await lockstep(source, rendition, stream, args.lockstep)
        return await measure(source, rendition, stream, args.seconds), step
    finally:
        await ladder.close()


async def lockstep(
    source: Producer, rendition: Rendition, stream: list[bytes], frames: int
) -> Lockstep:
    """Hand ``frames`` frames over one at a time, each once the worker has shown the last
    (their timestamps 30 fps apart, so rate control sees real time)."""
    viewer = rendition.producer.consume("bench lockstep")
    bytes_out = 0

    async def watch() -> None:
        nonlocal bytes_out
        while True:
            bytes_out += (await viewer.recv()).size

    watcher = asyncio.ensure_future(watch())
    pts = (source.last_pts or 0) + 3000
    cpu, done = rendition.cpu_s, rendition.frames_encoded + rendition.frames_skipped
    for n in range(frames):
        source.on_frame(stream[n % len(stream)], pts + n * 3000)
        deadline = time.monotonic() + LOCKSTEP_TIMEOUT_S
        while rendition.frames_encoded + rendition.frames_skipped <= done + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{rendition.label}: no frame out in {LOCKSTEP_TIMEOUT_S} s")
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)  # the last packet to the viewer
    watcher.cancel()
    viewer.stop()
    return Lockstep(frames, rendition.cpu_s - cpu, bytes_out)


def row(
    annotated: bool, quality: Quality, r: RenditionRun, step: Lockstep, load: float
) -> tuple[object, ...]:
    width, height = r.size or (0, 0)
    ms = step.worker_cpu_s * 1000 / step.frames
    return (
        r.codec,
        f"{'annotated ' if annotated else ''}{quality}",
        f"{width}×{height}",
        f"{ms:.2f}",
        f"{ms * FPS / 10:.1f}",
        round(step.bytes_out * 8 * FPS / step.frames / 1000),
        f"{r.worker_cpu_s / r.seconds * 100:.1f}",
        f"{r.frames_out / r.seconds:.1f}",
        f"{r.skipped} of {r.frames_in}",
        round(r.bytes_out * 8 / r.seconds / 1000),
        f"{load:.1f}",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="real-time run, each")
    parser.add_argument("--lockstep", type=int, default=600, help="lockstep frames, each")
    parser.add_argument("--codec", choices=("VP8", "H264", "both"), default="both")
    parser.add_argument("--marks", type=int, default=20, help="marks on the annotated baseline")
    args = parser.parse_args()
    codecs = ("VP8", "H264") if args.codec == "both" else (args.codec,)
    rows = []
    for codec in codecs:
        stream = source_stream(codec)
        for annotated, quality in RENDITIONS:
            realtime, step = await run(codec, stream, annotated, quality, args)
            rows.append(row(annotated, quality, realtime, step, os.getloadavg()[0]))
    print_table(
        f"Viewer quality ladder: CPU per rung, 1280×720 {FPS} fps in; lockstep {args.lockstep} "
        f"frames, real time {args.seconds:g} s (after a warm-up second); annotated: "
        f"{args.marks} marks",
        (
            "codec",
            "rendition",
            "output",
            "lockstep CPU ms / frame",
            "= % of a core at 30 fps",
            "lockstep kbit/s",
            "real-time worker CPU %",
            "real-time fps out",
            "real-time skipped (stale)",
            "real-time kbit/s",
            "load avg",
        ),
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
