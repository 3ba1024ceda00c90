"""Narrow links: the viewer quality ladder against plain forwarding, in the same run.

    python -m bench.ladder [--scenarios viewers,uplink] [--codecs VP8,H264]
                           [--modes plain,ladder,pinned] [--seconds 35] [--warmup 10]
                           [--json out.json] [--keep DIR]

Every run starts, each by itself and stopped by pid: ``endolink serve`` (through ``bench.serve``,
which publishes its threads' names so each rendition's CPU can be read from /proc), a publisher
(``bench.publisher``: the stamped 720p30 test pattern, aiortc's encoder) and three viewers
(``bench.ladder_viewer``, one process each, decoding), each through its own ``ImpairmentProxy``:
uncapped, a 700 kbit/s downlink and a 350 kbit/s downlink.

Scenarios (``--scenarios``):

* ``viewers``: the publisher uncapped, its encoder pinned at ``--bitrate`` (1.5 Mbit/s);
* ``uplink``: the publisher behind an uplink cap of ``--uplinks`` (1200 and 600 kbit/s), its
  encoder following the relay's REMB (``--bitrate 0``), as the clinic's would.

Modes (``--modes``), one run each per scenario and codec:

* ``plain``: every viewer asks ``?quality=original`` (plain forwarding; before the ladder the
  server ignores the parameter and forwards, which is the same);
* ``ladder``: every viewer asks ``?quality=auto`` (the default: chosen by its own feedback);
* ``pinned``: uncapped viewers pinned to ``original``, ``540p`` and ``360p``: each rung's CPU and
  picture quality without a narrow link in the way.

Measured over the window after the warm-up, per viewer: fps (distinct stamped counters shown),
freezes over 500 ms and the longest gap, latency p50/p95 (stamp drawn by the publisher → shown,
one host clock), sizes, the quality shown over time (bit-exact → ``original``, else the height's
rung; and the ``EndoLink-Quality`` answer header), bit-exactness, SSIM against the regenerated
source; per run: server CPU (whole process, and each named thread: renditions). Prints the
tables with the issue's targets; ``docs/benchmarks.md`` has a run and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fanout
from . import ladder_stats as stats
from .common import CLK_TCK, LOOPBACK, cpu_percent, free_port, proc_sample, shared_token_env
from .fanout import (
    PYTHON,
    Child,
    Processes,
    cli,
    core_busy,
    core_times,
    make_consultation,
    pinned,
    save_json,
    wait_port,
    wait_quiet,
)
from .ladder_tables import comparison_table, cpu_table, profile_table, rung_table, viewer_table

VIEWERS = (("uncapped", 0.0), ("700k", 700.0), ("350k", 350.0))
PINNED = (("original", "original"), ("540p", "540p"), ("360p", "360p"))
SOURCE_HEIGHT = 720


@dataclass(frozen=True)
class Run:
    scenario: str  # viewers | uplink
    mode: str  # plain | ladder | pinned
    codec: str
    up_kbps: float = 0.0
    rungs_kbps: str = ""
    "ENDOLINK_LADDER_KBPS for this run (empty: the server's default)."
    vp8_speed: str = ""
    "The rungs' libvpx cpu-used for this run (empty: the relay's)."
    profiled: bool = False
    "Rendition threads under cProfile (their CPU figures include its overhead)."

    @property
    def label(self) -> str:
        where = f"uplink {self.up_kbps:g}k" if self.up_kbps else self.scenario
        rungs = f" (rungs {self.rungs_kbps} kbit/s)" if self.rungs_kbps else ""
        speed = f" (VP8 cpu-used {self.vp8_speed})" if self.vp8_speed else ""
        profiled = " (cProfile)" if self.profiled else ""
        return f"{where} {self.codec} {self.mode}{rungs}{speed}{profiled}"

    def viewers(self) -> list[tuple[str, float, str]]:
        """(name, downlink kbit/s or 0, quality asked)."""
        if self.mode == "pinned":
            return [(f"pinned {name}", 0.0, quality) for name, quality in PINNED]
        quality = "original" if self.mode == "plain" else "auto"
        return [(name, kbps, quality) for name, kbps in VIEWERS]


def plan(cfg: argparse.Namespace) -> list[Run]:
    runs = []
    scenarios = cfg.scenarios.split(",")
    modes = cfg.modes.split(",")
    for codec in cfg.codecs.split(","):
        cases = [("viewers", 0.0)] if "viewers" in scenarios else []
        if "uplink" in scenarios and codec == "VP8":
            cases += [("uplink", float(up)) for up in cfg.uplinks.split(",")]
        for scenario, up in cases:
            for mode in modes:
                if mode == "pinned" and up:
                    continue
                relay = mode != "plain"  # the rung settings only matter where rungs run
                kbps = (cfg.ladder_kbps or "") if relay else ""
                speed = (cfg.vp8_speed or "") if relay and codec == "VP8" else ""
                runs.append(Run(scenario, mode, codec, up, kbps, speed, cfg.profile))
    return runs


# -- server threads ----------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    found = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            fields = text[text.rindex(")") + 2 :].split()
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def thread_groups(
    before: dict[int, float], after: dict[int, float], names: dict[str, str], span: float, cid: str
) -> dict[str, float]:
    """% of one core per thread name over ``span`` s (the consultation id cut from names; a
    thread born inside the window counts from 0; unnamed threads are aiortc's or the OS's)."""
    groups: dict[str, float] = {}
    for tid, cpu in after.items():
        name = names.get(str(tid), "other (unnamed)").replace(f"consultation:{cid} ", "")
        name = re.sub(r"ThreadPoolExecutor-\d+_\d+", "executor", name)
        groups[name] = groups.get(name, 0.0) + 100 * (cpu - before.get(tid, 0.0)) / span
    return {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v >= 0.5}


THREAD_SAMPLE_S = 0.5


class ThreadWatch:
    """The server's threads' CPU over the window, sampled every ``THREAD_SAMPLE_S``: a thread
    that ends inside the window (a rung stopped after a failed trial) counts up to its last
    sample, one born inside it from zero."""

    def __init__(self, pid: int, names_file: Path) -> None:
        self.pid = pid
        self.names_file = names_file
        self.first = thread_cpu(pid)
        self.last = dict(self.first)
        self.names: dict[str, str] = {}
        self.sample()

    def sample(self) -> None:
        self.last.update(thread_cpu(self.pid))
        with contextlib.suppress(OSError, ValueError):
            self.names.update(json.loads(self.names_file.read_text()))

    def groups(self, span: float, cid: str) -> dict[str, float]:
        return thread_groups(self.first, self.last, self.names, span, cid)


# -- one run -----------------------------------------------------------------------------------


async def one_run(cfg: argparse.Namespace, run: Run, work: Path) -> dict[str, Any]:
    logs = work / "logs" / run.label.replace(" ", "-")
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes(logs)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    data = work / f"data-{run.label.replace(' ', '-')}"
    consult = make_consultation(data, run.codec)
    env = {"ENDOLINK_ICE_HOST_ADDRESSES": LOOPBACK, "ENDOLINK_HOST": LOOPBACK}
    env |= shared_token_env(8) | {"PYTHONUNBUFFERED": "1"}
    if run.rungs_kbps:
        env["ENDOLINK_LADDER_KBPS"] = run.rungs_kbps
    tokens = [  # one identity per viewer, made before anything runs
        cli(data, "token", f"--consultation={consult.id}", "--role", "surgeon")
        for _ in run.viewers()
    ]
    names_file = logs / "threads.json"
    result: dict[str, Any] = {"run": run.label, **vars(run)}
    result["before"] = await wait_quiet(cfg.quiet, cfg.quiet_wait)
    try:
        serve = [PYTHON, "-m", "bench.serve", "--thread-names", str(names_file), "--"]
        if run.profiled:
            serve[3:3] = ["--profile-threads", "rendition", str(logs)]
        if run.vp8_speed:
            serve[3:3] = ["--vp8-speed", run.vp8_speed]
        serve += ["serve", "--data-dir", str(data), "--port", str(port)]
        server = await procs.start("server", pinned(None, serve), env, stdout=False)
        pub = [PYTHON, "-m", "bench.publisher", "--whip", f"{base}/whip/{consult.id}"]
        pub += ["--token", consult.clinic, "--codec", run.codec]
        pub += ["--bitrate", "0" if run.up_kbps else str(cfg.bitrate)]
        if run.up_kbps:
            pub += ["--up-kbps", str(run.up_kbps)]
        publisher = await procs.start("publisher", pinned(None, pub))
        await wait_port(port, server, 30)
        control = (await publisher.read_event(60))["control"]
        viewers: list[Child] = []
        for (name, kbps, quality), token in zip(run.viewers(), tokens, strict=True):
            args = [PYTHON, "-m", "bench.ladder_viewer", "--name", name, "--codec", run.codec]
            args += ["--whep", f"{base}/whep/{consult.id}?quality={quality}"]
            args += ["--ws", f"ws://{LOOPBACK}:{port}/ws/{consult.id}"]
            args += ["--token", token, "--publisher", control]
            args += ["--down-kbps", str(kbps), "--queue-ms", str(cfg.queue_ms)]
            args += ["--nack", cfg.nack]
            viewers.append(
                await procs.start(f"viewer-{name.replace(' ', '-')}", pinned(None, args))
            )
        readies = [await v.read_event(60) for v in viewers]
        result["ready"] = readies
        await asyncio.sleep(cfg.warmup)
        cpu0, cores0 = proc_sample(server.pid), core_times()
        threads = ThreadWatch(server.pid, names_file)
        t0 = time.time()
        while time.time() < t0 + cfg.seconds:
            await asyncio.sleep(THREAD_SAMPLE_S)
            threads.sample()
        t1 = time.time()
        cpu1, cores1 = proc_sample(server.pid), core_times()
        result["core_busy_pct"] = core_busy(cores0, cores1)
        result["window"] = [t0, t1]
        result["server_cpu"] = cpu_percent(cpu0, cpu1)
        result["threads"] = threads.groups(t1 - t0, consult.id)
        publisher.send("report")
        pub_report = await publisher.read_event(60)
        result["publisher"] = {
            "target_bitrate": pub_report["target_bitrate"],
            "kbps": _published_kbps(pub_report["frames"], t0, t1),
            "fps": sum(1 for f in pub_report["frames"] if t0 <= f[5] <= t1) / (t1 - t0),
            "proxy": pub_report["proxy"],
        }
        for v in viewers:
            v.send(f"report {t0} {t1}")
        result["viewers"] = [_viewer(await v.read_event(180), t0, t1) for v in viewers]
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await procs.close()
    for v in result.get("viewers", []):
        v["moves"] = moves_from_log(logs / "server.log", v.pop("session"), v.pop("answer_at"))
    result["server_log"] = _rendition_lines(logs / "server.log")
    result["profiles"] = {p.stem: profile_summary(p) for p in sorted(logs.glob("*.prof"))}
    return result


def profile_summary(path: Path, top: int = 8) -> dict[str, Any]:
    """A thread's cProfile: its total time and the functions with the most own time."""
    import pstats

    table = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values())
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        "total_s": total,
        "top": [
            [pstats.func_std_string(func), row[1], row[2], row[2] / total] for func, row in rows
        ],
    }


def _published_kbps(frames: list[list[Any]], t0: float, t1: float) -> float:
    """The publisher's encoded bitrate inside the window (frame sizes by encode time)."""
    return sum(f[3] for f in frames if t0 <= f[5] <= t1) * 8 / (t1 - t0) / 1000


def _viewer(report: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    frames = report.pop("frames")
    summary = stats.summarise(frames, t0, t1, SOURCE_HEIGHT)
    summary |= stats.received(report.pop("encoded"), t0, t1)
    summary["long_freezes"] = [  # [s after the answer, ms]: beside the relay's moves
        [round(start - report["answer_at"], 2), round(ms)] for start, ms in summary["long_freezes"]
    ]
    down = report["proxy"]["down"]["shaper"]
    return {
        **summary,
        "name": report["name"],
        "down_kbps": report["down_kbps"],
        "quality_header": report["quality_header"],
        "session": report["session"],
        "answer_at": report["answer_at"],
        "quality_events": [
            [round(t - report["answer_at"], 2), m["quality"], m.get("reason")]
            for t, m in report["quality_events"]
        ],
        "ws_errors": report["ws_errors"],
        "timeline": stats.timeline(
            [f for f in frames if f[0] <= t1], report["answer_at"], SOURCE_HEIGHT
        ),
        "ssim": stats.ssim_by_height(report["ssim"]),
        "ssim_samples": report["ssim"],
        "link_kbps": down["sent_bytes"] * 8 / 1000 / max(t1 - report["answer_at"], 1e-3),
        "link_dropped": down["dropped"],
        "proxy": report["proxy"],
        "discontinuities": len([t for t in report["discontinuities"] if t0 <= t <= t1]),
        "decode_errors": report["decode_errors"],
    }


_MOVE = re.compile(r"^(\d\d):(\d\d):(\d\d) .*Selector\(\S+ viewer:(\S+)\) (\S+) → (\S+) \((\w+)\)")


def moves_from_log(log: Path, session: str, answer_at: float) -> list[list[Any]]:
    """The relay's moves of one viewer session from its log (``Selector(… viewer:ID) a → b
    (reason)``): [[s after the answer, to, reason]], to the log's 1 s resolution."""
    if not log.exists() or not session:
        return []
    day = answer_at - answer_at % 86400  # the log's clock is UTC hh:mm:ss
    found = []
    for line in log.read_text(errors="replace").splitlines():
        m = _MOVE.match(line)
        if m and session.startswith(m.group(4)):
            at = day + int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
            found.append([round(at - answer_at), m.group(6), m.group(7)])
    return found


def _rendition_lines(log: Path) -> list[str]:
    """The server's log lines about renditions and quality (their start, stop and CPU)."""
    if not log.exists():
        return []
    pattern = re.compile(r"Rendition|[Ll]adder|[Qq]uality")
    return [
        line[-300:] for line in log.read_text(errors="replace").splitlines() if pattern.search(line)
    ][-40:]


# -- main --------------------------------------------------------------------------------------


async def amain(cfg: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="endolink-ladder-") as tmp:
        work = cfg.keep or Path(tmp)
        for run in plan(cfg):
            r = await one_run(cfg, run, work)
            print(f"{run.label}: {r.get('error') or 'done'}", file=sys.stderr, flush=True)
            results.append(r)
    tables = [comparison_table, rung_table, viewer_table, cpu_table]
    text = "\n\n".join(table(results) for table in tables)
    if any(r["profiled"] for r in results):
        text += "\n\n" + profile_table(results)
    print(text)
    if cfg.json:
        save_json(cfg.json, cfg, results, text)
    return 0 if all("error" not in r for r in results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ladder", description=__doc__)
    p.add_argument("--scenarios", default="viewers,uplink")
    p.add_argument("--codecs", default="VP8", help="VP8, H264 or both (the uplink runs VP8 only)")
    p.add_argument("--modes", default="plain,ladder,pinned")
    p.add_argument("--uplinks", default="1200,600", help="uplink caps in kbit/s")
    p.add_argument(
        "--nack", default="browser", help="viewers NACK like a browser, or like the relay (relay)"
    )
    p.add_argument("--queue-ms", type=float, default=250.0, help="queue of each capped link")
    p.add_argument("--bitrate", type=int, default=1_500_000, help="publisher, uncapped runs")
    p.add_argument("--seconds", type=float, default=35.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument(
        "--quiet", type=float, default=50.0, help="before a run, wait until no core is busier (%%)"
    )
    p.add_argument("--quiet-wait", type=float, default=60.0, help="… but no longer than this (s)")
    p.add_argument("--rt", type=int, default=0, help="SCHED_RR priority of every process (root)")
    p.add_argument(
        "--profile", action="store_true", help="cProfile each rendition thread (adds overhead)"
    )
    p.add_argument("--ladder-kbps", help="the server's ENDOLINK_LADDER_KBPS (default: its own)")
    p.add_argument("--vp8-speed", help="the rungs' libvpx cpu-used (default: the relay's)")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", type=Path, help="work here and keep the logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    fanout.RT_PRIORITY, fanout.RT_POLICY = cfg.rt, "-r"
    return asyncio.run(amain(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
