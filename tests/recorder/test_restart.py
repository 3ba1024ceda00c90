"""A recording survives a server restart when the clinic comes back within
``ENDOLINK_RECORDING_OFFLINE_S``: after a kill -9 it continues as a new segment with the gap
marked, a clean shutdown leaves it paused (resumable), and a clinic back only after the window
starts a new recording. Real server processes on one port and data directory, a real publisher."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from recorder.index import RecordingIndex, RecordingRow
from recorder.log_entry import LogEntry
from recorder.manifest import MANIFEST, Manifest
from recorder.timeline import RecordingClock
from signaling.auth.grants import Role
from signaling.db.store import DB_FILENAME
from tests.peers import wait_until
from tests.processes import Process, Server, consultation_on_disk
from tests.replay_support import ten_second_manifest

from .media import decode, ffprobe, publishing

OFFLINE_S = 10.0
PUBLISH_S = 2.5


async def recording_state(base: str, cid: str, token: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        url = f"{base}/api/consultations/{cid}/recording"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            return dict(await response.json())


async def record(base: str, cid: str, token: str, predicate, then) -> None:  # type: ignore[no-untyped-def]
    """Publish until ``PUBLISH_S`` of recording happened and ``predicate(state)`` held, then
    call ``then()`` while still publishing (kill or stop the server)."""
    async with publishing(f"{base}/whip/{cid}", token):
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = await recording_state(base, cid, token)
            if state["state"] == "recording":
                break
            await asyncio.sleep(0.1)
        assert predicate(state), state
        await asyncio.sleep(PUBLISH_S)
        await asyncio.to_thread(then)


async def rows(data: Path, cid: str) -> list[RecordingRow]:
    index = RecordingIndex(data / DB_FILENAME)
    try:
        return sorted(await index.list(cid), key=lambda r: r.started_at)
    finally:
        await index.close()


async def test_a_clinic_back_within_the_offline_window_continues_the_recording_across_restarts(
    tmp_path: Path, processes: list[Process]
) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    cid, token = await consultation_on_disk(data, "restart")
    clinic = token(Role.CLINIC)
    env = {"ENDOLINK_RECORDING_OFFLINE_S": str(OFFLINE_S)}

    async def start(port: int | None = None) -> Server:
        server = Server(data, log, port, **env)
        processes.append(server)
        await asyncio.to_thread(server.wait_ready)
        return server

    # 1. recording, then the server dies (kill -9)
    first = await start()
    states: list[dict[str, Any]] = []
    await record(
        first.url, cid, clinic, lambda s: states.append(s) or s["recording_id"], first.kill
    )
    killed_at = time.time()
    recording_id = states[0]["recording_id"]

    # 2. back within the window: the same recording waits, then continues with segment 2
    second = await start(first.port)
    paused = await recording_state(second.url, cid, clinic)
    assert (paused["state"], paused["recording_id"]) == ("paused", recording_id)
    await record(
        second.url,
        cid,
        clinic,
        lambda s: (s["recording_id"], s["segment"]) == (recording_id, 2),
        lambda: second.stop(signal.SIGTERM),
    )
    assert second.proc.returncode == 0, log.read_text()[-3000:]
    restarted_gap = time.time() - killed_at
    (row,) = await rows(data, cid)
    assert row.status == "recording"  # a clean shutdown leaves it resumable
    assert [s.status for s in row.segments] == ["interrupted", "closed"]

    # 3. back only after the window: recovery ends it, the clinic starts a new recording
    await wait_until(lambda: time.time() - killed_at > restarted_gap + OFFLINE_S, OFFLINE_S + 5)
    third = await start(first.port)
    await record(third.url, cid, clinic, lambda s: s["recording_id"] != recording_id, third.stop)
    assert third.proc.returncode == 0, log.read_text()[-3000:]

    old, new = await rows(data, cid)
    assert old.id == recording_id and new.id != recording_id
    assert (old.status, old.stop_reason) == ("interrupted", "feed-offline")
    assert new.status == "recording" and len(new.segments) == 1

    directory = data / "recordings" / recording_id
    manifest = Manifest.from_json(json.loads((directory / MANIFEST).read_text()))
    (gap,) = manifest.gaps()
    print(f"kill -9 → segment 2 after a gap of {gap['duration_s']} s")
    assert 1.0 < gap["duration_s"] < restarted_gap + 1.0
    one, two = manifest.segments
    assert two.offset_s >= one.offset_s + one.duration_s + gap["duration_s"] - 0.5
    assert one.repaired is not None
    decoded = decode(directory / two.file)
    assert decoded.errors == 0 and len(decoded.counters) >= 40
    assert float(ffprobe(directory / two.file)["format"]["duration"]) >= 1.5


def test_after_a_restart_an_op_lands_on_the_segment_its_wall_time_agrees_with() -> None:
    """The relay clock starts again at 0 in the new server process, so both segments hold pts
    90 000; the server time of the op picks the second one."""

    manifest = ten_second_manifest(0, 15)
    clock = RecordingClock(manifest)

    def place(ts: str) -> float | None:
        entry = LogEntry.from_json({"ts": ts, "op": "clear", "by": "s", "media_pts": 90_000})
        assert entry is not None
        return clock.of_entry(entry)

    assert place("2025-01-01T00:00:01.000+00:00") == 1.0
    assert place("2025-01-01T00:00:16.100+00:00") == 16.0
    (gap,) = manifest.gaps()
    assert (gap["after_segment"], gap["duration_s"]) == (1, 5.0)
