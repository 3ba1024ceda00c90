"""A real Redis (Debian's ``redis-server``) on 127.0.0.1 for the cluster's tests and benchmark.

Its config on the command line, working directory and log in the given directory, a free port, no
persistence (no RDB, no AOF), so it neither needs nor disturbs the ``redis-server`` system service
the Debian package may enable. It can be stopped and started again on the same port (Redis going
away and coming back). Started and stopped by pid (SIGTERM, then SIGKILL), every wait bounded.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.common import free_port, stop_by_pid

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if _answers(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on {self.port} in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_by_pid(process, signal.SIGTERM, STOP_TIMEOUT_S)


def _answers(port: int) -> bool:
    """Redis answers PING with +PONG (the port open is not enough: it may still be loading)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False
