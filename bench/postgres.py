"""A real PostgreSQL (Debian's ``postgresql`` package) on 127.0.0.1 for the shared-records tests
and the cluster benchmark.

``initdb`` into a fresh directory under /tmp, then ``postgres`` on a free port with its own socket
directory and settings, no system paths — so it neither needs nor disturbs a cluster the package
may have started. PostgreSQL refuses to run as root: when we are root, the server runs as the
package's ``postgres`` user (its directory is handed over to it). Stopped by pid (SIGINT: fast
shutdown, then SIGKILL), every wait bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.common import free_port, stop_by_pid

BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SUPERUSER = "postgres"

_databases = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"endolink_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by pid, then SIGKILL; idempotent."""
        stop_by_pid(self.process, signal.SIGINT, STOP_TIMEOUT_S)

    def log_text(self) -> str:
        log = self.directory / "postgres.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run the server as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": SUPERUSER, "group": pwd.getpwnam(SUPERUSER).pw_gid, "extra_groups": []}


def start_postgres() -> PostgresServer:
    """``initdb`` and ``postgres`` in a new directory under /tmp (reachable by the ``postgres``
    user, which pytest's private tmp dirs are not); returns once it accepts connections."""
    directory = Path(tempfile.mkdtemp(prefix="endolink-pg-"))
    data, sockets = directory / "data", directory / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (directory, sockets):
            shutil.chown(path, SUPERUSER, SUPERUSER)
    user = _as_postgres()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(directory)}
    subprocess.run(
        [BIN / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
        env=env,
        timeout=START_TIMEOUT_S,
        **user,
    )
    port = free_port()
    options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    with (directory / "postgres.log").open("ab") as log:
        process = subprocess.Popen(
            [BIN / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", sockets]
            + options,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            **user,
        )
    server = PostgresServer(port, directory, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"postgres did not start:\n{server.log_text()}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A server for the ``with`` block; stopped and its directory removed after."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
