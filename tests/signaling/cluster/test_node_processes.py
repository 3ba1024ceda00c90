"""Nodes as operators run them: ``endolink serve`` processes on one real redis-server,
``endolink node list`` and ``endolink node drain``, and SIGTERM draining a node: it takes no new
consultation and stops only once its own have ended. Every process stopped by pid."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.redis_server import RedisServer
from signaling.auth.grants import Role
from tests.processes import Process, Server, clean_env, consultation_on_disk, publish_command

LEASE_S = "1.5"


def start_node(tmp_path: Path, name: str, redis: RedisServer, started: list[Process]) -> Server:
    server = Server(
        tmp_path / name,
        tmp_path / f"{name}.log",
        ENDOLINK_REDIS_URL=redis.url,
        ENDOLINK_NODE_ID=name,
        ENDOLINK_CLUSTER_LEASE_S=LEASE_S,
        ENDOLINK_ROUTER_IDLE_S="1",
    )
    started.append(server)
    server.wait_ready()
    return server


def node_cli(redis: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signaling", "node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(ENDOLINK_REDIS_URL=redis.url),
    )


def nodes_listed(redis: RedisServer) -> dict[str, dict[str, object]]:
    listed = node_cli(redis, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {entry["id"]: entry for entry in json.loads(listed.stdout)}


def readyz(server: Server) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_node_list_and_drain(tmp_path: Path, redis_server: RedisServer, processes) -> None:
    a = start_node(tmp_path, "a", redis_server, processes)
    start_node(tmp_path, "b", redis_server, processes)
    found = nodes_listed(redis_server)
    assert set(found) == {"a", "b"}
    assert found["a"]["url"] == a.url and found["a"]["draining"] is False
    table = node_cli(redis_server, "list")
    assert table.returncode == 0 and "NODE" in table.stdout and "open" in table.stdout

    drained = node_cli(redis_server, "drain", "a")
    assert drained.returncode == 0, drained.stderr
    assert wait_for(lambda: nodes_listed(redis_server)["a"]["draining"] is True, timeout=5)
    assert readyz(a)["checks"]["cluster"] == "draining"  # type: ignore[index]
    unknown = node_cli(redis_server, "drain", "nobody")
    assert unknown.returncode == 1 and "no live node 'nobody'" in unknown.stderr


def test_without_redis_the_node_commands_say_so(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "signaling", "node", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert listed.returncode == 2 and "ENDOLINK_REDIS_URL" in listed.stderr


@pytest.mark.timeout(120)
def test_sigterm_drains_then_stops(tmp_path: Path, redis_server: RedisServer, processes) -> None:
    cid, token = _consultation(tmp_path / "a")
    a = start_node(tmp_path, "a", redis_server, processes)
    start_node(tmp_path, "b", redis_server, processes)
    clinic = Process(
        publish_command(f"{a.url}/whip/{cid}", token(Role.CLINIC)),
        tmp_path / "publish.log",
        clean_env(),
    )
    processes.append(clinic)
    assert wait_for(lambda: nodes_listed(redis_server)["a"]["sessions"] == 1, timeout=30)

    a.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: nodes_listed(redis_server)["a"]["draining"] is True, timeout=5)
    time.sleep(2.0)  # the consultation goes on: the node does not stop under it
    assert a.proc.poll() is None
    assert readyz(a)["checks"]["cluster"] == "draining"  # type: ignore[index]

    clinic.kill()  # the consultation ends; the Router is let go after ENDOLINK_ROUTER_IDLE_S
    a.proc.wait(30)
    assert a.proc.returncode == 0
    assert "a" not in nodes_listed(redis_server)  # left cleanly: gone at once, not at expiry


def _consultation(data_dir: Path):  # type: ignore[no-untyped-def]
    return asyncio.run(consultation_on_disk(data_dir, "Post-op check"))
