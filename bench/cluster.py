"""Three nodes on one Redis and one PostgreSQL: placement balance, CPU per node, failover time.

    python -m bench.cluster [--nodes 3] [--consultations 30] [--viewers 2] [--seconds 60]
                            [--width 256] [--height 144] [--fps 15] [--bitrate 150000]
                            [--failover 2] [--json out.json] [--keep]

Everything is real and on 127.0.0.1: a ``redis-server`` and a PostgreSQL of the run's own
(``bench.redis_server``, ``bench.postgres``) and ``--nodes`` ``endolink serve`` processes sharing
them and one signing secret, each with its own data directory. The consultations are created
through node 0's API, which places them; every publisher (``bench.publisher``: the stamped
pattern) and light viewer (``bench.loadgen``) enters through node 0 and follows its 307 to the
owner. Measured over ``--seconds`` after a warm-up: each node's consultations and sessions (as
``endolink node list`` shows them) and CPU (% of one core, from /proc: holds on a shared
machine), and the viewers' frame rates. Then ``--failover`` more consultations are placed on
the busiest node, each published by a reconnecting ``endolink publish`` through another node,
and the busiest node is SIGKILLed: per consultation, the time from the kill until the clinic
publishes again (on the node that took it over) and until a fresh viewer entering through a
surviving node decodes a frame (wall clock: a quiet machine's figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, TokenIssuer, new_identity

from .common import (
    add_quality_argument,
    cpu_percent,
    free_port,
    post_sdp,
    proc_sample,
    run_in_work_dir,
)
from .fanout import PYTHON, Child, Consultation, Processes, machine
from .loadrun import START_TIMEOUT_S, _start_clients
from .postgres import running_postgres
from .redis_server import RedisServer
from .serverproc import ServerProcess

SECRET = "bench-cluster-secret-" + "z" * 32
WARMUP_S = 15.0
RESUME_TIMEOUT_S = 60.0
LEASE_S = 6.0
"The default ``ENDOLINK_CLUSTER_LEASE_S``: a dead node's consultations free within this."


class Cluster:
    """The run's nodes (node ``i`` has region ``node<i>``, so a consultation can be placed on
    it by name) and ``token``: tokens every node accepts (they share the secret)."""

    def __init__(self, work: Path, count: int, redis: RedisServer, records: str) -> None:
        self.issuer = TokenIssuer(SECRET)
        self.redis_url = redis.url
        self.nodes = [
            ServerProcess(
                work / f"node{i}",
                free_port(),
                work / "logs" / f"node{i}.log",
                env={
                    "ENDOLINK_REDIS_URL": redis.url,
                    "ENDOLINK_DATABASE_URL": records,
                    "ENDOLINK_SECRET": SECRET,
                    "ENDOLINK_NODE_ID": f"node{i}",
                    # regions name nodes for placement here: viewers follow the 307 to the owner
                    "ENDOLINK_CASCADE": "0",
                    "ENDOLINK_REGION": f"node{i}",
                    "ENDOLINK_CLUSTER_LEASE_S": str(LEASE_S),
                },
            )
            for i in range(count)
        ]

    def token(self, role: Role, cid: str) -> str:
        """A token of a person of its own (a link's session limit is per person)."""
        return self.issuer.issue(Grant.for_role(role, cid, new_identity(role), 7200))

    async def create(
        self, http: aiohttp.ClientSession, door: ServerProcess, on: str | None = None
    ) -> tuple[str, str]:
        """A consultation (consent on file) made through ``door`` (on node ``on``, else where
        placement puts it): its id and node."""
        body = {"title": "Bench", "consent_by": "bench", "region": on}
        admin = self.token(Role.ADMIN, ANY_CONSULTATION)
        async with http.post(
            f"{door.base_url}/api/consultations",
            json={k: v for k, v in body.items() if v is not None},
            headers={"Authorization": f"Bearer {admin}"},
        ) as response:
            assert response.status == 201, await response.text()
            answer = await response.json()
        return str(answer["id"]), str(answer["node"])

    async def listed(self) -> dict[str, dict[str, Any]]:
        """``endolink node list --json``, by node id."""
        process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "signaling", "node", "list", "--json",
            env={**_clean_env(), "ENDOLINK_REDIS_URL": self.redis_url},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
        return {entry["id"]: entry for entry in json.loads(stdout)}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ENDOLINK_")}


async def run(cfg: argparse.Namespace, work: Path) -> dict[str, Any]:
    (work / "logs").mkdir(parents=True, exist_ok=True)
    redis = RedisServer(work / "redis")
    redis.start()
    try:
        with running_postgres() as postgres:
            cluster = Cluster(work, cfg.nodes, redis, postgres.new_database())
            try:
                for node in cluster.nodes:
                    node.start()
                await asyncio.gather(*(node.wait_accepting(60) for node in cluster.nodes))
                return await _measure(cfg, work, cluster)
            finally:
                for node in cluster.nodes:
                    node.stop()
    finally:
        redis.stop()


async def _measure(cfg: argparse.Namespace, work: Path, cluster: Cluster) -> dict[str, Any]:
    door = cluster.nodes[0]
    procs = Processes(work / "logs")
    try:
        async with aiohttp.ClientSession() as http:
            made = [await cluster.create(http, door) for _ in range(cfg.consultations)]
            consults = [
                Consultation(cid, cluster.token(Role.CLINIC, cid), cluster.token(Role.SURGEON, cid))
                for cid, _ in made
            ]
            _, loadgens = await _start_clients(cfg, procs, door.base_url, consults)
            await asyncio.sleep(WARMUP_S)
            pids = {f"node{i}": n.process.pid for i, n in enumerate(cluster.nodes) if n.process}
            before = {name: proc_sample(pid) for name, pid in pids.items()}
            t0 = time.time()
            await asyncio.sleep(cfg.seconds)
            after = {name: proc_sample(pid) for name, pid in pids.items()}
            listed = await cluster.listed()
            viewers = await _viewer_reports(loadgens, t0, time.time())
            nodes = {
                name: {
                    "placed": sum(1 for _, node in made if node == name),
                    "consultations": listed.get(name, {}).get("consultations"),
                    "sessions": listed.get(name, {}).get("sessions"),
                    "cpu_percent": _round(cpu_percent(before[name], after[name])),
                }
                for name in pids
            }
            failover = await _failover(cfg, cluster, procs, http, listed) if cfg.failover else []
    finally:
        await procs.close()
    fps = [v["fps"] for v in viewers]
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "nodes": nodes,
        "viewers": {
            "count": len(viewers),
            "fps_median": _round(statistics.median(fps)) if fps else None,
            "fps_min": _round(min(fps)) if fps else None,
            "freezes_500": sum(v.get("freezes_500", 0) for v in viewers),
        },
        "failover": failover,
    }


async def _viewer_reports(
    loadgens: list[tuple[Child, dict[str, Any]]], t0: float, t1: float
) -> list[dict[str, Any]]:
    """Every light viewer's report over [t0, t1]: one report per consultation, in order, from
    its viewer group's process (``bench.loadrun``'s protocol)."""
    groups: list[Child] = []
    for child, _ in loadgens:
        if not any(child is known for known in groups):
            groups.append(child)
            child.send(f"report {t0} {t1}")
    found = []
    for child in groups:
        for entry, _ in loadgens:
            if entry is child:
                found += (await child.read_event(120))["viewers"]
    return found


async def _failover(
    cfg: argparse.Namespace,
    cluster: Cluster,
    procs: Processes,
    http: aiohttp.ClientSession,
    listed: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    victim_id = max(listed, key=lambda n: (listed[n]["consultations"], n))
    victim = cluster.nodes[int(victim_id.removeprefix("node"))]
    door = next(n for n in cluster.nodes if n is not victim)
    clinics: list[tuple[str, Child]] = []
    for i in range(cfg.failover):
        cid, node = await cluster.create(http, door, on=victim_id)
        assert node == victim_id, (node, victim_id)
        argv = [PYTHON, "-m", "signaling", "publish", "--url", f"{door.base_url}/whip/{cid}"]
        argv += ["--token", cluster.token(Role.CLINIC, cid), "testpattern"]
        clinics.append((cid, await procs.start(f"clinic{i}", argv, env=_clean_env())))
    for _, clinic in clinics:
        await _line_with(clinic, "publishing", START_TIMEOUT_S)
    assert victim.process is not None
    victim.process.kill()  # SIGKILL: no goodbye, its heartbeat and leases just stop
    killed = time.monotonic()
    results = []
    for cid, clinic in clinics:
        said = await _line_with(clinic, "reconnected after", RESUME_TIMEOUT_S)
        republished_s = time.monotonic() - killed
        frame_s = await _first_frame(door, cluster.token(Role.OBSERVER, cid), cid, killed)
        results.append(
            {
                "consultation": cid,
                "republished_s": _round(republished_s),
                "first_frame_s": _round(frame_s),
                "clinic_said": said,
            }
        )
    return results


async def _line_with(child: Child, text: str, timeout: float) -> str:
    """The next stdout line of ``child`` holding ``text`` (``endolink publish`` states)."""
    assert child.proc.stdout is not None
    async with asyncio.timeout(timeout):
        while line := await child.proc.stdout.readline():
            if text in line.decode():
                return line.decode().strip()
    raise RuntimeError(f"{child.name} ended before saying {text!r} ({child.log})")


async def _first_frame(door: ServerProcess, token: str, cid: str, since: float) -> float:
    """Seconds from ``since`` until a fresh viewer entering through ``door`` decodes a frame."""
    async with asyncio.timeout(RESUME_TIMEOUT_S):
        while (decoded_at := await _one_frame(f"{door.base_url}/whep/{cid}", token)) is None:
            await asyncio.sleep(0.5)
    return decoded_at - since


async def _one_frame(url: str, token: str) -> float | None:
    """One WHEP viewer (following a 307): when it decoded its first frame, None if it did not
    within 10 s or was refused (the consultation has no owner yet)."""
    pc = RTCPeerConnection()
    frames: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    pc.on("track", frames.put_nowait)
    pc.addTransceiver("video", direction="recvonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer, _ = await post_sdp(url, token, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(10):
            track = await frames.get()
            await track.recv()
        return time.monotonic()
    except (RuntimeError, TimeoutError, aiohttp.ClientError, MediaStreamError):
        return None
    finally:
        await pc.close()


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def table(result: dict[str, Any]) -> str:
    lines = [
        "node    placed  consultations  sessions  CPU % of a core",
        *(
            f"{name:7} {n['placed']:6}  {n['consultations']!s:>13}  {n['sessions']!s:>8}  "
            f"{n['cpu_percent']!s:>15}"
            for name, n in result["nodes"].items()
        ),
        f"viewers: {result['viewers']['count']}, fps median {result['viewers']['fps_median']}, "
        f"min {result['viewers']['fps_min']}, freezes > 500 ms {result['viewers']['freezes_500']}",
    ]
    for f in result["failover"]:
        lines.append(
            f"failover {f['consultation']}: publishing again {f['republished_s']} s after the "
            f"kill, a viewer's first frame {f['first_frame_s']} s after it"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--consultations", type=int, default=30)
    parser.add_argument("--viewers", type=int, default=2, help="light viewers per consultation")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--group", type=int, default=10, help="consultations per viewer process")
    parser.add_argument("--share", type=int, default=10, help="consultations per encoder")
    parser.add_argument("--width", type=int, default=256, help="a multiple of 64 (the stamp)")
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=150_000)
    parser.add_argument("--failover", type=int, default=2, help="consultations on the killed node")
    add_quality_argument(parser)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    print(f"cluster: {cfg.nodes} nodes, {cfg.consultations} consultations", flush=True)
    result = run_in_work_dir("endolink-cluster-", cfg.keep, lambda work: run(cfg, work))
    result["machine"] = machine()
    result["table"] = table(result)
    print(result["table"])
    if cfg.json:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
