"""A full disk never corrupts a recording: below the free-space floor recording stops cleanly (or
does not start) and the room is told; a write that fails ends the recording as interrupted. Either
way index, manifest and files agree, and what was written verifies."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from recorder import recordings as recordings_module
from recorder.manifest import MANIFEST, Manifest, recording_dir
from recorder.recordings import Recordings
from recorder.verify import verify_recording
from recorder.writer import SegmentWriter
from signaling.keys import RECORDINGS
from tests.conftest import MakeToken, bearer
from tests.peers import wait_until

from .media import publishing


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


@pytest.fixture
async def room(
    client: TestClient, consultation, make_token: MakeToken
) -> AsyncIterator[list[dict[str, Any]]]:
    """``recording`` messages a surgeon's WebSocket receives, in order."""
    ws = await client.ws_connect(
        f"/ws/{consultation.id}", headers=bearer(make_token("surgeon", consultation.id))
    )
    messages: list[dict[str, Any]] = []

    async def read(ws: ClientWebSocketResponse) -> None:
        async for message in ws:
            data = json.loads(message.data)
            if data["type"] == "recording":
                messages.append(data)

    reader = asyncio.ensure_future(read(ws))
    yield messages
    reader.cancel()
    await ws.close()


async def assert_consistent(recordings: Recordings, recording_id: str) -> Manifest:
    row = await recordings.index.get(recording_id)
    assert row is not None
    directory = recording_dir(recordings.data_dir, recording_id)
    manifest = Manifest.from_json(json.loads((directory / MANIFEST).read_text()))
    assert (manifest.status, manifest.stop_reason) == (row.status, row.stop_reason)
    check = await asyncio.to_thread(verify_recording, recordings.data_dir, row)
    assert check.ok, check.to_json()
    return manifest


async def test_free_space_below_the_floor_stops_the_recording_cleanly_and_alerts_the_room(
    client: TestClient,
    consultation,
    make_token: MakeToken,
    room: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recording_id = recordings.active(cid).id  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
        monkeypatch.setattr(recordings_module, "disk_free_bytes", lambda path: 100 * 1024 * 1024)
        assert await wait_until(lambda: recordings.active(cid) is None, timeout=5)
        assert await wait_until(lambda: room and room[-1]["state"] == "stopped", timeout=5)
        await asyncio.sleep(1.5)  # the feed is still live: nothing restarts while the disk is full
        assert recordings.active(cid) is None

    assert [(m["state"], m["reason"]) for m in room] == [
        ("recording", None),
        ("stopped", "low-disk"),
    ]
    manifest = await assert_consistent(recordings, recording_id)
    assert (manifest.status, manifest.stop_reason) == ("complete", "low-disk")
    assert manifest.segments[0].duration_s >= 0.8
    assert "surgeon" in {p["role"] for p in manifest.participants}


async def test_a_feed_going_live_on_a_full_disk_is_not_recorded_and_the_room_is_told(
    client: TestClient,
    consultation,
    make_token: MakeToken,
    room: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    monkeypatch.setattr(recordings_module, "disk_free_bytes", lambda path: 0)
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        assert await wait_until(lambda: bool(room), timeout=10)
    assert [(m["state"], m["reason"], m["recording_id"]) for m in room] == [
        ("stopped", "low-disk", None)
    ]
    assert recordings.active(cid) is None
    assert await recordings.index.list(cid) == []


async def test_a_failing_disk_write_ends_the_recording_as_interrupted_and_keeps_it_consistent(
    client: TestClient,
    consultation,
    make_token: MakeToken,
    room: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    write = SegmentWriter._write
    written = {"frames": 0}

    def failing_write(self: SegmentWriter, *args: Any) -> None:
        written["frames"] += 1
        if written["frames"] > 60:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, *args)

    monkeypatch.setattr(SegmentWriter, "_write", failing_write)
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        assert await wait_until(lambda: room and room[-1]["state"] == "interrupted", timeout=10)
    recording_id = room[-1]["recording_id"]
    assert room[-1]["reason"] == "write-error"
    manifest = await assert_consistent(recordings, recording_id)
    assert (manifest.status, manifest.stop_reason) == ("interrupted", "write-error")
    (segment,) = manifest.segments
    assert segment.status == "interrupted" and segment.error and "No space" in segment.error
    assert segment.sha256 is not None and Path(recordings.data_dir).exists()
