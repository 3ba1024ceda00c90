"""A real coturn (Debian's ``turnserver``) on 127.0.0.1 for the TURN tests.

Each test gets its own: a config file, pid file, user database and log in its tmp_path, free
listening and relay ports, no TLS, no CLI, no system paths — so it neither needs nor disturbs the
``coturn`` system service that the Debian package may have started. Stopped by pid (SIGTERM, then
SIGKILL), every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

TURNSERVER = "/usr/bin/turnserver"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
RELAY_PORTS = 100
REALM = "endolink.test"


@dataclass(frozen=True)
class Coturn:
    port: int
    secret: str
    log: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """coturn vanishes (SIGKILL by pid): no allocation is freed, nothing answers."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)

    def urls(self, *transports: str) -> tuple[str, ...]:
        """``turn:127.0.0.1:<port>?transport=…`` for each transport (udp, tcp)."""
        return tuple(f"turn:127.0.0.1:{self.port}?transport={t}" for t in transports)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def _config(directory: Path, port: int, secret: str) -> Path:
    low = random.randrange(40000, 60000 - RELAY_PORTS, 2)
    lines = [
        "listening-ip=127.0.0.1",
        f"listening-port={port}",
        "relay-ip=127.0.0.1",
        f"min-port={low}",
        f"max-port={low + RELAY_PORTS}",
        "allow-loopback-peers",
        "no-tls",
        "no-dtls",
        "no-cli",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={REALM}",
        f"log-file={directory / 'turn.log'}",
        "simple-log",
        "no-stdout-log",
        f"pidfile={directory / 'turn.pid'}",
        f"userdb={directory / 'turndb'}",
        "fingerprint",
        # docs/deployment.md's per-user limits, so the tests run under them
        "user-quota=8",
        "max-bps=750000",
        "verbose",
    ]
    path = directory / "turnserver.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"turnserver did not listen on {port} within {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def coturn(directory: Path, secret: str = "coturn-test-secret") -> AsyncIterator[Coturn]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _config(directory, port, secret)
    process = subprocess.Popen(
        [TURNSERVER, "-c", str(config)],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _listening(port, process)
        yield Coturn(port, secret, directory / "turn.log", process)
    finally:
        _stop(process)
