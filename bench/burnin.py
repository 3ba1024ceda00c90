"""Burn-in cost: OpenCV drawing of 20 marks on a 720p frame, and the annotated rendition's
sustained frame rate and CPU while it re-encodes a live 720p30 stream.

1. Drawing: ``relay.overlay`` on a 720p frame with a realistic mix of 20 marks (pen strokes of
   150 points, arrows, circles, rectangles, labels), CPU per frame (median and p95).
2. Stages: decode, copy + draw, encode of the pre-encoded test pattern, CPU per frame.
3. Rendition: the real ``relay.rendition.Rendition`` fed in real time (30 fps, on the event loop,
   like the forwarding tap does) with the 720p30 test pattern pre-encoded at ~2 Mbit/s; one
   consumer of the annotated Producer counts what comes out. Reports output fps, stale frames
   skipped, the added latency (frame in → encoded frame out) and CPU (worker thread, whole
   process) as % of one core.

    python -m bench.burnin [--seconds 20] [--codec VP8|H264|both] [--marks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from client.testpattern import TestPatternTrack
from relay.annotations import Annotation, AnnotationBoard
from relay.codecs import is_keyframe
from relay.decoded import DECODERS
from relay.overlay import draw_bgr, draw_yuv420
from relay.producer import Producer
from relay.rendition import Rendition, burned_in, new_encoder

WIDTH, HEIGHT, FPS = 1280, 720, 30
SOURCE_SECONDS = 4
"Length of the pre-encoded loop (it starts with a keyframe, so looping it decodes cleanly)."
COLORS = ("#00ff00", "#ffff00", "#00ffff", "#ff00ff", "#ffffff")


def marks(count: int) -> list[Annotation]:
    """A surgeon's busy screen: 40 % pen strokes, the rest arrows, circles, boxes and labels."""
    kinds = ["pen", "pen", "arrow", "pen", "circle", "pen", "rect", "arrow", "text", "circle"]
    made = []
    for i in range(count):
        tool = kinds[i % len(kinds)]
        x, y = 0.1 + 0.7 * (i % 5) / 4, 0.15 + 0.7 * (i // 5 % 4) / 3
        data: dict[str, object] = {
            "id": f"m{i}",
            "tool": tool,
            "color": COLORS[i % 5],
            "width": 0.005,
        }
        if tool == "pen":
            data["points"] = [
                [min(1, x + 0.15 * k / 149), min(1, y + 0.05 * math.sin(k / 12))]
                for k in range(150)
            ]
        elif tool == "text":
            data["points"], data["text"] = [[x, y]], "inferior turbinate"
        else:
            data["points"] = [[x, y], [min(1, x + 0.12), min(1, y + 0.1)]]
        made.append(Annotation.from_json(data, "surgeon-bench", 0.0, None))
    return made


def cpu_per_call(work: Callable[[], None], runs: int) -> tuple[float, float]:
    """(median, p95) thread CPU milliseconds of ``work``."""
    work()  # warm caches
    samples = []
    for _ in range(runs):
        started = time.thread_time()
        work()
        samples.append((time.thread_time() - started) * 1000)
    samples.sort()
    return statistics.median(samples), percentile(samples, 95)


def source_stream(codec: str) -> list[bytes]:
    """The 720p30 test pattern, encoded once like a publisher would (~2 Mbit/s)."""
    pattern = TestPatternTrack(WIDTH, HEIGHT, FPS)
    encoder = new_encoder(codec, WIDTH, HEIGHT)
    frames = []
    for i in range(SOURCE_SECONDS * FPS):
        frame = pattern.frame(i, int(time.time() * 1000))
        frame.pts = i * 3000
        frames.append(b"".join(bytes(p) for p in encoder.encode(frame)))
    assert is_keyframe(codec, frames[0])
    return frames


def drawing_rows(count: int) -> list[tuple[str, float, float]]:
    annotations = marks(count)
    planes = [
        np.full((HEIGHT, WIDTH), 90, np.uint8),
        *np.full((2, HEIGHT // 2, WIDTH // 2), 128, np.uint8),
    ]
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    return [
        (
            "draw, YUV 4:2:0 planes (the rendition)",
            *cpu_per_call(lambda: draw_yuv420(planes, annotations), 200),
        ),
        ("draw, BGR image", *cpu_per_call(lambda: draw_bgr(image, annotations), 200)),
    ]


def stage_rows(codec: str, stream: list[bytes], count: int) -> list[tuple[str, float, float]]:
    """Each stage of the worker on its own, offline."""
    decoder = av.CodecContext.create(DECODERS[codec], "r")
    decoded = [f for data in stream for f in decoder.decode(av.Packet(data))]
    annotations = marks(count)
    index = iter(range(10**9))

    def decode_all() -> None:
        fresh = av.CodecContext.create(DECODERS[codec], "r")
        for data in stream:
            fresh.decode(av.Packet(data))

    def copy_and_draw() -> None:
        burned_in(decoded[next(index) % len(decoded)], annotations)

    encoder = new_encoder(codec, WIDTH, HEIGHT)

    def encode() -> None:
        i = next(index)
        frame = decoded[i % len(decoded)]
        frame.pts, frame.pict_type = i * 3000, av.video.frame.PictureType.NONE
        encoder.encode(frame)

    decode_ms = cpu_per_call(decode_all, 3)
    return [
        (f"{codec} decode", decode_ms[0] / len(stream), decode_ms[1] / len(stream)),
        (f"{codec} copy + draw {count} marks", *cpu_per_call(copy_and_draw, 200)),
        (f"{codec} encode (realtime, ~2 Mbit/s)", *cpu_per_call(encode, 200)),
    ]


@dataclass
class RenditionRun:
    codec: str
    seconds: float
    "Steady-state window measured (after one warm-up second)."
    frames_in: int
    frames_out: int
    skipped: int
    "Stale frames decoded but neither drawn nor encoded, in the window."
    keyframes: int
    worker_cpu_s: float
    process_cpu_s: float
    latency_ms: list[float]
    bytes_out: int
    size: tuple[int, int] | None
    "The encoded picture's width and height."


def bench_source(codec: str, count: int) -> tuple[Producer, AnnotationBoard]:
    """A publisher-less source Producer and a board with ``count`` marks."""
    source = Producer("video", codec, "bench")
    source.attach(lambda: True)
    board = AnnotationBoard()
    for annotation in marks(count):
        board.add(annotation)
    return source, board


async def run_rendition(
    codec: str, stream: list[bytes], count: int, seconds: float
) -> RenditionRun:
    source, board = bench_source(codec, count)
    rendition = Rendition(source, board, "bench")
    try:
        return await measure(source, rendition, stream, seconds)
    finally:
        await rendition.stop()


async def measure(
    source: Producer, rendition: Rendition, stream: list[bytes], seconds: float
) -> RenditionRun:
    """Feed ``stream`` to ``source`` in real time (30 fps, on the loop, like the receiver tap)
    for a warm-up second and then ``seconds``, with one viewer of ``rendition``'s Producer."""
    viewer = rendition.producer.consume("bench viewer")
    fed_at: dict[int, float] = {}
    latency: list[float] = []
    bytes_out = 0

    async def watch() -> None:
        nonlocal bytes_out
        while True:
            packet = await viewer.recv()
            bytes_out += packet.size
            latency.append((time.perf_counter() - fed_at.pop(packet.pts)) * 1000)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.5)  # thread and codecs up
    started, fed = time.perf_counter(), 0
    base = 0 if source.last_pts is None else source.last_pts + 3000  # after an earlier run

    async def feed(until_s: float) -> None:
        """Hand frames to the source Producer on the loop at 30 fps, like the receiver tap."""
        nonlocal fed
        while fed < until_s * FPS:
            await asyncio.sleep(max(0.0, started + fed / FPS - time.perf_counter()))
            fed_at[base + fed * 3000] = time.perf_counter()
            source.on_frame(stream[fed % len(stream)], base + fed * 3000)
            fed += 1

    await feed(1.0)  # warm-up
    cpu, worker_cpu, frames_out = time.process_time(), rendition.cpu_s, rendition.frames_encoded
    skipped, keyframes, frames_in = rendition.frames_skipped, rendition.producer.keyframes, fed
    latency.clear()
    bytes_out = 0
    await feed(1.0 + seconds)
    await asyncio.sleep(0.2)  # the last frames out
    run = RenditionRun(
        codec=source.codec,
        seconds=seconds,
        frames_in=fed - frames_in,
        frames_out=rendition.frames_encoded - frames_out,
        skipped=rendition.frames_skipped - skipped,
        keyframes=rendition.producer.keyframes - keyframes,
        worker_cpu_s=rendition.cpu_s - worker_cpu,
        process_cpu_s=time.process_time() - cpu,
        latency_ms=sorted(latency),
        bytes_out=bytes_out,
        size=rendition.size,
    )
    watcher.cancel()
    viewer.stop()
    return run


def percentile(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else math.nan


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in row) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--codec", choices=("VP8", "H264", "both"), default="both")
    parser.add_argument("--marks", type=int, default=20)
    args = parser.parse_args()
    codecs = ("VP8", "H264") if args.codec == "both" else (args.codec,)

    print_table(
        f"OpenCV drawing of {args.marks} marks on one 720p frame (CPU ms per frame)",
        ("what", "median ms", "p95 ms"),
        list(drawing_rows(args.marks)),
    )
    streams = {codec: source_stream(codec) for codec in codecs}
    print_table(
        "Worker stages, offline (CPU ms per 720p frame)",
        ("stage", "median ms", "p95 ms"),
        [row for codec in codecs for row in stage_rows(codec, streams[codec], args.marks)],
    )
    runs = [await run_rendition(c, streams[c], args.marks, args.seconds) for c in codecs]
    print_table(
        f"Annotated rendition, 720p30 in, {args.marks} marks, {args.seconds:g} s "
        "(steady state after the first second)",
        (
            "codec",
            "fps out",
            "stale skipped",
            "keyframes",
            "latency p50 / p95 ms",
            "worker CPU % of a core",
            "process CPU %",
            "kbit/s out",
        ),
        [
            (
                r.codec,
                r.frames_out / r.seconds,
                r.skipped,
                r.keyframes,
                f"{percentile(r.latency_ms, 50):.1f} / {percentile(r.latency_ms, 95):.1f}",
                r.worker_cpu_s / r.seconds * 100,
                r.process_cpu_s / r.seconds * 100,
                round(r.bytes_out * 8 / r.seconds / 1000),
            )
            for r in runs
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
