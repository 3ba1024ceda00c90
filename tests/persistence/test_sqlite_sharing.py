"""A server's data dir is shared with the CLI (``endolink consult create`` while it runs). The
server opens one ``Database`` per owner; none may drop the POSIX locks of the connections it
already has (closing any descriptor of a file does that), or a CLI command, finding no other
reader, checkpoints and deletes the WAL under the server, whose later writes then go to a
deleted file and are lost at its next start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from signaling.db.store import DB_FILENAME
from tests.processes import Process, Server, processes

__all__ = ["processes"]


def test_a_cli_command_beside_a_running_server_keeps_its_wal(
    tmp_path: Path, processes: list[Process]
) -> None:
    data = tmp_path / "data"
    server = Server(data, tmp_path / "server.log")
    processes.append(server)
    server.wait_ready()
    wal = data / f"{DB_FILENAME}-wal"
    assert wal.exists()
    command = [sys.executable, "-m", "signaling", "consult", "create", "--data-dir", str(data)]
    subprocess.run(command, check=True, timeout=60, capture_output=True)
    assert wal.exists(), "the CLI checkpointed and deleted the running server's WAL"
