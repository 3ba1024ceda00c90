"""Load run: many consultations at once on one real server for minutes, watched through /metrics.

    python -m bench.loadrun [--consultations 20] [--minutes 5] [--viewers 2] [--every 10]
                            [--share 5] [--width 320] [--height 240] [--fps 15]
                            [--bitrate 300000]
                            [--json out.json] [--keep]

Per consultation (consent on file, so every one records): a publisher WHIP session
(``bench.publisher``: the stamped pattern, VP8; the sessions of ``--share`` consultations share
one process and one encoder, processes started 4 at a time), ``--viewers`` light viewers
(``bench.loadgen.LoadGen``, the viewers of ``--group`` consultations in one process: frames
timestamped and hashed, never decoded) and a surgeon page's
WebSocket (in this process: reads everything, sends a ``stats`` message every 2 s as a page
does). The server is ``bench.serverproc.ServerProcess``. Every ``--every`` s the server's
``/metrics`` is scraped (RSS, open fds, CPU, asyncio tasks, threads, sessions, HTTP answers) and
its ``/proc`` read. The result: errors (HTTP non-2xx, sessions not connected, WebSocket drops,
viewers or publishers that failed), per-viewer fps and freezes after warm-up, server CPU %, and
RSS / fds / tasks at the end of warm-up against the end (a leak grows; flat is none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .common import (
    add_quality_argument,
    emit,
    free_port,
    loopback_only,
    percentile,
    proc_sample,
    run_in_work_dir,
    stdin_lines,
)
from .fanout import PYTHON, Child, Consultation, Processes, machine, make_consultation
from .serverproc import ServerProcess

STATS_EVERY_S = 2.0
"How often each page sends its ``stats`` message (the pages send theirs every 2 s)."
START_TIMEOUT_S = 180.0
START_BATCH = 4
"Publishers started together, each batch once the one before streams."


class Page:
    """A surgeon's page: the consultation's WebSocket, read all the time, stats every 2 s."""

    def __init__(self, base: str, consult: Consultation) -> None:
        self.url = f"{base.replace('http', 'ws', 1)}/ws/{consult.id}"
        self.token = consult.viewer
        self.received = 0
        self.drops: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self, http: aiohttp.ClientSession) -> None:
        self._task = asyncio.ensure_future(self._run(http))

    async def _run(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with http.ws_connect(self.url, headers=headers) as ws:
                sender = asyncio.ensure_future(self._send_stats(ws))
                try:
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            self.received += 1
                finally:
                    sender.cancel()
                if not self._closing:
                    self.drops.append(f"closed {ws.close_code}")
        except aiohttp.ClientError as exc:
            self.drops.append(f"{type(exc).__name__}: {exc}")

    async def _send_stats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        stats = {"direction": "recv", "feed": "endoscope", "fps": 15, "rtt_ms": 1}
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            await ws.send_json({"type": "stats", "stats": stats})

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def scrape(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """The server's own view: process figures, sessions, pages, HTTP answers that were no 2xx."""
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    found: dict[str, Any] = {"non_2xx": {}, "sessions": {}, "text": text}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "endolink_http_responses_total" and not s.labels["status"].startswith(
                ("1", "2")
            ):
                key = f"{s.labels['method']} {s.labels['route']} {s.labels['status']}"
                found["non_2xx"][key] = s.value
            elif s.name == "endolink_sessions":
                found["sessions"][f"{s.labels['role']}:{s.labels['state']}"] = s.value
            elif s.name in _SUMS:  # summed over labels (types, consultations)
                key = _SUMS[s.name]
                found[key] = found.get(key, 0) + s.value
    return found


_SUMS = {
    "process_resident_memory_bytes": "rss_bytes",
    "process_open_fds": "fds",
    "process_cpu_seconds_total": "cpu_s",
    "endolink_asyncio_tasks": "tasks",
    "endolink_threads": "threads",
    "endolink_websockets": "websockets",
    "endolink_consultations_live": "consultations_live",
    "endolink_ws_messages_received_total": "ws_in",
    "endolink_ws_messages_sent_total": "ws_out",
    "endolink_recording_segment_open": "recordings",
    "endolink_recording_segment_dropped_frames": "recording_dropped",
    "endolink_recording_backlog_frames": "recording_backlog",
}


async def run(cfg: argparse.Namespace, work: Path) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    consults = [make_consultation(data, "VP8") for _ in range(cfg.consultations)]
    server = ServerProcess(data, free_port(), logs / "server.log")
    async with loaded(cfg, server, consults, logs) as load:
        return await _measure(cfg, load.http, server, load.procs, load.loadgens, load.pages)


@dataclass
class Load:
    """What ``loaded`` started beside the server."""

    http: aiohttp.ClientSession
    procs: Processes
    loadgens: list[tuple[Child, dict[str, Any]]]
    pages: list[Page]


@contextlib.asynccontextmanager
async def loaded(
    cfg: argparse.Namespace, server: ServerProcess, consults: list[Consultation], logs: Path
) -> AsyncIterator[Load]:
    """The server started, then the consultations' publishers, viewers (``cfg``: share, group,
    viewers, quality, fps, bitrate, width, height) and pages; on exit each is stopped, by pid."""
    procs = Processes(logs)
    pages = [Page(server.base_url, c) for c in consults]
    server.start()
    try:
        await server.wait_accepting(60)
        assert server.process is not None
        async with aiohttp.ClientSession() as http:
            _, loadgens = await _start_clients(cfg, procs, server.base_url, consults)
            for page in pages:
                page.start(http)
            yield Load(http, procs, loadgens, pages)
    finally:
        for page in pages:
            await page.close()
        await procs.close()
        server.stop()


async def _start_clients(
    cfg: argparse.Namespace, procs: Processes, base: str, consults: list[Consultation]
) -> tuple[list[dict[str, Any]], list[tuple[Child, dict[str, Any]]]]:
    """Publisher processes a few at a time (20 processes importing aiortc at once starve the
    machine long enough for the server to close the first ones as silent), then the viewer
    groups. A publisher process serves ``--share`` consultations with one encoder (``--also``):
    20 encoders in 20 processes took a core of this 2-core machine and starved the server."""
    size = ["--width", str(cfg.width), "--height", str(cfg.height)]
    groups = [consults[i : i + cfg.share] for i in range(0, len(consults), cfg.share)]
    readies: list[dict[str, Any]] = []
    for first in range(0, len(groups), START_BATCH):
        batch = []
        for i, group in enumerate(groups[first : first + START_BATCH], first):
            argv = [PYTHON, "-m", "bench.publisher", "--whip", f"{base}/whip/{group[0].id}"]
            argv += ["--token", group[0].clinic, "--fps", str(cfg.fps)]
            argv += ["--bitrate", str(cfg.bitrate), *size]
            for c in group[1:]:
                argv += ["--also", f"{base}/whip/{c.id}", c.clinic]
            batch.append((await procs.start(f"publisher{i}", argv), len(group)))
        ready = await asyncio.gather(*(p.read_event(START_TIMEOUT_S) for p, _ in batch))
        readies += [r for r, (_, n) in zip(ready, batch, strict=True) for _ in range(n)]
    specs = [
        [
            *(
                "--whep",
                f"{base}/whep/{c.id}?quality={cfg.quality}",
                "--token",
                c.viewer,
                "--publisher",
                r["control"],
            ),
            *("--light", str(cfg.viewers), "--name", f"lg{i}", "--ready-timeout", "60", *size),
        ]
        for i, (c, r) in enumerate(zip(consults, readies, strict=True))
    ]
    loadgens = []
    for first in range(0, len(specs), cfg.group):
        group = specs[first : first + cfg.group]
        argv = [PYTHON, "-m", "bench.loadrun", "_viewers", json.dumps(group)]
        child = await procs.start(f"viewers{first // cfg.group}", argv)
        loadgens += [(child, await child.read_event(START_TIMEOUT_S)) for _ in group]
    return readies, loadgens


async def viewer_group(specs: list[list[str]]) -> None:
    """``_viewers``: one ``bench.loadgen.LoadGen`` per consultation, all in this process; one
    ``ready`` per LoadGen, and for ``report T0 T1`` one report per LoadGen, in order."""
    from relay import recovery

    from . import loadgen

    loopback_only()
    generators = [loadgen.LoadGen(loadgen.parse_args(argv)) for argv in specs]
    recovery.use(generators[0].args.recovery)
    try:
        await asyncio.gather(*(g.start() for g in generators))  # each emits its ``ready``
        async for command in stdin_lines():
            words = command.split()
            if words[0] == "report":
                for generator in generators:
                    emit(await generator.report(float(words[1]), float(words[2])))
            elif words[0] == "quit":
                break
    finally:
        for generator in generators:
            await asyncio.wait_for(generator.close(), 30)


async def _measure(
    cfg: argparse.Namespace,
    http: aiohttp.ClientSession,
    server: ServerProcess,
    procs: Processes,
    loadgens: list[tuple[Child, dict[str, Any]]],
    pages: list[Page],
) -> dict[str, Any]:
    assert server.process is not None
    pid = server.process.pid
    t_start = time.time()
    end = t_start + cfg.minutes * 60
    warmup_s = min(60.0, cfg.minutes * 60 * 0.2)
    samples: list[dict[str, Any]] = []
    while True:
        sample = {
            "elapsed_s": round(time.time() - t_start, 1),
            **await scrape(http, server.base_url),
        }
        sample["proc"] = proc_sample(pid)
        sample["clients_cpu_s"] = _clients_cpu_s(procs)
        sample["loadavg"] = float(Path("/proc/loadavg").read_text().split()[0])
        text = sample.pop("text")
        samples.append(sample)
        print(
            f"  t={sample['elapsed_s']:5.0f} s  RSS {sample.get('rss_bytes', 0) / 2**20:6.1f} MB  "
            f"fds {sample.get('fds'):.0f}  tasks {sample.get('tasks'):.0f}  "
            f"threads {sample.get('threads'):.0f}  recording {sample.get('recordings', 0):.0f}  "
            f"sessions {sample['sessions']}",
            flush=True,
        )
        if time.time() >= end - 0.5:
            break
        await asyncio.sleep(min(cfg.every, max(0.0, end - time.time())))
    t1 = time.time()
    groups: list[Child] = []
    for child, _ in loadgens:  # in order, each once
        if not any(child is known for known in groups):
            groups.append(child)
    for child in groups:
        child.send(f"report {t_start + warmup_s} {t1}")

    async def reports(child: Child) -> list[dict[str, Any]]:
        return [await child.read_event(120) for entry, _ in loadgens if entry is child]

    found = await asyncio.gather(*(reports(child) for child in groups))
    viewers = [v for group in found for r in group for v in r["viewers"]]
    return summarise(cfg, samples, viewers, loadgens, pages, warmup_s, text)


def _clients_cpu_s(procs: Processes) -> dict[str, float]:
    """CPU seconds of the harness's own processes (publishers, viewers) so far: what they take
    from the cores the server shares with them."""
    found: dict[str, float] = {}
    for child in procs.children:
        kind = child.name.rstrip("0123456789")
        found[kind] = found.get(kind, 0.0) + ((proc_sample(child.pid) or {}).get("cpu_s") or 0.0)
    return found


def summarise(
    cfg: argparse.Namespace,
    samples: list[dict[str, Any]],
    viewers: list[dict[str, Any]],
    loadgens: list[tuple[Child, dict[str, Any]]],
    pages: list[Page],
    warmup_s: float,
    last_scrape: str,
) -> dict[str, Any]:
    warm = min(samples, key=lambda s: abs(s["elapsed_s"] - warmup_s))
    last = samples[-1]
    expected = {
        "publisher:connected": cfg.consultations,
        "viewer:connected": cfg.consultations * cfg.viewers,
    }
    fps = [v["fps"] for v in viewers]
    latencies = [ms for v in viewers for ms in v["hash_latency_ms"]]
    span = last["elapsed_s"] - warm["elapsed_s"]

    def trend(key: str, scale: float = 1.0) -> list[float]:
        return [round(warm.get(key, 0) / scale, 1), round(last.get(key, 0) / scale, 1)]

    return {
        "config": {k: v for k, v in vars(cfg).items() if k not in ("json", "keep")},
        "minutes": round(last["elapsed_s"] / 60, 2),
        "warmup_s": round(warmup_s, 1),
        "errors": {
            "http_non_2xx": last["non_2xx"],
            "sessions_at_end": last["sessions"],
            "sessions_expected": expected,
            "sessions_missing": {
                k: v - last["sessions"].get(k, 0)
                for k, v in expected.items()
                if last["sessions"].get(k, 0) != v
            },
            "websocket_drops": [d for p in pages for d in p.drops],
            "viewer_errors": [v["error"] for v in viewers if v.get("error")],
            "viewers_receiving_at_start": sum(r["receiving"] for _, r in loadgens),
        },
        "viewers": len(viewers),
        "viewer_fps_min_median": [round(min(fps), 1), round(statistics.median(fps), 1)]
        if fps
        else None,
        "viewer_freezes_total": sum(v["freezes"] for v in viewers),
        "viewer_freezes_500_total": sum(v["freezes_500"] for v in viewers),
        "viewers_with_a_freeze": sum(1 for v in viewers if v["freezes"]),
        "longest_gap_ms_p50_max": [
            round(percentile([v["longest_gap_ms"] or 0 for v in viewers], 50) or 0),
            round(max((v["longest_gap_ms"] or 0 for v in viewers), default=0)),
        ],
        "latency_ms_p50_p99": [
            round(percentile(latencies, 50) or 0, 1),
            round(percentile(latencies, 99) or 0, 1),
        ],
        "server_cpu_pct": round(100 * (last["cpu_s"] - warm["cpu_s"]) / span, 1) if span else None,
        "clients_cpu_pct": {
            kind: round(100 * (cpu_s - warm["clients_cpu_s"].get(kind, 0.0)) / span, 1)
            for kind, cpu_s in last["clients_cpu_s"].items()
        }
        if span
        else None,
        "rss_mb_warm_end": trend("rss_bytes", 2**20),
        "fds_warm_end": trend("fds"),
        "tasks_warm_end": trend("tasks"),
        "threads_warm_end": trend("threads"),
        "machine_loadavg_min_max": [
            min(s["loadavg"] for s in samples),
            max(s["loadavg"] for s in samples),
        ],
        "rss_mb_max": round(max(s.get("rss_bytes", 0) for s in samples) / 2**20, 1),
        "ws_messages_in_out": [last.get("ws_in"), last.get("ws_out")],
        "recordings_open_at_end": last.get("recordings"),
        "recording_dropped_frames_at_end": last.get("recording_dropped"),
        "recording_backlog_max": max(s.get("recording_backlog", 0) for s in samples),
        "page_messages_received": sum(p.received for p in pages),
        "samples": samples,
        "last_scrape_lines": [
            line
            for line in last_scrape.splitlines()
            if line.startswith(
                (
                    "endolink_consultations_live",
                    "endolink_participants",
                    "endolink_recording_backlog",
                )
            )
        ][:12],
    }


def table(result: dict[str, Any]) -> str:
    e = result["errors"]
    rows = [
        (
            "consultations × (publisher + viewers + page)",
            f"{result['config']['consultations']} × (1 + {result['config']['viewers']} + 1)",
        ),
        (
            "run (warm-up excluded from rates)",
            f"{result['minutes']} min ({result['warmup_s']:g} s)",
        ),
        ("HTTP answers not 2xx", json.dumps(e["http_non_2xx"]) if e["http_non_2xx"] else "0"),
        (
            "sessions missing at the end",
            json.dumps(e["sessions_missing"]) if e["sessions_missing"] else "0",
        ),
        ("WebSocket drops", str(len(e["websocket_drops"]))),
        (
            "viewer errors / receiving at start",
            f"{len(e['viewer_errors'])} / {e['viewers_receiving_at_start']}",
        ),
        ("viewer fps min / median", str(result["viewer_fps_min_median"])),
        (
            "freezes > 200 ms (> 500 ms), viewers with one",
            f"{result['viewer_freezes_total']} ({result['viewer_freezes_500_total']}), "
            f"{result['viewers_with_a_freeze']}",
        ),
        ("longest gap ms p50 / max", str(result["longest_gap_ms_p50_max"])),
        (
            "frame latency ms p50 / p99 (publisher stamp → viewer)",
            str(result["latency_ms_p50_p99"]),
        ),
        ("server CPU % of one core (after warm-up)", str(result["server_cpu_pct"])),
        ("harness processes' CPU % of one core", json.dumps(result["clients_cpu_pct"])),
        (
            "machine load average (2 cores, shared) min / max",
            str(result["machine_loadavg_min_max"]),
        ),
        ("server RSS MB warm → end (max)", f"{result['rss_mb_warm_end']} ({result['rss_mb_max']})"),
        ("open fds warm → end", str(result["fds_warm_end"])),
        ("asyncio tasks warm → end", str(result["tasks_warm_end"])),
        ("threads warm → end", str(result["threads_warm_end"])),
        ("WebSocket messages in / out", str(result["ws_messages_in_out"])),
        (
            "recordings open at the end; their dropped frames; writer backlog max",
            f"{result['recordings_open_at_end']}; {result['recording_dropped_frames_at_end']}; "
            f"{result['recording_backlog_max']}",
        ),
    ]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadrun")
    parser.add_argument("--consultations", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--viewers", type=int, default=2, help="light viewers per consultation")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--group", type=int, default=5, help="consultations whose viewers share one process"
    )
    parser.add_argument(
        "--share", type=int, default=5, help="consultations whose publishers share one encoder"
    )
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=300_000)
    add_quality_argument(parser)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_viewers"]:
        asyncio.run(viewer_group(json.loads(argv[1])))
        return 0
    cfg = parse_args(argv)
    print(f"load run: {cfg.consultations} consultations, {cfg.minutes:g} min")
    result = run_in_work_dir("endolink-loadrun-", cfg.keep, lambda work: run(cfg, work))
    result["machine"] = machine()
    result["table"] = table(result)
    print(result["table"])
    if cfg.json:
        cfg.json.write_text(json.dumps(result, indent=2))
    failed = any(
        result["errors"][k]
        for k in ("http_non_2xx", "sessions_missing", "websocket_drops", "viewer_errors")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
