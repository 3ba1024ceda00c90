"""Endurance benchmarks: memory soak, viewer churn, annotated-rendition fidelity.

    python -m bench.endurance soak     [--minutes 10] [--viewers 50] [--every 10]
    python -m bench.endurance churn    [--cycles 500] [--parallel 5]
    python -m bench.endurance fidelity [--seconds 20] [--marks 5]
    (all: [--codec VP8] [--bitrate 1500000] [--rt 10] [--json out.json] [--keep])

Each run starts its own server (``endolink serve`` on 127.0.0.1, forward mode, pinned to
``--server-cpu``) and publisher (``bench.publisher``, stamped 720p30) with the fan-out harness's
process handling (``bench.fanout.Processes``: every child stopped by pid at the end).

* **soak**: 2 decoding probes + 10 light viewers + sinks (``bench.loadgen``, as in the fan-out
  run) for ``--minutes``; every ``--every`` s the server's RSS and threads (``/proc``) and its
  asyncio task count. Result: RSS at minute 1 vs at the end, growth %.
* **churn**: ``--cycles`` WHEP viewers, ``--parallel`` at a time, each POST → first frame →
  DELETE (viewers of ``bench.loadgen`` run in this process); server threads, tasks and RSS
  before (after 10 warm-up cycles) and after.
* **fidelity**: one probe viewer of ``POST /whep/{cid}?annotated=1`` decodes the re-encoded
  rendition; SSIM of its luma (stamp rows excluded) against the source frame regenerated from
  the stamped counter, first with no marks, then with ``--marks`` marks drawn through the
  consultation WebSocket (SSIM over the whole picture and outside the marks' bounding boxes).

The server, its task counter and the publisher: ``bench.endurance_stack``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fanout
from .common import ORIGINAL, STAMP_ROWS, percentile, ssim
from .endurance_stack import in_process_loadgen, server_sample, start_stack, thread_names
from .fanout import PYTHON, Consultation, Processes, machine, make_consultation, pinned

# -- soak --------------------------------------------------------------------------------------


async def soak(
    cfg: argparse.Namespace, procs: Processes, work: Path, consult: Consultation
) -> dict:
    server, publisher, base, control, tasks_file = await start_stack(
        cfg, procs, work, consult, cfg.viewers
    )
    probes, live = 2, min(10, cfg.viewers - 2)
    sinks = cfg.viewers - probes - live
    loadgens = []
    for name, extra in (
        ("loadgen0", ["--probes", str(probes), "--light", str(live)]),
        ("loadgen-sinks", ["--sinks", str(sinks)]),
    ):
        if name == "loadgen-sinks" and not sinks:
            continue
        args = [PYTHON, "-m", "bench.loadgen", "--whep", f"{base}/whep/{consult.id}{ORIGINAL}"]
        args += ["--token", consult.viewer, "--publisher", control, "--codec", cfg.codec]
        args += ["--name", name, "--ready-timeout", str(30 + cfg.viewers * 0.3), *extra]
        loadgens.append(await procs.start(name, pinned(cfg.client_cpu, args)))
    readies = [await lg.read_event(90 + cfg.viewers) for lg in loadgens]
    connected = sum(r["receiving"] for r in readies)
    print(f"  {connected}/{cfg.viewers} viewers receiving; soaking {cfg.minutes:g} min", flush=True)
    t_start = time.time()
    samples = [{**server_sample(server, tasks_file), "elapsed_s": 0.0}]
    end = t_start + cfg.minutes * 60
    while time.time() < end - 0.5:
        await asyncio.sleep(min(cfg.every, max(0.0, end - time.time())))
        sample = {**server_sample(server, tasks_file), "elapsed_s": round(time.time() - t_start, 1)}
        samples.append(sample)
        print(
            f"  t={sample['elapsed_s']:6.0f} s  RSS {sample['rss_mb']} MB  threads "
            f"{sample['threads']}  tasks {sample['tasks']}",
            flush=True,
        )
    # viewer health over the last minute (fps of probes and light viewers)
    t1 = time.time()
    loadgens[0].send(f"report {t1 - 60} {t1}")
    report = await loadgens[0].read_event(180)
    fps = [v["fps"] for v in report["viewers"]]
    at_1min = min(samples, key=lambda s: abs(s["elapsed_s"] - 60))
    last = samples[-1]
    cpu = (last["cpu_s"] - samples[0]["cpu_s"]) / (last["t"] - samples[0]["t"]) * 100
    return {
        "viewers": cfg.viewers,
        "connected": connected,
        "probes": probes,
        "light": live,
        "sinks": sinks,
        "minutes": round((last["t"] - t_start) / 60, 2),
        "rss_mb_at_1min": at_1min["rss_mb"],
        "rss_mb_at_end": last["rss_mb"],
        "rss_growth_pct": round(100 * (last["rss_mb"] / at_1min["rss_mb"] - 1), 2),
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "threads_min_max": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)],
        "tasks_min_max": _min_max([s["tasks"] for s in samples]),
        "server_cpu_pct": round(cpu, 1),
        "fps_last_minute_min_median": [round(min(fps), 1), round(float(percentile(fps, 50)), 1)]
        if fps
        else None,
        "samples": samples,
    }


def _min_max(values: list[int | None]) -> list[int] | None:
    known = [v for v in values if v is not None]
    return [min(known), max(known)] if known else None


# -- churn -------------------------------------------------------------------------------------


async def churn(
    cfg: argparse.Namespace, procs: Processes, work: Path, consult: Consultation
) -> dict:
    from .loadgen import Viewer

    server, _, base, control, tasks_file = await start_stack(
        cfg, procs, work, consult, cfg.parallel * 2
    )
    gen = in_process_loadgen(cfg, f"{base}/whep/{consult.id}{ORIGINAL}", consult.viewer, control)
    first_frame_ms: list[float] = []
    failures: list[str] = []
    done = 0

    async def cycle(n: int) -> None:
        nonlocal done
        viewer = Viewer(f"churn{n}", "light", cfg.codec)
        try:
            await asyncio.wait_for(gen.connect(viewer), 20)
            deadline = time.monotonic() + 10
            while not viewer.arrivals and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if viewer.arrivals and viewer.answer_at:
                first_frame_ms.append((viewer.arrivals[0] - viewer.answer_at) * 1000)
            else:
                failures.append(f"cycle {n}: no frame within 10 s")
        except Exception as exc:
            failures.append(f"cycle {n}: {type(exc).__name__}: {exc}")
        finally:
            await asyncio.wait_for(gen.close_viewer(viewer), 30)
            done += 1

    async def run(first: int, count: int) -> None:
        queue = iter(range(first, first + count))

        async def worker() -> None:
            for n in queue:
                await cycle(n)

        await asyncio.gather(*(worker() for _ in range(cfg.parallel)))

    series: list[dict[str, Any]] = []

    async def sample_every(seconds: float) -> None:
        while True:
            series.append({**server_sample(server, tasks_file), "cycles_done": done})
            await asyncio.sleep(seconds)

    start = server_sample(server, tasks_file)
    warm = cfg.warmup_cycles
    await run(0, warm)
    await asyncio.sleep(3.0)  # let the server finish closing the warm-up viewers
    before = server_sample(server, tasks_file)
    before["thread_names"] = thread_names(tasks_file)
    sampler = asyncio.ensure_future(sample_every(2.0))
    t0 = time.monotonic()
    try:
        await run(warm, cfg.cycles)
    finally:
        sampler.cancel()
    elapsed = time.monotonic() - t0
    for _ in range(20):  # settle: closes finish, the task counter refreshes (bounded)
        await asyncio.sleep(0.5)
    after = server_sample(server, tasks_file)
    after["thread_names"] = thread_names(tasks_file)
    print(f"  {done} cycles in {elapsed:.0f} s, {len(failures)} failed", flush=True)
    return {
        "cycles": cfg.cycles,
        "warmup_cycles": warm,
        "parallel": cfg.parallel,
        "elapsed_s": round(elapsed, 1),
        "failures": len(failures),
        "failure_examples": failures[:5],
        "first_frame_ms_p50_p95_max": [
            round(float(percentile(first_frame_ms, 50) or 0), 1),
            round(float(percentile(first_frame_ms, 95) or 0), 1),
            round(max(first_frame_ms, default=0.0), 1),
        ],
        "server_at_start": start,
        "server_before": before,
        "server_after": after,
        "thread_growth": (after["threads"] or 0) - (before["threads"] or 0),
        "task_growth": (after["tasks"] or 0) - (before["tasks"] or 0)
        if after["tasks"] is not None and before["tasks"] is not None
        else None,
        "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "during": {
            "threads_max": max((s["threads"] or 0 for s in series), default=None),
            "tasks_max": max((s["tasks"] or 0 for s in series), default=None),
            "rss_mb_max": max((s["rss_mb"] for s in series), default=None),
        },
        "samples": series,
    }


# -- fidelity ----------------------------------------------------------------------------------

MARKS = [  # (tool, points, width): spread over the picture, away from the stamp rows
    ("rect", [[0.10, 0.15], [0.30, 0.35]], 0.006),
    ("circle", [[0.60, 0.20], [0.80, 0.45]], 0.006),
    ("arrow", [[0.15, 0.80], [0.35, 0.60]], 0.008),
    ("pen", [[0.50, 0.60], [0.55, 0.70], [0.62, 0.66], [0.70, 0.78]], 0.006),
    ("rect", [[0.78, 0.70], [0.92, 0.90]], 0.004),
]


def marks_mask(marks: list[tuple[str, list[list[float]], float]], width: int, height: int) -> Any:
    """True outside every mark's bounding box, padded by the line width, the arrow head and the
    SSIM window (stamp rows cut off like the pictures)."""
    import numpy as np

    mask = np.ones((height, width), bool)
    for _, points, line in marks:
        xs = [p[0] * width for p in points]
        ys = [p[1] * height for p in points]
        pad = int(line * height * 5 + 0.02 * height + 8)
        x0, x1 = max(0, int(min(xs)) - pad), min(width, int(max(xs)) + pad + 1)
        y0, y1 = max(0, int(min(ys)) - pad), min(height, int(max(ys)) + pad + 1)
        mask[y0:y1, x0:x1] = False
    return mask[STAMP_ROWS:]


async def draw_marks(base: str, consult: Consultation, count: int) -> list[Any]:
    """Add ``count`` marks through the consultation WebSocket (Bearer auth); returns them."""
    import aiohttp

    marks = MARKS[:count]
    url = f"{base.replace('http', 'ws', 1)}/ws/{consult.id}"
    headers = {"Authorization": f"Bearer {consult.viewer}"}
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.ws_connect(url, headers=headers) as ws:
            for i, (tool, points, line) in enumerate(marks):
                mark = {"id": f"bench{i}", "tool": tool, "color": "#00ff00", "width": line}
                mark["points"] = points
                await ws.send_json({"type": "annotation", "op": "add", "annotation": mark})
                await asyncio.sleep(0.1)
            accepted = 0
            deadline = time.monotonic() + 5
            while accepted < len(marks) and time.monotonic() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    msg = await ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
                    if msg.get("type") == "annotation":
                        accepted += 1
                    elif msg.get("type") == "error":
                        raise RuntimeError(f"annotation refused: {msg}")
            if accepted < len(marks):
                raise RuntimeError(f"only {accepted}/{len(marks)} marks acknowledged")
    return marks


async def fidelity(
    cfg: argparse.Namespace, procs: Processes, work: Path, consult: Consultation
) -> dict:
    from client.testpattern import TestPatternTrack

    from . import loadgen
    from .common import luma

    # keep every 5th frame's luma (the rendition may skip stale frames: counters are a subset)
    loadgen.SSIM_EVERY = 5  # module settings, this process only
    loadgen.MAX_SSIM_SAMPLES = 150
    _, _, base, control, _ = await start_stack(cfg, procs, work, consult, 4)
    whep = f"{base}/whep/{consult.id}?annotated=1"
    gen = in_process_loadgen(cfg, whep, consult.viewer, control)
    probe = loadgen.Viewer("annotated-probe", "probe", cfg.codec)
    pattern = TestPatternTrack(1280, 720)
    result: dict[str, Any] = {"seconds_per_phase": cfg.seconds}
    try:
        await asyncio.wait_for(gen.connect(probe), 30)
        deadline = time.monotonic() + 15
        while not probe.samples and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # past the first keyframe's ramp-up
        phases: list[tuple[str, Any]] = [("no marks", None)]
        if cfg.marks:
            phases.append((f"{cfg.marks} marks", None))
        for label, _ in phases:
            mask = None
            if label != "no marks":
                marks = await draw_marks(base, consult, cfg.marks)
                mask = marks_mask(marks, 1280, 720)
                await asyncio.sleep(1.0)  # marks reach the rendition's next frames
                result["mask_excluded_pct"] = round(100 * (1 - float(mask.mean())), 1)
            probe.samples.clear()
            await asyncio.sleep(cfg.seconds)
            full, outside = [], []
            for counter, y in sorted(probe.samples.items()):
                source = luma(pattern.frame(counter, 0))[STAMP_ROWS:]
                full.append(ssim(y[STAMP_ROWS:], source))
                if mask is not None:
                    outside.append(ssim(y[STAMP_ROWS:], source, mask))
            entry = {"frames": len(full), **_stats("ssim", full)}
            if mask is not None:
                entry.update(_stats("ssim_outside_marks", outside))
            result[label] = entry
            shown = {k: v for k, v in entry.items() if not k.endswith("per_frame")}
            print(f"  {label}: {shown}", flush=True)
        result["probe"] = {
            "frames_received": len(probe.arrivals),
            "decoded": len(probe.shown),
            "decode_errors": probe.decode_errors,
            "stamp_errors": probe.stamp_errors,
            "latency_ms_p50": round(float(percentile(probe.latency_ms, 50) or 0), 1),
        }
    finally:
        await gen.close_viewer(probe)
    return result


def _stats(name: str, values: list[float]) -> dict[str, Any]:
    if not values:
        return {f"{name}_mean": None, f"{name}_min": None}
    return {
        f"{name}_mean": round(sum(values) / len(values), 4),
        f"{name}_min": round(min(values), 4),
        f"{name}_p5": round(float(percentile(values, 5) or 0), 4),
        f"{name}_below_0.95": sum(1 for v in values if v < 0.95),
        f"{name}_per_frame": [round(v, 4) for v in values],
    }


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.endurance", description=__doc__.split("\n")[0]
    )
    p.add_argument("test", choices=("soak", "churn", "fidelity"))
    p.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    p.add_argument("--bitrate", type=int, default=1_500_000, help="publisher bitrate (pinned)")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: duration")
    p.add_argument("--viewers", type=int, default=50, help="soak: viewers (2 probes, 10 light)")
    p.add_argument("--every", type=float, default=10.0, help="soak: seconds between samples")
    p.add_argument("--cycles", type=int, default=500, help="churn: join/leave cycles")
    p.add_argument("--parallel", type=int, default=5, help="churn: cycles at a time")
    p.add_argument("--warmup-cycles", type=int, default=10, help="churn: before 'before'")
    p.add_argument("--seconds", type=float, default=20.0, help="fidelity: seconds per phase")
    p.add_argument("--marks", type=int, default=5, choices=range(len(MARKS) + 1))
    p.add_argument("--rt", type=int, default=0, help="SCHED_FIFO priority (root), as fanout")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--publisher-cpu", default="1")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = p.parse_args(argv)
    for name in ("server_cpu", "client_cpu", "publisher_cpu"):
        if getattr(args, name).lower() == "none":
            setattr(args, name, None)
    return args


async def amain(cfg: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    info = machine()
    work = Path(tempfile.mkdtemp(prefix=f"endolink-{cfg.test}-"))
    logs = work / "logs"
    logs.mkdir(parents=True)
    procs = Processes(logs)
    result: dict[str, Any] = {"test": cfg.test}
    status = 0
    try:
        consult = make_consultation(work / "data", cfg.codec)
        run = {"soak": soak, "churn": churn, "fidelity": fidelity}[cfg.test]
        result.update(await run(cfg, procs, work, consult))
    except Exception as exc:
        status = 1
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"ERROR {result['error']} (logs: {logs})", flush=True)
    finally:
        await procs.close()
        shown = {k: v for k, v in result.items() if k != "samples"}
        print(json.dumps(shown, indent=1, default=str))
        if cfg.json:
            payload = {"machine": info, "config": vars(cfg), "result": result}
            cfg.json.write_text(json.dumps(payload, indent=1, default=str))
        if cfg.keep or status:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    fanout.RT_PRIORITY = cfg.rt
    try:
        return asyncio.run(amain(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(main())
