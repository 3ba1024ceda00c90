"""SIGTERM on a real ``endolink serve`` while a real publisher streams, the consultation records
and a page is connected: the page is told the server is restarting and its socket closes with
1001, the process exits 0 within a bound, and the recording's segment is closed, hashed, chained
and plays for about as long as it was streamed. A download still running at the time delays
neither the recording's end nor the exit past the shutdown grace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from recorder.manifest import SegmentStatus, read_manifest, recording_dir
from recorder.verify import verify_recording
from signaling.auth.grants import Role
from signaling.http.netcheck import MAX_BYTES
from signaling.http.serving import SHUTDOWN_GRACE_S
from tests.processes import Process, Server, consultation_on_disk
from tests.recorder.media import ffprobe, publishing
from tests.recorder.test_restart import recording_state, rows

STREAM_S = 4.0
EXIT_WITHIN_S = 10.0
SLOW_UPLOADS = 4


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


async def serving(
    data: Path, log: Path, processes: list[Process], title: str
) -> tuple[Server, str, Callable[[Role], str]]:
    """A real ``endolink serve`` on ``data`` holding one consultation, ready: (server, its
    id, ``token(role)``)."""
    cid, token = await consultation_on_disk(data, title)
    server = Server(data, log)
    processes.append(server)
    await asyncio.to_thread(server.wait_ready)
    return server, cid, token


async def test_sigterm_tells_pages_finalises_the_recording_and_exits_0(
    tmp_path: Path, processes: list[Process]
) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    server, cid, token = await serving(data, log, processes, "shutdown")
    clinic = token(Role.CLINIC)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token(Role.SURGEON)}"}
        ws = await http.ws_connect(f"{server.url}/ws/{cid}", headers=headers)
        reading = asyncio.ensure_future(page(ws))
        async with publishing(f"{server.url}/whip/{cid}", clinic):
            await until_recording(server.url, cid, clinic)
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


async def until_recording(base: str, cid: str, token: str) -> None:
    state: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while state.get("state") != "recording" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        state = await recording_state(base, cid, token)
    assert state["state"] == "recording", state


def slow_upload(port: int, cid: str, token: str) -> socket.socket:
    """The network check's largest upload, begun and then held: its handler waits for the rest
    of the body (the body deadline allows a minute for it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"POST /api/consultations/{cid}/netcheck/upload HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {MAX_BYTES}\r\n\r\n".encode()
        + bytes(65536)
    )
    return sock


def answer(sock: socket.socket) -> bytes:
    """What the server sent until it closed (bounded)."""
    got, deadline = b"", time.monotonic() + 10
    with sock:
        with contextlib.suppress(ConnectionError):
            while time.monotonic() < deadline and (data := sock.recv(65536)):
                got += data
    return got


async def segment_closed_after(data: Path, cid: str, limit_s: float) -> float:
    """Seconds until the recording's last segment is closed on disk (``limit_s`` at most)."""
    began = time.monotonic()
    (row,) = await rows(data, cid)
    while time.monotonic() - began < limit_s:
        manifest = read_manifest(recording_dir(data, row.id))
        if manifest and manifest.segments[-1].status is SegmentStatus.CLOSED:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_an_upload_in_flight_delays_neither_the_recordings_end_nor_the_exit(
    tmp_path: Path, processes: list[Process]
) -> None:
    """aiohttp waits 60 s for running requests by default (here: uploads held half-way):
    recordings end before that wait, and the wait is ``SHUTDOWN_GRACE_S``."""
    data, log = tmp_path / "data", tmp_path / "server.log"
    server, cid, token = await serving(data, log, processes, "uploads in flight")
    clinic = token(Role.CLINIC)
    async with publishing(f"{server.url}/whip/{cid}", clinic):
        await until_recording(server.url, cid, clinic)
        uploads = [slow_upload(server.port, cid, clinic) for _ in range(SLOW_UPLOADS)]
        await asyncio.sleep(1.0)
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        finalised_s = await segment_closed_after(data, cid, EXIT_WITHIN_S)
        returncode = await asyncio.to_thread(server.proc.wait, SHUTDOWN_GRACE_S + EXIT_WITHIN_S)
        took = time.monotonic() - began
    answers = [await asyncio.to_thread(answer, sock) for sock in uploads]
    server.stop()
    print(
        f"SIGTERM → segment closed in {finalised_s:.2f} s, exit in {took:.2f} s; answers {answers}"
    )
    assert returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert all(b'"received"' not in got for got in answers), answers  # cut, not finished
    assert finalised_s < 2.0
    assert took < SHUTDOWN_GRACE_S + 3.0
