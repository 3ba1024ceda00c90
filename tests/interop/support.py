"""What the interop tests share: a real ``endolink serve`` with one consultation, and outside
clients run as processes of their own (bounded, stopped by pid)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from signaling.auth.grants import Role
from tests.processes import Server, consultation_on_disk


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
