"""What the interop tests share: a real ``endolink serve`` with one consultation, and outside
clients run as processes of their own (bounded, stopped by pid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from signaling.auth.grants import Role
from tests.peers import viewer, wait_until
from tests.processes import Process, Server, clean_env, consultation_on_disk

NODE = "/usr/bin/node"
JS_DIR = Path(__file__).resolve().parent / "js"
"The npm clients (werift, @roamhq/wrtc); scripts/test installs them with ``npm ci``."


@dataclass(frozen=True)
class Served:
    """A running server, its log and one consultation in it."""

    server: Server
    log: Path
    cid: str
    token: Callable[[Role], str]
    clients: list[Process] = field(default_factory=list)
    "Node clients started with ``node``: SIGKILLed by pid when the server stops."

    def endpoint(self, protocol: str) -> str:
        """``whip`` or ``whep``: the consultation's endpoint URL. Viewers pin the original: these
        tests check what the client decodes of the clinic's own stream, frame by frame, and an
        automatic move to a rung (which lags the original by its encode) steps back a few frames
        (the ladder has its own tests)."""
        query = "?quality=original" if protocol == "whep" else ""
        return f"{self.server.url}/{protocol}/{self.cid}{query}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def node(self, script: str, role: Role, *args: str) -> Process:
        """``node js/<script> args...`` with a ``role`` token in ``$ENDOLINK_TOKEN`` (not on its
        command line); it prints one JSON line with what it saw (``result``)."""
        if not (JS_DIR / "node_modules").is_dir():
            pytest.fail(f"no {JS_DIR / 'node_modules'}: run scripts/test (npm ci there) first")
        command = [NODE, str(JS_DIR / script), *args]
        log = self.log.with_name(f"{script}.log")
        client = Process(command, log, clean_env(ENDOLINK_TOKEN=self.token(role)))
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def served(tmp_path: Path, codec: str) -> AsyncIterator[Served]:
    """``endolink serve`` on 127.0.0.1 with its own data dir and a ``codec`` consultation."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cid, token = await consultation_on_disk(data_dir, f"interop {codec}", codec)
    log = tmp_path / "server.log"
    served = Served(Server(data_dir, log), log, cid, token)
    try:
        await asyncio.to_thread(served.server.wait_ready)
        yield served
    finally:
        for client in served.clients:
            client.kill()
        await asyncio.to_thread(served.server.stop)


async def frames_in_order(
    s: Served, frames: int, size: tuple[int, int], context: Callable[[], object] = list
) -> None:
    """An aiortc WHEP viewer of the consultation decodes ``frames`` stamped frames of ``size``
    within 25 s, their counters increasing; ``context()`` goes into the failure message."""
    async with viewer(s.endpoint("whep"), s.token(Role.SURGEON), kinds=("video",)) as (
        pc,
        _,
        received,
    ):
        arrived = await wait_until(lambda: len(received.counters) >= frames, 25)
        assert arrived, (
            len(received.counters),
            pc.connectionState,
            context(),
            s.log_text()[-2000:],
        )
    assert increasing(received.counters), received.counters
    assert received.sizes == {size}


def python_module(module: str, *args: str) -> list[str]:
    """A helper module of the tests run by this interpreter, in a process of its own."""
    return [sys.executable, "-m", module, *args]


def result(process: Process, timeout: float) -> dict[str, Any]:
    """The JSON line a node client prints when it is done."""
    found: dict[str, Any] = json.loads(process.wait_for("{", timeout))
    return found


def increasing(counters: list[int]) -> bool:
    return all(b > a for a, b in zip(counters, counters[1:], strict=False))
