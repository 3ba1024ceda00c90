"""The EndoLink server as a real process on a fixed port, for tests and benchmarks that kill it.

``endolink serve`` runs exactly as an operator starts it (``python -m signaling serve``), with its
own data directory; it is stopped by pid (SIGINT, then SIGKILL) and can be SIGKILLed and started
again on the same port and data directory to play a crash and a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import LOOPBACK, stop_by_pid

STOP_TIMEOUT_S = 10.0


def endolink(data_dir: Path, port: int, *args: str) -> str:
    """Runs an ``endolink`` command on ``data_dir``; invite links it prints point at ``port``."""
    cmd = [sys.executable, "-m", "signaling", *args, "--data-dir", str(data_dir)]
    env = {**os.environ, "ENDOLINK_PORT": str(port)}
    return subprocess.run(
        cmd, check=True, capture_output=True, text=True, timeout=60, env=env
    ).stdout


class ServerProcess:
    """``endolink serve`` on 127.0.0.1:``port``; its output goes to ``log_path``. With ``source``
    (a checkout of another revision) that revision's server and pages run instead of this one."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        log_path: Path,
        source: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.source = source
        self.env = env or {}
        "Settings (``ENDOLINK_*``) for the server beside this process's environment."
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "ENDOLINK_ICE_HOST_ADDRESSES": LOOPBACK, **self.env}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        cmd = [sys.executable, "-m", "signaling", "serve", "--host", LOOPBACK]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, cwd=self.source, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_accepting(self, timeout_s: float = 20.0) -> float:
        """Polls the port every 10 ms; returns the monotonic time it first accepted a connection."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(LOOPBACK, self.port)
                accepted = time.monotonic()
                writer.close()
                return accepted
            await asyncio.sleep(0.01)
        raise TimeoutError(f"the server did not accept connections within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL by pid: a crash, nothing is closed cleanly."""
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        self.process = None

    def stop(self) -> None:
        """SIGINT by pid (a clean shutdown), SIGKILL if it does not end in time."""
        if self.process is None:
            return
        stop_by_pid(self.process, signal.SIGINT, STOP_TIMEOUT_S)
        self.process = None
