"""Consultations per core: what one consultation and one extra viewer cost the server, for this
tree and, in the same run, a baseline revision.

    python -m bench.percore [--baseline REF] [--scenarios 1x2,1x6,4x2] [--rounds 1] [--seconds 30]
                            [--warmup 15] [--width 1280] [--height 720] [--fps 30]
                            [--bitrate 1500000] [--quality original|auto] [--env NAME=VALUE ...]
                            [--json out.json] [--keep]

Builds: the ``--baseline`` revision (checked out with ``git worktree add --detach`` into the work
directory, its own server and CLI) and then this tree. Per build and scenario ``NxV`` (N
consultations, V viewers each) the harness starts, and stops by pid: a fresh server
(``bench.serverproc.ServerProcess``, its own data directory; the build's own CLI makes the
consultations, consent on file, so every one records), ONE publisher process whose one encoder
feeds all N WHIP sessions (``bench.publisher --also``: the stamped pattern, VP8 at ``--bitrate``),
one viewer process (``bench.loadrun _viewers``: light viewers that hash frames, never decode) and
a surgeon page's WebSocket per consultation (``bench.loadrun.Page``). After ``--warmup`` s it
reads the server's CPU time from /proc (user + system, every thread) over ``--seconds``. With
``--rounds N`` all of that is repeated N times, interleaved, and the costs use the medians.
The viewers pin the clinic's stream (``--quality original``); ``--quality auto`` measures what a
browser asks by default, each viewer's video through a ``relay.selector.Selector``.

Derived, per build: a consultation's cost (the first scenario's CPU ÷ its N), the cost of an
extra consultation (between the two scenarios with the first one's V), of an extra viewer
(between the two with the first one's N), and consultations per core (100 % ÷ the extra
consultation's cost). CPU time holds on a shared machine; the server is not pinned.
``--env`` sets server settings for both builds (e.g. ``ENDOLINK_PICTURE_GUARD=0``, to see what
a feature costs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import add_quality_argument, free_port, proc_sample, run_in_work_dir
from .fanout import ROOT, machine, make_consultation
from .loadrun import loaded, scrape
from .serverproc import ServerProcess

THIS_TREE = "this tree"


@dataclass(frozen=True)
class Scenario:
    consultations: int
    viewers: int

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        n, _, v = spec.partition("x")
        return cls(int(n), int(v or 2))

    def __str__(self) -> str:
        return f"{self.consultations}x{self.viewers}"


@dataclass
class Measured:
    build: str
    scenario: str
    cpu_pct: float
    "Server CPU, % of one core, over the window."
    loop_pct: float
    "Of which its main thread: the event loop, where every packet is received and forwarded."
    threads: int
    rss_mb: float
    sessions_ok: bool
    "Every publisher and viewer connected, and every consultation recording, at the end."
    round: int = 0


async def measure(
    cfg: argparse.Namespace,
    build: str,
    source: Path | None,
    scenario: Scenario,
    work: Path,
    round_: int = 0,
) -> Measured:
    logs = work / f"{build.replace(' ', '-')}-{scenario}-round{round_}"
    logs.mkdir(parents=True)
    data = logs / "data"
    consults = [make_consultation(data, "VP8", source) for _ in range(scenario.consultations)]
    server = ServerProcess(data, free_port(), logs / "server.log", source=source, env=cfg.env)
    clients = argparse.Namespace(
        share=scenario.consultations,
        group=scenario.consultations,
        viewers=scenario.viewers,
        quality=cfg.quality,
        fps=cfg.fps,
        bitrate=cfg.bitrate,
        width=cfg.width,
        height=cfg.height,
    )
    async with loaded(clients, server, consults, logs) as load:
        assert server.process is not None
        await asyncio.sleep(cfg.warmup)
        before = proc_sample(server.process.pid)
        await asyncio.sleep(cfg.seconds)
        after = proc_sample(server.process.pid)
        live = await scrape(load.http, server.base_url)
    assert before is not None and after is not None, "the server died"
    window = after["t"] - before["t"]
    cpu = 100.0 * (after["cpu_s"] - before["cpu_s"]) / window
    loop = 100.0 * (after["main_cpu_s"] - before["main_cpu_s"]) / window
    connected = sum(v for k, v in live["sessions"].items() if k.endswith(":connected"))
    all_up = (
        connected >= scenario.consultations * (1 + scenario.viewers)
        and live.get("recordings", 0) >= scenario.consultations
    )
    threads, rss = int(after["threads"]), after["rss_mb"]
    measured = Measured(build, str(scenario), cpu, loop, threads, rss, all_up, round_)
    print(f"  round {round_ + 1}  {build:>12}  {scenario}: {cpu:5.1f} % of a core", flush=True)
    return measured


def derive(rows: list[Measured], scenarios: list[Scenario]) -> dict[str, float | None]:
    """Per-consultation and per-viewer costs of one build from its scenarios (see module doc),
    each scenario's CPU the median of its rounds; an extra viewer also on the event loop alone
    (its sends are there, away from the noise of the decode and recorder threads)."""
    cpu = _medians(rows, "cpu_pct")
    first = scenarios[0]
    result: dict[str, float | None] = {
        "per_consultation_pct": cpu[str(first)] / first.consultations,
        "extra_consultation_pct": None,
        "extra_viewer_pct": None,
        "extra_viewer_loop_pct": None,
    }
    more_consultations = [
        s for s in scenarios if s.viewers == first.viewers and s.consultations > first.consultations
    ]
    if more_consultations:
        s = more_consultations[0]
        extra = (cpu[str(s)] - cpu[str(first)]) / (s.consultations - first.consultations)
        result["extra_consultation_pct"] = extra
    more_viewers = [
        s for s in scenarios if s.consultations == first.consultations and s.viewers > first.viewers
    ]
    if more_viewers:
        s = more_viewers[0]
        added = (s.viewers - first.viewers) * s.consultations
        loop = _medians(rows, "loop_pct")
        result["extra_viewer_pct"] = (cpu[str(s)] - cpu[str(first)]) / added
        result["extra_viewer_loop_pct"] = (loop[str(s)] - loop[str(first)]) / added
    marginal = result["extra_consultation_pct"] or result["per_consultation_pct"]
    result["consultations_per_core"] = 100.0 / marginal if marginal and marginal > 0 else None
    return result


def _medians(rows: list[Measured], field: str) -> dict[str, float]:
    return {
        s: statistics.median(getattr(r, field) for r in rows if r.scenario == s)
        for s in _order(rows)
    }


def _order(rows: list[Measured]) -> list[str]:
    return list(dict.fromkeys(r.scenario for r in rows))


def table(rows: list[Measured], derived: dict[str, dict[str, float | None]]) -> str:
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} %"

    lines = [
        "| build | scenario (consultations × viewers) | server CPU (median) | each round "
        "| event loop thread (median) | threads | RSS | sessions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in _order(rows):
        for build in derived:
            same = [r for r in rows if r.scenario == scenario and r.build == build]
            cpu = statistics.median(r.cpu_pct for r in same)
            loop = statistics.median(r.loop_pct for r in same)
            ok = "all up" if all(r.sessions_ok for r in same) else "MISSING"
            lines.append(
                f"| {build} | {scenario} | {cpu:.1f} % | "
                f"{', '.join(f'{r.cpu_pct:.1f}' for r in same)} | {loop:.1f} % | "
                f"{same[-1].threads} | {same[-1].rss_mb:.0f} MB | {ok} |"
            )
    lines += [
        "",
        "| build | per consultation | extra consultation | extra viewer "
        "| extra viewer, event loop | consultations/core |",
        "|---|---|---|---|---|---|",
    ]
    for build, d in derived.items():
        per_core = d["consultations_per_core"]
        lines.append(
            f"| {build} | {pct(d['per_consultation_pct'])} | "
            f"{pct(d['extra_consultation_pct'])} | {pct(d['extra_viewer_pct'])} | "
            f"{pct(d['extra_viewer_loop_pct'])} | "
            f"{'—' if per_core is None else f'{per_core:.1f}'} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def checkout(ref: str, work: Path):  # type: ignore[no-untyped-def]
    """``ref`` checked out (detached) in ``work``; the worktree is removed afterwards."""
    path = work / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(path), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
        )


async def run(cfg: argparse.Namespace, work: Path) -> dict[str, Any]:
    rows: list[Measured] = []
    with contextlib.ExitStack() as stack:
        builds: list[tuple[str, Path | None]] = []
        if cfg.baseline:
            builds.append(
                (f"baseline {cfg.baseline}", stack.enter_context(checkout(cfg.baseline, work)))
            )
        builds.append((THIS_TREE, None))
        # interleaved (A, B, A, B…): a change in the machine's load hits both builds alike
        for round_ in range(cfg.rounds):
            for scenario in cfg.scenarios:
                for build, source in builds:
                    rows.append(await measure(cfg, build, source, scenario, work, round_))
    derived = {
        build: derive([r for r in rows if r.build == build], cfg.scenarios) for build, _ in builds
    }
    return {"rows": [asdict(r) for r in rows], "derived": derived, "table": table(rows, derived)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.percore")
    parser.add_argument("--baseline", help="a git revision to measure beside this tree")
    parser.add_argument(
        "--scenarios",
        type=lambda raw: [Scenario.parse(s) for s in raw.split(",")],
        default=[Scenario(1, 2), Scenario(1, 6), Scenario(4, 2)],
        help="NxV: N consultations with V viewers each (the first is the reference)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every measurement; costs use the medians"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=1_500_000)
    add_quality_argument(parser)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda raw: tuple(raw.split("=", 1)),
        help="NAME=VALUE for both builds' servers",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    cfg = parser.parse_args(argv)
    cfg.env = dict(cfg.env)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    print(f"consultations per core: {', '.join(map(str, cfg.scenarios))}, quality={cfg.quality}")
    started = time.monotonic()
    result = run_in_work_dir("endolink-percore-", cfg.keep, lambda work: run(cfg, work))
    result["quality"] = cfg.quality
    result["machine"] = machine()
    result["seconds"] = round(time.monotonic() - started)
    print(result["table"])
    if cfg.json:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0 if all(r["sessions_ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
