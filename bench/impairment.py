"""Impairment benchmark: forwarded video through a lossy, delayed link on both hops.

    python -m bench.impairment [--impairments none,uniform3,bursty10] [--runs 5] [--seconds 30]
                               [--rtt-ms 150] [--recovery tuned,legacy] [--json out.json]

For every (recovery × impairment × run) the harness starts, each by itself and stopped by pid:
the server (``endolink serve``, started through ``bench.serve`` so that
``--recovery legacy`` can restore aiortc's/the old loss handling in the same run), a publisher
(``bench.publisher``: stamped 720p30 VP8 at 1.5 Mbit/s) whose hop to the server crosses an
``ImpairmentProxy``, and one decoding probe viewer (``bench.loadgen``) whose hop from the server
crosses another one with the same impairment (its own seed). Both hops have ``--rtt-ms`` of RTT.

Measured over the steady window, from what the probe *displays* (it decodes every frame and,
like a browser, shows nothing after a loss it gave up on until a keyframe):

* fps: frames displayed per second;
* a **freeze** is a display gap over 200 ms (6 frame intervals at 30 fps — a viewer notices it);
  reported: count, longest, total frozen time, and how many were over 500 ms;
* latency p50/p95: from the wall clock the publisher drew into the frame to its display;
* the cause of every freeze over 500 ms (see ``cause``).

Prints one table row per (recovery, impairment) aggregated over the runs; ``docs/benchmarks.md``
has a run and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import fanout
from .common import LONG_FREEZE_MS, LOOPBACK, ORIGINAL, percentile
from .fanout import PYTHON, Processes, free_port, make_consultation, pinned, save_json, wait_port

CODEC = "VP8"


def cause(freeze: list[float], probe: dict[str, Any]) -> str:
    """Why the probe showed nothing for ``freeze`` = [start, ms, counter before, counter after].

    * ``late``: no frame is missing (consecutive counters): every lost packet was retransmitted,
      and the frames behind it waited (on either hop);
    * ``viewer gave up``: the probe's own receiver skipped a packet it could not recover and
      waited for a keyframe (server → viewer hop);
    * ``server gave up``: frames are missing but the probe gave nothing up: the server skipped
      them (clinic → server hop) and the probe got the next keyframe.
    """
    start, ms, before, after = freeze
    end = start + ms / 1000
    if before >= 0 and after == before + 1:
        return "late"
    if any(start - 1.0 <= t <= end for t in probe["discontinuity_at"]):
        return "viewer gave up"
    return "server gave up"


async def one_run(
    cfg: argparse.Namespace, impairment: str, recovery: str, seed: int, work: Path
) -> dict[str, Any]:
    logs = work / "logs" / f"{recovery}-{impairment}-{seed}"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes(logs)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    data = work / f"data-{recovery}-{impairment}-{seed}"
    consult = make_consultation(data, CODEC)
    env = {"ENDOLINK_ICE_HOST_ADDRESSES": LOOPBACK, "ENDOLINK_HOST": LOOPBACK}
    hop = ["--impairment", impairment, "--rtt-ms", str(cfg.rtt_ms), "--seed", str(seed)]
    if impairment == "none":
        hop = []
    result: dict[str, Any] = {"impairment": impairment, "recovery": recovery, "seed": seed}
    try:
        serve = [PYTHON, "-m", "bench.serve", "--recovery", recovery, "--"]
        serve += ["serve", "--data-dir", str(data), "--port", str(port)]
        server = await procs.start("server", pinned(cfg.server_cpu, serve), env, stdout=False)
        pub_args = [PYTHON, "-m", "bench.publisher", "--whip", f"{base}/whip/{consult.id}"]
        pub_args += ["--token", consult.clinic, "--codec", CODEC, *hop]
        publisher = await procs.start("publisher", pinned(cfg.client_cpu, pub_args, boost=5))
        await wait_port(port, server, 30)
        control = (await publisher.read_event(60))["control"]
        lg_args = [PYTHON, "-m", "bench.loadgen", "--whep", f"{base}/whep/{consult.id}{ORIGINAL}"]
        lg_args += ["--token", consult.viewer, "--publisher", control, "--codec", CODEC]
        lg_args += ["--probes", "1", "--recovery", recovery, *hop]
        loadgen = await procs.start("loadgen", pinned(cfg.client_cpu, lg_args))
        ready = await loadgen.read_event(60)
        if not ready["receiving"]:
            raise RuntimeError(f"the probe received nothing: {ready['errors']}")
        await asyncio.sleep(cfg.warmup)
        t0 = time.time()
        await asyncio.sleep(cfg.seconds)
        t1 = time.time()
        publisher.send("report")
        pub = await publisher.read_event(60)
        loadgen.send(f"report {t0} {t1}")
        probe = (await loadgen.read_event(120))["viewers"][0]
        result.update(summarise(probe, pub, t0, t1))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await procs.close()
    return result


def summarise(probe: dict[str, Any], pub: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    freezes = probe["freeze_list"]
    requests = [t for t in pub["keyframe_requests"] if t0 - 1.0 <= t <= t1]
    long = [f for f in freezes if f[1] > LONG_FREEZE_MS]
    return {
        "fps": probe["decoded"] / (t1 - t0),
        "freezes": len(freezes),
        "freezes_500": len(long),
        "longest_ms": max((f[1] for f in freezes), default=0.0),
        "frozen_ms": sum(f[1] for f in freezes),
        "latency_ms": probe["latency_ms"],
        "long_causes": [cause(f, probe) for f in long],
        "all_causes": [cause(f, probe) for f in freezes],
        "freeze_list": freezes,
        "discontinuity_at": probe["discontinuity_at"],
        "keyframe_requests": len(requests),
        "publisher_keyframes": sum(1 for f in pub["frames"] if f[4] and t0 <= f[5] <= t1),
        "viewer_recovery": probe["recovery"],
        "proxy_publisher": pub["proxy"],
        "proxy_viewer": probe["proxy"],
        "decode_errors": probe["decode_errors"],
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    latency = [x for r in ok for x in r["latency_ms"]]
    causes: dict[str, int] = {}
    for r in ok:
        for c in r["long_causes"]:
            causes[c] = causes.get(c, 0) + 1
    return {
        "runs": len(runs),
        "errors": [r["error"] for r in runs if "error" in r],
        "fps_min": min((r["fps"] for r in ok), default=None),
        "fps_median": statistics.median([r["fps"] for r in ok]) if ok else None,
        "freezes": sum(r["freezes"] for r in ok),
        "freezes_500": sum(r["freezes_500"] for r in ok),
        "longest_ms": [round(r["longest_ms"]) for r in ok],
        "frozen_ms_per_run": statistics.fmean([r["frozen_ms"] for r in ok]) if ok else None,
        "latency_p50": percentile(latency, 50),
        "latency_p95": percentile(latency, 95),
        "long_causes": causes,
    }


def table(rows: list[tuple[str, str, dict[str, Any]]], cfg: argparse.Namespace) -> str:
    head = (
        "| recovery | impairment (both hops) | runs | fps min / median | freezes >200 ms "
        "(>500 ms) | longest freeze per run ms | frozen ms per run | latency p50 / p95 ms "
        "| causes of freezes >500 ms |"
    )
    lines = [head, "|" + "---|" * 9]
    for recovery, impairment, a in rows:
        label = f"{impairment}, {cfg.rtt_ms:g} ms RTT" if impairment != "none" else "none"
        if a["fps_min"] is None:
            lines.append(f"| {recovery} | {label} | {a['runs']} | error: {a['errors'][:1]} |")
            continue
        causes = ", ".join(f"{k} {v}" for k, v in sorted(a["long_causes"].items())) or "–"
        lines.append(
            f"| {recovery} | {label} | {a['runs'] - len(a['errors'])} "
            f"| {a['fps_min']:.1f} / {a['fps_median']:.1f} "
            f"| {a['freezes']} ({a['freezes_500']}) | {', '.join(map(str, a['longest_ms']))} "
            f"| {a['frozen_ms_per_run']:.0f} | {a['latency_p50']:.0f} / {a['latency_p95']:.0f} "
            f"| {causes} |"
        )
    return "\n".join(lines)


async def amain(cfg: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="endolink-impair-") as tmp:
        work = cfg.keep or Path(tmp)
        for recovery in cfg.recovery.split(","):
            for impairment in cfg.impairments.split(","):
                runs = []
                for run in range(cfg.runs):
                    r = await one_run(cfg, impairment, recovery, cfg.seed + run, work)
                    print(_oneline(r), file=sys.stderr, flush=True)
                    runs.append(r)
                results.extend(runs)
                rows.append((recovery, impairment, aggregate(runs)))
    text = table(rows, cfg)
    print(text)
    if cfg.json:
        save_json(cfg.json, cfg, results, text)
    return 0 if all("error" not in r for r in results) else 1


def _oneline(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['recovery']} {r['impairment']} seed {r['seed']}: {r['error']}"
    return (
        f"{r['recovery']} {r['impairment']} seed {r['seed']}: {r['fps']:.1f} fps, "
        f"{r['freezes']} freezes (longest {r['longest_ms']:.0f} ms), causes >500 ms "
        f"{r['long_causes']}, all {r['all_causes']}, viewer {r['viewer_recovery']}, "
        f"keyframe requests {r['keyframe_requests']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.impairment", description=__doc__)
    p.add_argument("--impairments", default="none,uniform3,bursty10")
    p.add_argument("--recovery", default="tuned", help="tuned, legacy or both (tuned,legacy)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rtt-ms", type=float, default=150.0, help="RTT of each hop")
    p.add_argument("--seed", type=int, default=1, help="seed of the first run (+1 per run)")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", type=Path, help="work here and keep the logs")
    p.add_argument("--server-cpu", help="taskset CPU list of the server (default: unpinned)")
    p.add_argument("--client-cpu", help="taskset CPU list of publisher and viewer")
    p.add_argument("--nice", type=int, default=0, help="niceness of every process (see fanout)")
    p.add_argument("--rt", type=int, default=0, help="SCHED_FIFO priority (see fanout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    fanout.NICE, fanout.RT_PRIORITY = cfg.nice, cfg.rt
    return asyncio.run(amain(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
