"""Fan-out benchmark: the forwarding relay against the naive per-viewer-encoding relay.

    python -m bench.fanout [--quick] [--viewers 1,10,50,100] [--codec VP8|H264]
                           [--modes forward,transcode] [--seconds 20] [--json out.json]
                           [--loss 0,1,3 --rtt-ms 150] [--profile py-spy|cprofile]

For every scenario (relay mode × viewer count) the harness starts, each by itself and each killed
by pid when the scenario ends:

1. the server, ``endolink serve`` on 127.0.0.1 (a temporary data dir), pinned to one core;
2. a publisher process (``bench.publisher``): WHIP-publishes a stamped 720p30 test pattern with
   aiortc's encoder, logs every encoded frame, and answers one direct (serverless) connection;
3. load generators (``bench.loadgen``) pinned to the other core: a few decoding PROBE viewers,
   many LIGHT viewers that only count and hash encoded frames, and the DIRECT probe.

After a warm-up it measures a steady window: per-viewer fps, freezes, latency from the stamps
(relay-added = through the server minus direct, same run), server CPU/RSS/threads from /proc,
bit-exactness (hashes of what the publisher encoded against what each viewer received), SSIM,
late-join time to first frame, and keyframe requests reaching the publisher. See
docs/benchmarks.md for a run and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    LOOPBACK,
    ORIGINAL,
    cpu_percent,
    free_port,
    percentile,
    proc_sample,
    shared_token_env,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- processes ---------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """If the harness dies without cleaning up (SIGKILL), the kernel stops the child too."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One process the harness started: stdin for commands, JSON lines on stdout."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read_event(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s ({self.log})")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            text = line.decode().strip()
            if text.startswith("{"):
                return json.loads(text)

    def send(self, command: str) -> None:
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.proc.stdin.write(command.encode() + b"\n")

    async def stop(self, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Ask politely (``quit``), then ``sig``, then SIGKILL — always by this child's pid."""
        if self.stopped:
            return
        self.stopped = True
        self.send("quit")
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for signum, wait in ((None, grace_s), (sig, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.returncode is not None:
                return
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), wait)


class Processes:
    """Every child of one scenario; ``close()`` stops each by pid (also on Ctrl-C)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[Child] = []

    async def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, stdout: bool = True
    ) -> Child:
        log = self.logs / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if stdout else log.open("ab"),
            stderr=log.open("ab"),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,
            limit=1 << 24,
        )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    async def close(self) -> None:
        # Clients first, together (they say goodbye to the server), the server last.
        clients = [c for c in self.children if c.name != "server"]
        await asyncio.gather(*(c.stop(2.0 if c.name == "py-spy" else 10.0) for c in clients))
        for child in self.children:
            if child.name == "server":
                await child.stop(2.0, signal.SIGINT)


async def wait_port(port: int, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.returncode is not None:
            raise RuntimeError(f"server exited ({child.proc.returncode}); see {child.log}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"server did not listen on {port} within {timeout:.0f} s")


NICE = 0
"""Niceness of every process the harness starts (``--nice``); set once by ``main``."""
RT_PRIORITY = 0
"""``--rt``: SCHED_FIFO priority of every process the harness starts (0: normal scheduling)."""
RT_POLICY = "-f"
"""``chrt``'s policy for ``--rt``: ``-f`` FIFO, or ``-r`` round robin (processes of one priority
take turns every 100 ms instead of a busy one keeping its core until it blocks)."""


def pinned(cpu: str | None, argv: list[str], boost: int = 0) -> list[str]:
    """``nice -n N taskset -c CPU argv``: both exec, so the pid is the benchmark process's own.
    ``boost`` lowers the niceness further (root only): the publisher must never be starved by
    the load generators sharing its core, or every viewer sees the source's stalls."""
    argv = ["taskset", "-c", cpu, *argv] if cpu is not None else argv
    if RT_PRIORITY:
        # real-time FIFO: other processes on a shared machine no longer preempt the benchmark
        # (the kernel still keeps 5 % of each core for them: sched_rt_runtime_us)
        return ["chrt", RT_POLICY, str(RT_PRIORITY + (1 if boost else 0)), *argv]
    nice = NICE - (boost if os.geteuid() == 0 else 0)
    return ["nice", "-n", str(nice), *argv] if nice else argv


def allowed_cpus(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return None


def core_times() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat: shows foreign load on the pinned cores."""
    result = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]
            result[name[3:]] = (sum(numbers) - idle, sum(numbers))
    return result


def core_busy(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    busy = {}
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (0, 0))
        busy[cpu] = round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else None
    return busy


async def wait_quiet(threshold: float, max_wait: float) -> dict[str, Any]:
    """On a shared machine, wait (bounded) until other processes leave the cores mostly idle."""
    start = time.monotonic()
    while True:
        before = core_times()
        await asyncio.sleep(2.0)
        busy = core_busy(before, core_times())
        worst = max((v for v in busy.values() if v is not None), default=0.0)
        waited = time.monotonic() - start
        if worst <= threshold or waited >= max_wait:
            return {"busy_pct": busy, "waited_s": round(waited, 1), "quiet": worst <= threshold}


# -- setup -------------------------------------------------------------------------------------


def endolink_command() -> list[str]:
    """``endolink`` as ``python -m signaling`` run from this tree (cwd): the server is the code
    next to this benchmark, even when another checkout is installed in the venv."""
    return [PYTHON, "-m", "signaling"]


def cli(data_dir: Path, *args: str, source: Path | None = None) -> str:
    """``endolink ARGS --data-dir DATA_DIR`` of this tree, or of the checkout ``source`` (another
    revision: its own schema and tokens)."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source is not None else None
    out = subprocess.run(
        [*endolink_command(), *args, "--data-dir", str(data_dir)],
        cwd=source or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"endolink {' '.join(args[:2])} failed: {out.stderr.strip()[-300:]}")
    return out.stdout.strip()


@dataclass
class Consultation:
    id: str
    clinic: str
    viewer: str


def make_consultation(data_dir: Path, codec: str, source: Path | None = None) -> Consultation:
    """A consultation with consent on file and its clinic and surgeon tokens (``source``: made
    by that checkout's CLI)."""
    create = ["consult", "create", "--consent-by", "bench", "--json", "--codec", codec]
    cid = json.loads(cli(data_dir, *create, source=source))["id"]
    # ``--consultation=ID``: ids are URL-safe base64 and may start with "-"
    clinic = cli(data_dir, "token", f"--consultation={cid}", "--role", "clinic", source=source)
    viewer = cli(data_dir, "token", f"--consultation={cid}", "--role", "surgeon", source=source)
    return Consultation(cid, clinic, viewer)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiortc

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        return ""

    rev_file = ROOT / ".git-rev"  # a snapshot (git archive) says which commit it is
    head = rev_file.read_text().strip() if rev_file.exists() else ""
    head = head or git("rev-parse", "--short", "HEAD")
    return {
        "git_head": head,
        "git_dirty_media_files": [
            line[3:] for line in git("status", "--porcelain", "relay", "signaling").splitlines()
        ],
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def save_json(path: Path, cfg: argparse.Namespace, results: list[Any], table: str) -> None:
    """``--json``: the machine, the configuration, every result and the printed table."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}
    info = {"machine": machine(), "config": config, "results": results, "table": table}
    path.write_text(json.dumps(info, indent=1))


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    mode: str
    viewers: int
    loss_pct: float | None = None
    "None: no proxy; a number: through the impairment proxy with --rtt-ms."

    @property
    def label(self) -> str:
        loss = "" if self.loss_pct is None else f" loss={self.loss_pct:g}%"
        return f"{self.mode} N={self.viewers}{loss}"


async def run_scenario(
    cfg: argparse.Namespace, sc: Scenario, consult: Consultation, work: Path
) -> dict[str, Any]:
    logs = work / "logs" / sc.label.replace(" ", "_").replace("%", "pct").replace("=", "")
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes(logs)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    probes = min(cfg.probes, sc.viewers)
    light = sc.viewers - probes
    joins = cfg.joins if sc.loss_pct is None else 0
    env = {
        "ENDOLINK_ICE_HOST_ADDRESSES": LOOPBACK,
        "ENDOLINK_RELAY_MODE": sc.mode,
        **shared_token_env(sc.viewers + joins + 10),
        "ENDOLINK_HOST": LOOPBACK,
        "PYTHONUNBUFFERED": "1",
    }
    result: dict[str, Any] = {
        "mode": sc.mode,
        "viewers": sc.viewers,
        "probes": probes,
        "light": light,
        "loss_pct": sc.loss_pct,
        "rtt_ms": cfg.rtt_ms if sc.loss_pct is not None else None,
        "logs": str(logs),
    }
    try:
        data = str(work / "data")
        serve = [*endolink_command(), "serve", "--data-dir", data, "--port", str(port)]
        if cfg.profile == "cprofile" and sc.mode == "forward":
            serve = [PYTHON, "-m", "cProfile", "-o", str(logs / "server.prof"), "-m", "signaling"]
            serve += ["serve", "--data-dir", data, "--port", str(port)]
        server = await procs.start("server", pinned(cfg.server_cpu, serve), env, stdout=False)
        # The publisher starts while the server boots (both import the media stack for ~2 s);
        # it retries its WHIP offer until the server listens.
        pub_args = [PYTHON, "-m", "bench.publisher", "--whip", f"{base}/whip/{consult.id}"]
        pub_args += ["--token", consult.clinic, "--codec", cfg.codec]
        pub_args += ["--bitrate", str(cfg.bitrate)]
        if sc.loss_pct is not None:
            pub_args += ["--loss", str(sc.loss_pct / 100), "--rtt-ms", str(cfg.rtt_ms)]
        publisher = await procs.start("publisher", pinned(cfg.publisher_cpu, pub_args, boost=5))
        await wait_port(port, server, 30)
        ready = await publisher.read_event(60)
        control = ready["control"]

        # loadgen0: the decoding probes, the direct probe and the late joiners, alone in their
        # process so their event loop is not queued behind light viewers; light viewers in
        # further processes of at most --light-per-loadgen each (all on the client core).
        live = min(light, cfg.live_light)
        sinks = light - live
        result["live_light"], result["sinks"] = live, sinks
        shares = [0]
        if live:
            n_live = math.ceil(live / cfg.light_per_loadgen)
            shares += [live // n_live + (1 if i < live % n_live else 0) for i in range(n_live)]
        loadgens = []
        for i, share in enumerate([*shares, *([0] if sinks else [])]):
            sink_proc = sinks and i == len(shares)
            args = [PYTHON, "-m", "bench.loadgen", "--whep", f"{base}/whep/{consult.id}{ORIGINAL}"]
            args += ["--token", consult.viewer, "--publisher", control, "--codec", cfg.codec]
            args += ["--light", str(share), "--name", f"lg{i}"]
            args += ["--ready-timeout", str(30 + sc.viewers * 0.3)]
            if i == 0:
                args += ["--probes", str(probes), "--direct"]
            if sink_proc:
                args += ["--sinks", str(sinks)]
            name = "loadgen-sinks" if sink_proc else f"loadgen{i}"
            loadgens.append(await procs.start(name, pinned(cfg.client_cpu, args)))
        readies = [await lg.read_event(90 + sc.viewers) for lg in loadgens]
        result["connected"] = sum(r["receiving"] for r in readies) - 1  # minus the direct probe
        result["connect_errors"] = [e for r in readies for e in r["errors"]]
        result["pinning"] = {c.name: allowed_cpus(c.pid) for c in procs.children}

        profiler = None
        await asyncio.sleep(cfg.warmup)
        pyspy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        if cfg.profile == "py-spy" and sc.mode == "forward" and Path(pyspy).exists():
            profiler = await procs.start(
                "py-spy",
                pinned(
                    cfg.client_cpu,
                    [
                        pyspy, "record", "--pid", str(server.pid), "--rate", "200",
                        "--nonblocking",
                        "--duration", str(int(cfg.seconds)), "--format", "raw",
                        "-o", str(logs / "server.pyspy.txt"),
                    ],
                ),
                stdout=False,
            )  # fmt: skip
        await mark(loadgens, "start")
        watched = {"server": server, "publisher": publisher}
        watched.update({lg.name: lg for lg in loadgens})
        before = {name: proc_sample(c.pid) for name, c in watched.items()}
        cores0 = core_times()
        t0 = time.time()
        await asyncio.sleep(cfg.seconds)
        t1 = time.time()
        cores1 = core_times()
        after = {name: proc_sample(c.pid) for name, c in watched.items()}
        result["window_s"] = t1 - t0
        result["cpu_pct"] = {n: _round(cpu_percent(before[n], after[n])) for n in watched}
        result["core_busy_pct"] = core_busy(cores0, cores1)
        await mark(loadgens, "end")
        srv = after["server"] or {}
        result["server_rss_mb"] = _round(srv.get("rss_mb"))
        result["server_threads"] = srv.get("threads")
        if profiler is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(profiler.proc.wait(), 30)
            result["profile"] = str(logs / "server.pyspy.txt")

        if joins:
            loadgens[0].send(f"join {joins} {cfg.join_gap}")
            joined = await loadgens[0].read_event(30 + joins * 10)
            result["joins"] = joined["joins"]
        tj = time.time()
        publisher.send("report")
        pub_report = await publisher.read_event(60)
        reports = []
        for lg in loadgens:
            lg.send(f"report {t0} {t1}")
        for lg in loadgens:
            reports.append(await lg.read_event(120))
        result.update(summarise(pub_report, reports, t0, t1, tj, result.get("joins", [])))
        if cfg.profile == "cprofile" and sc.mode == "forward":
            result["profile"] = str(logs / "server.prof")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tail"] = {
            c.name: c.log.read_text(errors="replace").splitlines()[-12:]
            for c in procs.children
            if c.log.exists()
        }
    finally:
        await procs.close()
    return result


async def mark(loadgens: list[Child], which: str) -> None:
    """Window edge: load generators snapshot their sinks' packet counters."""
    for lg in loadgens:
        lg.send(f"mark {which}")
    for lg in loadgens:
        await lg.read_event(30)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def summarise(
    pub: dict[str, Any],
    reports: list[dict[str, Any]],
    t0: float,
    t1: float,
    tj: float,
    joined: list[dict[str, Any]],
) -> dict[str, Any]:
    """Turn the children's raw reports into the scenario's metrics."""
    viewers = [v for r in reports for v in r["viewers"]]
    sink_pps = [x for r in reports for x in r.get("sink_packets_per_s", [])]
    served = [v for v in viewers if v["kind"] != "direct"]
    probes = [v for v in served if v["kind"] == "probe"]
    direct = next((v for v in viewers if v["kind"] == "direct"), None)
    fps = [v["fps"] for v in served]
    probe_lat = [x for v in probes for x in v["latency_ms"]]
    direct_lat = direct["latency_ms"] if direct else []
    hash_lat = [x for v in served for x in v["hash_latency_ms"]]
    frames = [f for f in pub["frames"] if t0 <= f[5] <= t1]
    window = t1 - t0
    requests = sorted(pub["keyframe_requests"])
    in_run = [t for t in requests if t <= tj]
    max_per_s = max((sum(1 for u in requests if t <= u < t + 1.0) for t in requests), default=0)
    intervals = [b - a for a, b in zip(requests, requests[1:], strict=False)]
    total_frames = sum(v["frames"] for v in served)
    exact = sum(v["bit_exact"] for v in served)
    ssim_src = [s for v in probes for s in v.get("ssim_source", [])]
    ssim_direct = [s for v in probes for s in v.get("ssim_direct", [])]
    lat = {
        "p50": _round(percentile(probe_lat, 50)),
        "p95": _round(percentile(probe_lat, 95)),
        "direct_p50": _round(percentile(direct_lat, 50)),
        "direct_p95": _round(percentile(direct_lat, 95)),
        "all_viewers_p50": _round(percentile(hash_lat, 50)),
        "all_viewers_p95": _round(percentile(hash_lat, 95)),
    }
    for p in ("p50", "p95"):
        a, b = lat[p], lat[f"direct_{p}"]
        lat[f"relay_added_{p}"] = _round(a - b) if a is not None and b is not None else None
    joins = [j["first_frame_ms"] for j in joined if j.get("first_frame_ms")]
    return {
        "fps_min": _round(min(fps), 2) if fps else None,
        "fps_median": _round(statistics.median(fps), 2) if fps else None,
        "latency_ms": lat,
        "freezes": sum(v["freezes"] for v in served),
        "freezes_500": sum(v["freezes_500"] for v in served),
        "longest_gap_ms": _round(max((v["longest_gap_ms"] or 0) for v in served), 0)
        if served
        else None,
        "probe_stats": [
            {
                "name": v["name"],
                "fps": _round(v["fps"], 2),
                "freezes": v["freezes"],
                "freezes_500": v["freezes_500"],
                "longest_gap_ms": _round(v["longest_gap_ms"], 0),
                "decode_errors": v["decode_errors"],
                "stamp_errors": v["stamp_errors"],
                "skipped_until_keyframe": v["skipped_until_keyframe"],
                "stamps_read": v["stamps_read"],
                "stamp_order_errors": v["stamp_order_errors"],
                "bit_exact_pct": _pct(v["bit_exact"], v["frames"]),
                "latency_p50": _round(percentile(v["latency_ms"], 50)),
                "latency_p95": _round(percentile(v["latency_ms"], 95)),
                "ssim_source": _round(statistics.fmean(v["ssim_source"]), 4)
                if v["ssim_source"]
                else None,
            }
            for v in [*probes, *([direct] if direct else [])]
        ],
        "direct": direct is not None and direct["frames"] > 0,
        "frames_received": total_frames,
        "viewers_without_frames": sum(1 for v in served if v["frames"] == 0),
        "bit_exact_pct": _pct(exact, total_frames),
        "ssim_source_mean": _round(statistics.fmean(ssim_src), 4) if ssim_src else None,
        "ssim_direct_min": _round(min(ssim_direct), 4) if ssim_direct else None,
        "ssim_direct_mean": _round(statistics.fmean(ssim_direct), 4) if ssim_direct else None,
        "discontinuities": sum(v["discontinuities"] for v in served),
        "not_shown_until_keyframe": sum(v["not_shown_until_keyframe"] for v in served),
        "sink_packets_per_s": {
            "n": len(sink_pps),
            "min": _round(min(sink_pps)) if sink_pps else None,
            "median": _round(statistics.median(sink_pps)) if sink_pps else None,
            # RTP packets/s the publisher's frames make (aiortc packetizes at ≤ 1300 bytes)
            "publisher_estimate": _round(sum(-(-f[3] // 1294) for f in frames) / window),
        },
        "late_join_ms": {
            "p50": _round(percentile(joins, 50)),
            "max": _round(max(joins)) if joins else None,
            "n": len(joins),
        },
        "publisher": {
            "fps": _round(len(frames) / window, 2),
            "bitrate_kbps": _round(sum(f[3] for f in frames) * 8 / window / 1000, 0),
            "keyframes_total": sum(1 for f in pub["frames"] if f[4]),
            "keyframes_in_window": sum(1 for f in frames if f[4]),
            "encode_ms_p50": _round(percentile([f[6] for f in frames], 50)),
            "target_bitrate": pub["target_bitrate"],
            "proxy": pub["proxy"],
        },
        "keyframe_requests": {
            "total": len(in_run),
            "max_in_any_1s": max_per_s,
            "min_interval_ms": _round(min(intervals) * 1000, 0) if intervals else None,
            "direct": pub["direct_keyframe_requests"],
        },
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


# -- report ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def per_viewer_slopes(results: list[dict[str, Any]]) -> None:
    """CPU per extra viewer: (CPU at N − CPU at 1) / (N − 1), per mode, same run."""
    base = {
        r["mode"]: r
        for r in results
        if r["viewers"] == 1 and r["loss_pct"] is None and "error" not in r
    }
    for r in results:
        b = base.get(r["mode"])
        cpu = (r.get("cpu_pct") or {}).get("server")
        one = (b.get("cpu_pct") or {}).get("server") if b else None
        if r["viewers"] > 1 and cpu is not None and one is not None:
            r["cpu_per_extra_viewer"] = round((cpu - one) / (r["viewers"] - 1), 3)


ROWS: list[tuple[str, Any, bool]] = [
    # label, getter, show a transcode/forward ratio
    ("viewers connected (probes+light+sinks)", lambda r: _viewers(r), False),
    ("sink viewers: packets/s at socket min / med", lambda r: _sinks(r), False),
    ("fps per viewer min / median", lambda r: (r.get("fps_min"), r.get("fps_median")), False),
    ("latency p50 / p95 ms (probes)", lambda r: _lat(r, "p50", "p95"), True),
    ("direct p50 / p95 ms", lambda r: _lat(r, "direct_p50", "direct_p95"), False),
    ("relay-added p50 / p95 ms", lambda r: _lat(r, "relay_added_p50", "relay_added_p95"), True),
    ("all-viewer latency p50 / p95 ms", lambda r: _lat(r, "all_viewers_p50", "all_viewers_p95"), False),  # noqa: E501
    ("freezes >200 ms (all viewers)", lambda r: r.get("freezes"), False),
    ("longest gap ms", lambda r: r.get("longest_gap_ms"), False),
    ("server CPU % of a core", lambda r: (r.get("cpu_pct") or {}).get("server"), True),
    ("CPU per extra viewer %", lambda r: r.get("cpu_per_extra_viewer"), True),
    ("server RSS MB", lambda r: r.get("server_rss_mb"), True),
    ("server threads", lambda r: r.get("server_threads"), True),
    ("bit-exact frames %", lambda r: r.get("bit_exact_pct"), False),
    ("SSIM vs source (probes)", lambda r: _ssim(r.get("ssim_source_mean")), False),
    ("SSIM vs direct (min)", lambda r: _ssim(r.get("ssim_direct_min")), False),
    ("late join first frame p50 / max ms", lambda r: _join(r), False),
    ("keyframe requests (max in 1 s)", lambda r: _kf(r), False),
    ("publisher kbit/s / fps", lambda r: _pub(r), False),
    ("client core: publisher / loadgen CPU %", lambda r: _client(r), False),
    ("other processes' load % cpu0 / cpu1", lambda r: _foreign(r), False),
]  # fmt: skip


def _lat(r: dict[str, Any], a: str, b: str) -> tuple[Any, Any] | None:
    lat = r.get("latency_ms")
    return (lat[a], lat[b]) if lat else None


def _viewers(r: dict[str, Any]) -> str | None:
    if r.get("connected") is None:
        return None
    return f"{r['connected']} ({r['probes']}+{r.get('live_light', 0)}+{r.get('sinks', 0)})"


def _sinks(r: dict[str, Any]) -> str | None:
    s = r.get("sink_packets_per_s")
    if not s or not s["n"]:
        return None
    return (
        f"{_fmt(s['min'], 0)} / {_fmt(s['median'], 0)} "
        f"(source ≈ {_fmt(s.get('publisher_estimate'), 0)})"
    )


def _ssim(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def _join(r: dict[str, Any]) -> tuple[Any, Any] | None:
    j = r.get("late_join_ms")
    return (j["p50"], j["max"]) if j and j["n"] else None


def _kf(r: dict[str, Any]) -> str | None:
    k = r.get("keyframe_requests")
    return f"{k['total']} ({k['max_in_any_1s']})" if k else None


def _pub(r: dict[str, Any]) -> tuple[Any, Any] | None:
    p = r.get("publisher")
    return (p["bitrate_kbps"], p["fps"]) if p else None


def _client(r: dict[str, Any]) -> str | None:
    cpu = r.get("cpu_pct")
    if not cpu:
        return None
    gens = sum(v for k, v in cpu.items() if k.startswith("loadgen") and v is not None)
    return f"{_fmt(cpu.get('publisher'), 0)} / {gens:.0f}"


def _foreign(r: dict[str, Any]) -> str | None:
    """Core busy time not spent by this benchmark's processes (others' tests, the kernel)."""
    busy, cpu = r.get("core_busy_pct"), r.get("cpu_pct")
    if not busy or not cpu:
        return None
    server = cpu.get("server") or 0.0
    clients = sum(v or 0.0 for k, v in cpu.items() if k != "server")
    own = {"0": server, "1": clients}
    return " / ".join(
        _fmt(max(0.0, (busy.get(c) or 0.0) - own.get(c, 0.0)), 0) for c in sorted(busy)
    )


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(_fmt(v) for v in value)
    return _fmt(value)


def _first_number(value: Any) -> float | None:
    if isinstance(value, tuple):
        value = value[0]
    return float(value) if isinstance(value, int | float) else None


def table(results: list[dict[str, Any]], modes: list[str]) -> str:
    """Markdown: one row per metric, forward and transcode side by side for each viewer count
    (with their ratio); a mode not run at some count (``--transcode-max-viewers``) is left out."""
    base = [r for r in results if r["loss_pct"] is None]
    counts = sorted({r["viewers"] for r in base})
    by_key = {(r["mode"], r["viewers"]): r for r in base}
    columns: list[tuple[int, list[str]]] = [
        (n, [m for m in modes if (m, n) in by_key]) for n in counts
    ]
    header = ["metric"]
    for n, present in columns:
        header += [f"{_short(m)} N={n}" for m in present]
        if len(present) == 2:
            header.append(f"tx/fwd N={n}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get, ratio in ROWS:
        row = [label]
        for n, present in columns:
            values = []
            for mode in present:
                r = by_key[(mode, n)]
                if "error" in r and "latency_ms" not in r:
                    row.append("error")
                    values.append(None)
                else:
                    value = get(r)
                    row.append(_cell(value))
                    values.append(_first_number(value))
            if len(present) == 2:
                a, b = values
                row.append(f"×{b / a:.1f}" if ratio and a and b is not None and a > 0 else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def loss_table(results: list[dict[str, Any]]) -> str:
    rows = [r for r in results if r["loss_pct"] is not None]
    if not rows:
        return ""
    header = [
        "mode", "loss %", "RTT ms", "viewers", "fps min / med", "latency p50 / p95",
        "relay-added p50 / p95", "longest freeze per probe ms", "freezes >500 ms per probe",
        "freezes >200 ms (all)", "keyframe req.", "bit-exact %", "proxy dropped up / down",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if "error" in r and "latency_ms" not in r:
            lines.append(f"| {r['mode']} | {r['loss_pct']:g} | error: {r['error'][:80]} |")
            continue
        probes = [p for p in r["probe_stats"] if not p["name"].endswith("direct")]
        proxy = r["publisher"]["proxy"] or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    r["mode"],
                    f"{r['loss_pct']:g}",
                    _fmt(r["rtt_ms"], 0),
                    str(r["connected"]),
                    _cell((r["fps_min"], r["fps_median"])),
                    _cell(_lat(r, "p50", "p95")),
                    _cell(_lat(r, "relay_added_p50", "relay_added_p95")),
                    ", ".join(_fmt(p["longest_gap_ms"], 0) for p in probes),
                    ", ".join(str(p["freezes_500"]) for p in probes),
                    str(r["freezes"]),
                    _kf(r) or "–",
                    _fmt(r["bit_exact_pct"]),
                    f"{proxy.get('up', {}).get('dropped', '–')} / "
                    f"{proxy.get('down', {}).get('dropped', '–')}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _short(mode: str) -> str:
    return {"forward": "fwd", "transcode": "tx"}.get(mode, mode)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1–2 viewers, ~4 s each")
    p.add_argument("--viewers", default="1,10,50,100", help="viewer counts (comma separated)")
    p.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    p.add_argument("--modes", default="forward,transcode")
    p.add_argument("--seconds", type=float, default=20.0, help="steady measurement window")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after all viewers play")
    p.add_argument("--json", type=Path, help="write every result here")
    p.add_argument("--loss", default="", help="loss scenarios in %% (e.g. 0,1,3): via the proxy")
    p.add_argument("--rtt-ms", type=float, default=150.0, help="RTT added by the proxy")
    p.add_argument("--loss-viewers", type=int, default=2, help="viewers in loss scenarios")
    p.add_argument("--probes", type=int, default=2, help="decoding probe viewers per scenario")
    p.add_argument("--joins", type=int, default=3, help="late joins measured per scenario")
    p.add_argument("--join-gap", type=float, default=1.0, help="seconds between late joins")
    p.add_argument("--bitrate", type=int, default=1_500_000, help="publisher bitrate (0: REMB)")
    p.add_argument(
        "--transcode-max-viewers",
        type=int,
        default=10,
        help="skip transcode scenarios above this (each viewer costs an encoder)",
    )
    p.add_argument("--light-per-loadgen", type=int, default=50, help="light viewers per process")
    p.add_argument(
        "--live-light",
        type=int,
        default=12,
        help="light viewers that process what they receive; the rest are sinks (drop media on "
        "arrival after their first frame: one client core cannot receive 100 streams)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=100.0,
        help="before each scenario wait until no core is busier than this %% (shared machines)",
    )
    p.add_argument("--quiet-max-wait", type=float, default=120.0)
    p.add_argument(
        "--rt",
        type=int,
        default=0,
        help="run the benchmark's processes SCHED_FIFO at this priority (root; publisher +1) "
        "so other processes on a shared machine cannot preempt them",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the benchmark's processes; -10 (root) gives other processes on a "
        "shared machine a small share of the pinned cores",
    )
    p.add_argument("--server-cpu", default="0", help="taskset CPU list of the server")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list of the load generators")
    p.add_argument("--publisher-cpu", default="1", help="taskset CPU list of the publisher")
    p.add_argument("--profile", choices=("none", "py-spy", "cprofile"), default="none")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, profiles)")
    args = p.parse_args(argv)
    if args.quick:
        args.viewers = "1,2" if "--viewers" not in (argv or sys.argv) else args.viewers
        args.seconds, args.warmup, args.joins, args.probes = 4.0, 1.5, 1, 1
    if args.profile == "py-spy" and not (
        shutil.which("py-spy") or (Path(PYTHON).parent / "py-spy").exists()
    ):
        p.error("--profile py-spy needs py-spy (pip install py-spy) or use --profile cprofile")
    args.viewer_counts = [int(v) for v in args.viewers.split(",") if v.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.loss_list = [float(v) for v in args.loss.split(",") if v.strip()]
    for mode in args.mode_list:
        if mode not in ("forward", "transcode"):
            p.error(f"unknown mode {mode!r}")
    args.server_cpu = None if args.server_cpu.lower() == "none" else args.server_cpu
    args.client_cpu = None if args.client_cpu.lower() == "none" else args.client_cpu
    args.publisher_cpu = None if args.publisher_cpu.lower() == "none" else args.publisher_cpu
    return args


def plan(cfg: argparse.Namespace) -> list[Scenario]:
    scenarios = []
    for mode in cfg.mode_list:
        for n in cfg.viewer_counts:
            if mode == "transcode" and n > cfg.transcode_max_viewers:
                continue
            scenarios.append(Scenario(mode, n))
    for loss in cfg.loss_list:
        for mode in cfg.mode_list:
            scenarios.append(Scenario(mode, cfg.loss_viewers, loss))
    return scenarios


def header(cfg: argparse.Namespace, info: dict[str, Any]) -> str:
    return (
        f"EndoLink fan-out benchmark — {cfg.codec} 1280x720@30, publisher bitrate "
        f"{'REMB-driven' if not cfg.bitrate else f'{cfg.bitrate / 1e6:g} Mbit/s (pinned)'}\n"
        f"machine: {info['nproc']} × {info['cpu_model']}, Linux {info['kernel']}, "
        f"Python {info['python']}, aiortc {info['aiortc']}, git {info['git_head']}"
        f"{' (+ uncommitted relay/signaling changes)' if info['git_dirty_media_files'] else ''}, "
        f"load average at start {' '.join(info['loadavg_at_start'])}\n"
        f"pinning: server taskset -c {cfg.server_cpu}; load generators -c {cfg.client_cpu}; "
        f"publisher -c {cfg.publisher_cpu}; "
        + (f"SCHED_FIFO {cfg.rt} (publisher {cfg.rt + 1})" if cfg.rt else f"nice {cfg.nice}")
        + "\n"
        f"window {cfg.seconds:g} s after {cfg.warmup:g} s warm-up; probes {cfg.probes} "
        f"(decode) + light viewers (count only) + 1 direct probe"
    )


async def amain(cfg: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    info = machine()
    print(header(cfg, info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="endolink-bench-"))
    results: list[dict[str, Any]] = []
    failed = False
    try:
        consult = make_consultation(work / "data", cfg.codec)
        for sc in plan(cfg):
            quiet = None
            if cfg.quiet_threshold < 100:
                quiet = await wait_quiet(cfg.quiet_threshold, cfg.quiet_max_wait)
            print(f"… {sc.label}" + (f"  (cores before: {quiet})" if quiet else ""), flush=True)
            started = time.monotonic()
            result = await run_scenario(cfg, sc, consult, work)
            result["before_start"] = quiet
            result["elapsed_s"] = round(time.monotonic() - started, 1)
            results.append(result)
            if "error" in result:
                failed = True
                print(f"  ERROR {result['error']}", flush=True)
                for name, lines in result.get("log_tail", {}).items():
                    print(f"  --- {name} log (tail)\n    " + "\n    ".join(lines), flush=True)
            else:
                print(f"  {_oneline(result)}", flush=True)
    finally:
        per_viewer_slopes(results)
        info["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        main_table = table(results, cfg.mode_list)
        lossy = loss_table(results)
        print("\n" + main_table)
        if lossy:
            print("\nloss (publisher→server path through the impairment proxy)\n" + lossy)
        if cfg.json:
            payload = {
                "machine": info,
                "config": {
                    k: v
                    for k, v in vars(cfg).items()
                    if isinstance(v, str | int | float | list | type(None))
                },
                "results": results,
                "table": main_table,
                "loss_table": lossy,
            }
            cfg.json.write_text(json.dumps(payload, indent=1, default=str))
            print(f"\nJSON: {cfg.json}")
        if cfg.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def _oneline(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"fps {r['fps_min']}/{r['fps_median']}  latency {lat['p50']}/{lat['p95']} ms "
        f"(direct {lat['direct_p50']}/{lat['direct_p95']})  server CPU "
        f"{r['cpu_pct']['server']} %  RSS {r['server_rss_mb']} MB  bit-exact "
        f"{r['bit_exact_pct']} %  freezes {r['freezes']}"
    )


def main(argv: list[str] | None = None) -> int:
    global NICE, RT_PRIORITY
    cfg = parse_args(argv)
    NICE, RT_PRIORITY = cfg.nice, cfg.rt
    if cfg.server_cpu is not None and shutil.which("taskset") is None:
        print("taskset not found: use --server-cpu none --client-cpu none --publisher-cpu none")
        return 2
    try:
        return asyncio.run(amain(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(main())
