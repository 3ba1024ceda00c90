"""Real processes for the tests that kill things: ``endolink serve``, ``endolink publish`` and an
aiortc viewer (``tests.view_process``), each started by the test, read line by line from its
stdout, and stopped or SIGKILLed by pid."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from bench.common import free_port
from signaling.auth.grants import Grant, Role
from signaling.auth.secret import token_issuer
from signaling.db.store import DB_FILENAME, ConsultationStore
from signaling.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This checkout on the path, no ``ENDOLINK_*`` from the caller's shell, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDOLINK_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return {**env, **extra}


class Process:
    """A child process whose stdout lines are read in a thread; stderr goes to ``log``."""

    def __init__(self, command: Sequence[str], log: Path, env: dict[str, str]) -> None:
        with log.open("a") as err:
            self.proc = subprocess.Popen(
                list(command), stdout=subprocess.PIPE, stderr=err, text=True, env=env
            )
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The next stdout line containing ``text`` (AssertionError if the process ends first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line with {text!r}; saw {self.lines[-20:]}")
            self.lines.append(line)
            if text in line:
                return line

    def output(self) -> list[str]:
        """Every stdout line so far (what ``wait_for`` has not read yet included)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return list(self.lines)
            if line is not None:
                self.lines.append(line)

    def kill(self) -> None:
        """SIGKILL by pid (idempotent)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._finish()

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Ask the process to end (``sig``), SIGKILL after 15 s; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Server(Process):
    """``endolink serve`` on ``port`` (a free one by default) with its own data directory."""

    def __init__(self, data_dir: Path, log: Path, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "signaling", "serve", "--port", str(self.port)]
        environment = clean_env(ENDOLINK_ICE_HOST_ADDRESSES="127.0.0.1", **env)
        super().__init__([*command, "--data-dir", str(data_dir)], log, environment)

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_for("EndoLink server:", timeout)


async def consultation_on_disk(
    data_dir: Path, title: str, video_codec: str = "VP8"
) -> tuple[str, Callable[[Role], str]]:
    """A consultation with consent on file, made in ``data_dir`` before any server runs there,
    and ``token(role)``: a 1-hour token for that role, as the server will accept it."""
    store = ConsultationStore(data_dir / DB_FILENAME)
    try:
        consultation = await store.create(title, video_codec, consent_by="Dr. A", recorded_by="t")
    finally:
        await store.close()
    issuer = token_issuer(Settings(data_dir=data_dir))

    def token(role: Role) -> str:
        return issuer.issue(Grant.for_role(role, consultation.id, f"{role}-1", 3600))

    return consultation.id, token


def publish_command(url: str, token: str, source: str = "testpattern") -> list[str]:
    """``endolink publish`` as the clinic would run it."""
    return [sys.executable, "-m", "signaling", "publish", "--url", url, "--token", token, source]


def view_command(url: str, token: str) -> list[str]:
    """An aiortc WHEP viewer in its own process (``tests.view_process``)."""
    return [sys.executable, "-m", "tests.view_process", url, token]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test started; whatever is still running at the end is SIGKILLed by pid."""
    started: list[Process] = []
    yield started
    for process in started:
        with contextlib.suppress(Exception):
            process.kill()
