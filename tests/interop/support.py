"""What the interop tests share: a real ``endolink serve`` with one consultation, and outside
clients run as processes of their own (bounded, stopped by pid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signaling.auth.grants import Role
from tests.processes import Process, Server, clean_env, consultation_on_disk


@dataclass(frozen=True)
class Served:
    """A running server, its log and one consultation in it."""

    server: Server
    log: Path
    cid: str
    token: Callable[[Role], str]

    def endpoint(self, protocol: str) -> str:
        """``whip`` or ``whep``: the consultation's endpoint URL."""
        return f"{self.server.url}/{protocol}/{self.cid}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def served(tmp_path: Path, codec: str) -> AsyncIterator[Served]:
    """``endolink serve`` on 127.0.0.1 with its own data dir and a ``codec`` consultation."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cid, token = await consultation_on_disk(data_dir, f"interop {codec}", codec)
    log = tmp_path / "server.log"
    server = Server(data_dir, log)
    try:
        await asyncio.to_thread(server.wait_ready)
        yield Served(server, log, cid, token)
    finally:
        await asyncio.to_thread(server.stop)


def python_module(module: str, *args: str) -> list[str]:
    """A helper module of the tests run by this interpreter, in a process of its own."""
    return [sys.executable, "-m", module, *args]


NODE = "/usr/bin/node"
JS_DIR = Path(__file__).resolve().parent / "js"
"The npm clients (werift, @roamhq/wrtc); scripts/test installs them with ``npm ci``."


def node_client(script: str, args: list[str], token: str, log: Path) -> Process:
    """``node js/<script> args...`` with the token in ``$ENDOLINK_TOKEN`` (not on its command
    line); it prints one JSON line with what it saw (``result``)."""
    if not (JS_DIR / "node_modules").is_dir():
        pytest.fail(f"no {JS_DIR / 'node_modules'}: run scripts/test (npm ci there) first")
    return Process([NODE, str(JS_DIR / script), *args], log, clean_env(ENDOLINK_TOKEN=token))


def result(process: Process, timeout: float) -> dict[str, Any]:
    """The JSON line a node client prints when it is done."""
    found: dict[str, Any] = json.loads(process.wait_for("{", timeout))
    return found


def increasing(counters: list[int]) -> bool:
    return all(b > a for a, b in zip(counters, counters[1:], strict=False))
