"""One Recording per live session, whatever the network does: a clinic that drops and comes back
continues it with a new segment (the gap marked), a feed that stays away ends it, and the
participants hear about every change over the consultation's WebSocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from recorder.integrity import chain_genesis, chain_next
from recorder.manifest import MANIFEST, Manifest, SegmentStatus
from recorder.recordings import Recordings
from signaling.app import create_app
from signaling.auth.grants import Grant, Role
from signaling.keys import RECORDINGS, STORE, TOKENS
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.peers import wait_until

from .media import CapturePatternTrack, decode, made, publishing


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


def on_disk(recordings: Recordings, cid: str) -> Manifest:
    recorder = recordings.active(cid)
    assert recorder is not None
    return Manifest.from_json(json.loads((recorder.directory / MANIFEST).read_text()))


async def recording_messages(ws: ClientWebSocketResponse, into: list[dict[str, Any]]) -> None:
    async for message in ws:
        data = json.loads(message.data)
        if data["type"] == "recording":
            into.append(data)


async def test_a_clinic_that_drops_and_returns_continues_one_recording_with_a_marked_gap(
    client: TestClient, consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    clinic = make_token("clinic", cid)

    track = CapturePatternTrack(1280, 720)
    async with publishing(url(client, f"/whip/{cid}"), clinic, video=track):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        await made(track, 45)
    assert await wait_until(
        lambda: on_disk(recordings, cid).segments[0].status is SegmentStatus.CLOSED, timeout=10
    )
    assert await wait_until(lambda: recordings.state(cid).state == "paused", timeout=5)
    await asyncio.sleep(1.0)  # the clinic is away
    track = CapturePatternTrack(1280, 720)
    async with publishing(url(client, f"/whip/{cid}"), clinic, video=track):
        assert await wait_until(lambda: recorder.segment_seq == 2, timeout=10)
        await made(track, 45)
    # segment_open stays true until manifest and index both say the segment is closed
    assert await wait_until(lambda: not recorder.segment_open, timeout=10)

    assert recordings.active(cid) is recorder, "the return started a new recording"
    manifest = on_disk(recordings, cid)
    first, second = manifest.segments
    assert (first.file, second.file) == ("segment-001.webm", "segment-002.webm")
    gaps = manifest.to_json()["gaps"]
    assert len(gaps) == 1 and gaps[0]["after_segment"] == 1
    assert 0.8 <= gaps[0]["duration_s"] <= 5.0, gaps
    assert second.offset_s >= first.duration_s + gaps[0]["duration_s"] - 0.1
    assert first.chain == chain_next(chain_genesis(recorder.id), first.sha256 or "")
    assert second.chain == chain_next(first.chain, second.sha256 or "")
    # relay clock: the second connection continues where the first stopped, plus the gap
    assert second.video_pts_start > (first.video_pts_end or 0)
    for segment in (first, second):
        decoded = decode(recorder.directory / segment.file)
        assert decoded.errors == 0 and len(decoded.counters) >= 30
        assert decoded.counters == sorted(decoded.counters)

    rows = await recordings.index.list(cid)
    assert len(rows) == 1 and rows[0].status == "recording"
    assert [(s.seq, s.status, s.sha256) for s in rows[0].segments] == [
        (1, "closed", first.sha256),
        (2, "closed", second.sha256),
    ]


async def test_a_reloaded_clinic_page_that_replaces_its_connection_starts_the_next_segment(
    client: TestClient, consultation, make_token: MakeToken
) -> None:
    """The same identity connecting again replaces the old connection without the feed going
    offline; the recording still gets one segment per publisher connection."""
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    clinic = make_token("clinic", cid)
    first_track, second_track = CapturePatternTrack(1280, 720), CapturePatternTrack(1280, 720)
    async with publishing(url(client, f"/whip/{cid}"), clinic, video=first_track):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        assert recorder is not None
        await made(first_track, 45)
        # the reload
        async with publishing(url(client, f"/whip/{cid}"), clinic, video=second_track):
            assert await wait_until(lambda: recorder.segment_seq == 2, timeout=10)
            await made(second_track, 45)
    # segment_open stays true until manifest and index both say the segment is closed
    assert await wait_until(lambda: not recorder.segment_open, timeout=10)
    assert recordings.active(cid) is recorder
    manifest = on_disk(recordings, cid)
    first, second = manifest.segments
    (gap,) = manifest.to_json()["gaps"]
    assert gap["duration_s"] < 2.0, gap
    for segment in (first, second):
        decoded = decode(recorder.directory / segment.file)
        assert decoded.errors == 0 and len(decoded.counters) >= 15
        assert decoded.counters == sorted(decoded.counters)
    # the second file holds the new connection's stream: its test pattern restarted at 0
    assert decode(recorder.directory / second.file).counters[0] < 60


async def test_a_feed_offline_longer_than_the_setting_ends_the_recording_and_the_room_is_told(
    aiohttp_client, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(recording_offline_s=1.0)))
    consultation = await client.app[STORE].create(
        "offline", "VP8", consent_by="Dr. A", recorded_by="t"
    )
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    issue = client.app[TOKENS].issue
    clinic = issue(Grant.for_role(Role.CLINIC, cid, "clinic-1", 60))
    surgeon = issue(Grant.for_role(Role.SURGEON, cid, "surgeon-1", 60))
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(surgeon))
    messages: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(recording_messages(ws, messages))
    try:
        async with publishing(url(client, f"/whip/{cid}"), clinic):
            assert await wait_until(lambda: recordings.active(cid) is not None, timeout=10)
            recording_id = recordings.active(cid).id  # type: ignore[union-attr]
            await asyncio.sleep(1.0)
        assert await wait_until(lambda: recordings.active(cid) is None, timeout=10)
        assert await wait_until(lambda: len(messages) >= 3, timeout=5)
    finally:
        reader.cancel()
        await ws.close()

    assert [(m["state"], m["reason"]) for m in messages] == [
        ("recording", None),
        ("paused", None),
        ("stopped", "feed-offline"),
    ]
    assert {m["recording_id"] for m in messages} == {recording_id}
    row = await recordings.index.get(recording_id)
    assert row is not None
    assert (row.status, row.stop_reason, len(row.segments)) == ("complete", "feed-offline", 1)
    assert row.chain_head == row.segments[0].chain
