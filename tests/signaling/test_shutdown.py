"""SIGTERM on a real ``endolink serve`` while a real publisher streams, the consultation records
and a page is connected: the page is told the server is restarting and its socket closes with
1001, the process exits 0 within a bound, and the recording's segment is closed, hashed, chained
and plays for about as long as it was streamed."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from recorder.manifest import SegmentStatus, read_manifest, recording_dir
from recorder.verify import verify_recording
from signaling.auth.grants import Role
from tests.processes import Process, Server, consultation_on_disk
from tests.recorder.media import ffprobe, publishing
from tests.recorder.test_restart import recording_state, rows

STREAM_S = 4.0
EXIT_WITHIN_S = 10.0


async def page(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], int | None, str]:
    """Reads like a page until the socket closes: message types, close code and reason."""
    types: list[str] = []
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type is aiohttp.WSMsgType.TEXT:
            types.append(json.loads(msg.data)["type"])
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            return types, msg.data, msg.extra or ""
        else:
            return types, ws.close_code, ""


async def test_sigterm_tells_pages_finalises_the_recording_and_exits_0(
    tmp_path: Path, processes: list[Process]
) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    cid, token = await consultation_on_disk(data, "shutdown")
    server = Server(data, log)
    processes.append(server)
    await asyncio.to_thread(server.wait_ready)
    clinic = token(Role.CLINIC)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token(Role.SURGEON)}"}
        ws = await http.ws_connect(f"{server.url}/ws/{cid}", headers=headers)
        reading = asyncio.ensure_future(page(ws))
        async with publishing(f"{server.url}/whip/{cid}", clinic):
            state: dict[str, Any] = {}
            deadline = time.monotonic() + 20
            while state.get("state") != "recording" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                state = await recording_state(server.url, cid, clinic)
            assert state["state"] == "recording", state
            started = time.monotonic()
            await asyncio.sleep(STREAM_S)
            server.proc.send_signal(signal.SIGTERM)
            streamed = time.monotonic() - started
            returncode = await asyncio.to_thread(server.proc.wait, EXIT_WITHIN_S)
            took = time.monotonic() - started - streamed
        types, code, reason = await asyncio.wait_for(reading, 5)
    server.stop()
    print(f"SIGTERM → exit {returncode} in {took:.2f} s; page saw {types[-3:]}, close {code}")
    assert returncode == 0, log.read_text()[-3000:]
    assert took < EXIT_WITHIN_S
    assert types[-1] == "restarting" and "welcome" in types
    assert (code, reason) == (1001, "server restarting")

    (row,) = await rows(data, cid)
    assert row.status == "recording"  # paused for the next start (docs/closures.md)
    check = verify_recording(data, row)
    assert check.ok, check.to_json()
    manifest = read_manifest(recording_dir(data, row.id))
    assert manifest is not None
    (segment,) = manifest.segments
    assert segment.status is SegmentStatus.CLOSED and segment.sha256 and segment.chain
    assert manifest.chain_head == segment.chain
    probed = ffprobe(recording_dir(data, row.id) / segment.file)
    duration = float(probed["format"]["duration"])
    print(f"streamed {streamed:.2f} s while recording; the segment plays {duration:.2f} s")
    assert abs(duration - streamed) < 1.5
