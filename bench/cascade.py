"""What a cascade costs and saves: the owner's and the cascading node's CPU for N viewers of one
consultation served by cascade from the second node, against the same N served by the owner
itself, in the same run.

    python -m bench.cascade [--viewers 1,5,10] [--window 10] [--json out.json] [--keep]

Real processes on 127.0.0.1: a ``redis-server`` of the run's own and two ``endolink serve``
nodes (regions ``ulaanbaatar`` and ``seoul``, guards and recording off: the forwarding alone),
the clinic a ``bench.publisher`` (720p30 VP8 at 1.5 Mbit/s) publishing to the owner. Viewers
are light (their RTP counted, never decoded) and enter through the Seoul node (cascade) or the
owner (direct). Each row: CPU of each server over ``--window`` s (/proc: holds on a shared
machine) and the viewers' lowest frame rate (frames reassembled, not decoded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from client.whip import WhipClient
from relay.forwarding import tap_receiver
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, TokenIssuer, new_identity

from .common import cpu_percent, free_port, proc_sample, run_in_work_dir
from .fanout import PYTHON, Processes, machine
from .redis_server import RedisServer
from .serverproc import ServerProcess

SECRET = "bench-cascade-secret-" + "c" * 32
SETTLE_S = 3.0


class LightViewer:
    """A WHEP viewer that counts the video frames it receives (reassembled, never decoded)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.frames = 0
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self.tap = tap_receiver(transceiver.receiver, "video", self._count, lambda: None)
        self.client: WhipClient | None = None

    def _count(self, data: Any, *_: Any) -> None:
        self.frames += 1

    async def start(self, endpoint: str, token: str) -> None:
        self.client = WhipClient(endpoint, token)
        await self.client.connect(self.pc)

    async def close(self) -> None:
        self.tap.close()
        if self.client is not None:
            await self.client.close()
        await self.pc.close()


async def run(cfg: argparse.Namespace, work: Path) -> dict[str, Any]:
    issuer = TokenIssuer(SECRET)

    def token(role: Role, cid: str) -> str:
        return issuer.issue(Grant.for_role(role, cid, new_identity(role), 3600))

    redis = RedisServer(work / "redis")
    redis.start()
    nodes: dict[str, ServerProcess] = {}
    procs = Processes(work)
    try:
        for name in ("ulaanbaatar", "seoul"):
            env = {
                "ENDOLINK_SECRET": SECRET,
                "ENDOLINK_REDIS_URL": redis.url,
                "ENDOLINK_NODE_ID": name,
                "ENDOLINK_REGION": name,
                "ENDOLINK_PICTURE_GUARD": "0",
                "ENDOLINK_PRIVACY_GUARD": "0",
            }
            nodes[name] = ServerProcess(work / name, free_port(), work / f"{name}.log", env=env)
            nodes[name].start()
        await asyncio.gather(*(n.wait_accepting(60) for n in nodes.values()))
        owner, seoul = nodes["ulaanbaatar"], nodes["seoul"]
        admin = {"Authorization": f"Bearer {token(Role.ADMIN, ANY_CONSULTATION)}"}
        async with aiohttp.ClientSession(headers=admin) as http:
            body = {"consent_by": "bench", "region": "ulaanbaatar"}
            async with http.post(f"{owner.base_url}/api/consultations", json=body) as created:
                cid = (await created.json())["id"]
            switch = f"{owner.base_url}/api/consultations/{cid}/recording"
            async with http.post(switch, json={"enabled": False}) as switched:
                assert switched.status == 200, await switched.text()
        argv = [PYTHON, "-m", "bench.publisher", "--whip", f"{owner.base_url}/whip/{cid}"]
        clinic = await procs.start("publisher", [*argv, "--token", token(Role.CLINIC, cid)])
        await clinic.read_event(120)
        await asyncio.sleep(SETTLE_S)
        rows = [await _measure(cfg, owner, seoul, [], "nobody")]
        for label, base in (("Seoul (cascade)", seoul.base_url), ("owner", owner.base_url)):
            viewers: list[LightViewer] = []
            try:
                for count in cfg.viewers:
                    while len(viewers) < count:
                        viewer = LightViewer()
                        viewers.append(viewer)
                        await viewer.start(f"{base}/whep/{cid}", token(Role.OBSERVER, cid))
                    await asyncio.sleep(SETTLE_S)
                    rows.append(await _measure(cfg, owner, seoul, viewers, label))
            finally:
                await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
            await asyncio.sleep(SETTLE_S * 2)  # the cascade's upstream lingers, then closes
        return {"rows": rows}
    finally:
        await procs.close()
        for node in nodes.values():
            node.stop()
        redis.stop()


async def _measure(
    cfg: argparse.Namespace,
    owner: ServerProcess,
    seoul: ServerProcess,
    viewers: list[LightViewer],
    label: str,
) -> dict[str, Any]:
    assert owner.process is not None and seoul.process is not None
    before = [proc_sample(owner.process.pid), proc_sample(seoul.process.pid)]
    counted = [v.frames for v in viewers]
    start = time.monotonic()
    await asyncio.sleep(cfg.window)
    after = [proc_sample(owner.process.pid), proc_sample(seoul.process.pid)]
    elapsed = time.monotonic() - start
    rates = [(v.frames - n) / elapsed for v, n in zip(viewers, counted, strict=True)]
    row = {
        "viewers": len(viewers),
        "served by": label,
        "owner CPU %": _round(cpu_percent(before[0], after[0])),
        "Seoul CPU %": _round(cpu_percent(before[1], after[1])),
        "viewer frames/s min": _round(min(rates)) if rates else None,
    }
    print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return row


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cascade")
    parser.add_argument(
        "--viewers",
        type=lambda raw: [int(n) for n in raw.split(",")],
        default=[1, 5, 10],
        help="viewer counts, ascending (default 1,5,10)",
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per row")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    result = run_in_work_dir("endolink-cascade-", cfg.keep, lambda work: run(cfg, work))
    result["machine"] = machine()
    result["table"] = table(result["rows"])
    print(result["table"])
    if cfg.json:
        cfg.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
