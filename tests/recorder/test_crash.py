"""The server process is killed (SIGKILL) in the middle of a recorded session: the file on disk
plays up to about a second before the kill, and the next start marks the recording interrupted,
hashes what is there, adds a repaired copy and leaves index, manifest and files consistent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from recorder.index import RecordingIndex
from recorder.integrity import chain_genesis, chain_next, sha256_file
from recorder.manifest import MANIFEST, Manifest
from signaling.auth.grants import Role
from signaling.db.store import DB_FILENAME
from tests.processes import Process, Server, clean_env, consultation_on_disk

from .media import CapturePatternTrack, decode, ffprobe, made, publishing

KILL_AFTER_S = 4.0


async def test_a_server_killed_mid_session_leaves_a_playable_file_and_an_interrupted_recording(
    tmp_path: Path, processes: list[Process]
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    cid, token = await consultation_on_disk(data, "crash")
    clinic = token(Role.CLINIC)

    server = Server(data, log)
    processes.append(server)
    await asyncio.to_thread(server.wait_ready)
    track = CapturePatternTrack(1280, 720)
    async with publishing(f"{server.url}/whip/{cid}", clinic, video=track):
        deadline = time.monotonic() + 15
        files: list[Path] = []
        while not files and time.monotonic() < deadline:
            files = [f for f in data.glob("recordings/*/segment-001.webm") if f.stat().st_size]
            await asyncio.sleep(0.05)
        assert files, log.read_text()
        # KILL_AFTER_S of video, counted in frames the publisher made (a loaded box makes them
        # more slowly than 30 a second)
        await made(track, int(KILL_AFTER_S * track.fps), timeout=30)
        server.kill()
        killed_at = track.last_stamp_s
        assert killed_at is not None
    segment = files[0]
    directory = segment.parent

    # the file as the dead server left it: plays and decodes, in order, up to ~1 s before the kill
    size_after_kill, sha_after_kill = segment.stat().st_size, sha256_file(segment)[0]
    decoded = decode(segment)
    assert decoded.errors == 0
    assert decoded.counters == sorted(decoded.counters) and len(decoded.counters) >= 80
    assert decoded.duration_s >= 3.0, f"only {decoded.duration_s:.2f} s survived"
    # from the newest frame the publisher had made when the server died
    loss = killed_at - decoded.stamps_s[-1]
    print(f"kill -9 after {KILL_AFTER_S} s: {decoded.duration_s:.2f} s playable, lost {loss:.2f} s")
    assert loss <= 1.2

    # past the offline window already: recovery ends the recording instead of waiting for the feed
    restarted = Server(data, log, ENDOLINK_RECORDING_OFFLINE_S="0.5")
    processes.append(restarted)
    await asyncio.to_thread(restarted.wait_ready)

    # recovery: interrupted, the original untouched and hashed as it was, a repaired copy
    assert segment.stat().st_size == size_after_kill
    index = RecordingIndex(data / DB_FILENAME)
    try:
        (row,) = await index.list(cid)
    finally:
        await index.close()
    assert (row.status, row.stop_reason) == ("interrupted", "crash")
    (indexed,) = row.segments
    assert indexed.status == "interrupted"
    assert (indexed.sha256, indexed.bytes) == (sha_after_kill, size_after_kill)
    assert indexed.chain == chain_next(chain_genesis(row.id), sha_after_kill)
    assert row.chain_head == indexed.chain
    assert abs(indexed.duration_s - decoded.duration_s) < 0.2
    manifest = Manifest.from_json(json.loads((directory / MANIFEST).read_text()))
    assert manifest.status == "interrupted"
    assert manifest.segments[0].sha256 == sha_after_kill
    assert manifest.segments[0].repaired is not None
    repaired = directory / manifest.segments[0].repaired.file
    assert repaired.name == indexed.repaired_file
    assert sha256_file(repaired)[0] == indexed.repaired_sha256
    probe = ffprobe(repaired)  # a finalized file: it has a duration
    assert abs(float(probe["format"]["duration"]) - decoded.duration_s) < 0.2
    assert not list(directory.glob("*.tmp"))

    command = [sys.executable, "-m", "signaling", "recordings", "verify", row.id]
    verify = subprocess.run(
        [*command, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert restarted.stop() == 0, log.read_text()
