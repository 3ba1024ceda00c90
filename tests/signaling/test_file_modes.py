"""Everything in the data directory is private to the service user whatever the umask: a real
``endolink serve`` started under umask 022 on a data dir an older version left readable
(certificates, a database, a stray file), then a real consultation — a publisher recording, a
mark, a snapshot, an export — and every directory is 0700, every file 0600."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from signaling.auth.grants import Role
from signaling.db.audit_chain import ANCHOR_FILENAME
from signaling.db.store import DB_FILENAME
from tests.processes import Process, Server, clean_env, consultation_on_disk
from tests.recorder.media import publishing
from tests.signaling.test_data_at_rest import png
from tests.signaling.test_websocket_annotations import add


def modes(root: Path) -> dict[str, int]:
    """Every path's mode (a temporary file may vanish while the server runs)."""
    found = {}
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def not_private(root: Path, found: dict[str, int]) -> dict[str, str]:
    return {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }


async def until(check: Any, timeout: float) -> Any:  # type: ignore[misc]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")


async def test_the_data_dir_is_private_whatever_the_umask(
    tmp_path: Path, processes: list[Process]
) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    previous = os.umask(0o022)
    try:
        certs = [sys.executable, "-m", "signaling", "certs", "--data-dir", str(data)]
        subprocess.run(certs, check=True, env=clean_env(), capture_output=True, timeout=60)
        cid, token = await consultation_on_disk(data, "modes")
        (data / DB_FILENAME).chmod(0o644)  # as an older EndoLink left it
        (data / "notes").mkdir(mode=0o755)
        (data / "notes" / "old.txt").write_text("left by a tool")
        assert modes(data)["notes/old.txt"] == 0o644
        server = Server(data, log, ENDOLINK_RECORDING_OFFLINE_S="1")
        processes.append(server)
        await asyncio.to_thread(server.wait_ready)
    finally:
        os.umask(previous)

    base, surgeon = server.url, token(Role.SURGEON)
    auth = {"Authorization": f"Bearer {surgeon}"}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{base}/ws/{cid}", headers=auth)
        async with publishing(f"{base}/whip/{cid}", token(Role.CLINIC), size=(320, 240)):
            await ws.send_json(add())
            snapshot = await http.post(
                f"{base}/api/consultations/{cid}/snapshots",
                data=png(16, 16),
                headers={**auth, "Content-Type": "image/png"},
            )
            assert snapshot.status == 201
            await asyncio.sleep(2.0)
        await ws.close()

        async def recorded() -> str | None:
            async with http.get(f"{base}/api/recordings", headers=auth) as response:
                items = (await response.json())["recordings"]
            return items[0]["id"] if items and items[0]["status"] == "complete" else None

        rid = await until(recorded, 20)
        started = await http.post(f"{base}/api/recordings/{rid}/exports", headers=auth)
        assert started.status == 202, await started.text()
        status_url = (await started.json())["job"]["status_url"]

        async def exported() -> bool:
            async with http.get(f"{base}{status_url}", headers=auth) as response:
                state = (await response.json())["job"]["state"]
            assert state != "failed"
            return bool(state == "done")

        await until(exported, 30)
        running = modes(data)  # SQLite's -wal and -shm exist only while it runs
        assert {f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"} <= set(running)
        assert not_private(data, running) == {}
    assert server.stop() == 0

    found = modes(data)
    expected = {
        ".",
        DB_FILENAME,
        "secret.key",
        ANCHOR_FILENAME,
        "notes/old.txt",
        f"consultations/{cid}/annotations.jsonl",
    }
    assert expected <= set(found), sorted(found)
    for kind in ("snapshots/", "recordings/", "exports/", "certs/"):
        assert any(kind in name for name in found), kind
    assert any(name.endswith("-key.pem") for name in found)
    assert not_private(data, found) == {}


def test_every_cli_command_makes_private_files_whatever_the_umask(tmp_path: Path) -> None:
    """Not only ``serve``: ``consult create`` on a fresh data dir under umask 022 (the secret, the
    database SQLite creates, the audit head) and ``certs`` leave nothing readable by others."""
    data = tmp_path / "fresh"
    previous = os.umask(0o022)
    try:
        for command in (["consult", "create", "--title", "Modes"], ["certs"]):
            run = [sys.executable, "-m", "signaling", *command, "--data-dir", str(data)]
            done = subprocess.run(run, env=clean_env(), capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
    finally:
        os.umask(previous)
    found = modes(data)
    assert {DB_FILENAME, "certs/ca-key.pem"} <= set(found)
    public = {"certs/ca.pem", "certs/server.pem"}  # certificates are public by design (0644)
    assert not_private(data, {k: v for k, v in found.items() if k not in public}) == {}
