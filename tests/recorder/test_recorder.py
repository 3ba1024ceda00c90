"""A live session published by aiortc peers (clinic: stamped 720p test pattern + clicks; surgeon:
talk-back clicks) is recorded by remuxing the relay's packets; the file is then read back with
Debian's ffprobe and decoded with PyAV. See tests/recorder/media.py for how A/V skew is measured."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiohttp.test_utils import TestClient
from aiortc.mediastreams import MediaStreamTrack

from persistence.times import parse_utc_iso
from recorder.manifest import MANIFEST, Manifest, SegmentStatus
from recorder.recordings import Recordings
from recorder.writer import SegmentWriter, Track
from relay import FeedName
from signaling.keys import RECORDINGS, RELAY, STORE
from tests.conftest import MakeToken
from tests.peers import wait_until

from .media import Decoded, decode, ffprobe, publishing

SECONDS = 5.0
MAX_SKEW_MS = 100
SETTLE_S = 2.0


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


async def record_session(
    client: TestClient,
    cid: str,
    make_token: MakeToken,
    seconds: float = SECONDS,
    size: tuple[int, int] = (1280, 720),
    video: bool | MediaStreamTrack = True,
) -> tuple[Manifest, Path, float]:
    """Publish for ``seconds`` after the recording started; returns the manifest once the
    segment is closed, the segment file and the wall-clock time the recording ran: from the
    arrival of its first video frame (``started_at``) to the clinic hanging up. ``video``: the
    clinic's video track (default: the stamped pattern at ``size``, encoded by aiortc)."""
    recordings: Recordings = client.app[RECORDINGS]
    clinic = make_token("clinic", cid)
    async with (
        publishing(url(client, f"/whip/{cid}"), clinic, video=video, size=size),
        publishing(url(client, f"/whip/{cid}"), make_token("surgeon", cid), video=False, hz=600),
    ):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        assert recorder is not None
        await asyncio.sleep(seconds)
    hung_up = time.time()

    def on_disk() -> Manifest:
        return Manifest.from_json(json.loads((recorder.directory / MANIFEST).read_text()))

    assert await wait_until(
        lambda: on_disk().segments[0].status is not SegmentStatus.OPEN, timeout=10
    )
    manifest = on_disk()
    wall = hung_up - parse_utc_iso(manifest.segments[0].started_at)
    print(f"recorded {manifest.segments[0].duration_s:.2f} s in {wall:.2f} s of wall time")
    return manifest, recorder.directory / manifest.segments[0].file, wall


def assert_in_sync(decoded: Decoded, track: Track) -> None:
    """Median skew within bounds, and every click once the publisher's encoders have settled
    (aiortc's start-up lag makes the first second's arrival mapping late; the recorder
    re-aligns within it, see docs/recording.md)."""
    skews = decoded.skews_ms(track)
    assert len(skews) >= 3, f"{track.label}: clicks not found"
    print(f"{track.label} skew against video:", " ".join(f"{s:+.0f}" for _, s in skews), "ms")
    median = decoded.skew_ms(track)
    assert abs(median) <= MAX_SKEW_MS, f"{track.label} is {median:+.0f} ms off the video"
    settled = [s for t, s in skews if t >= SETTLE_S]
    assert all(abs(s) <= MAX_SKEW_MS for s in settled), f"{track.label}: {settled}"


async def test_a_vp8_session_is_recorded_as_webm_that_plays_in_order_and_in_sync(
    client: TestClient, consultation, make_token: MakeToken
) -> None:
    manifest, path, wall = await record_session(client, consultation.id, make_token)

    probe = ffprobe(path)
    assert probe["format"]["format_name"].startswith("matroska")
    codecs = [s["codec_name"] for s in probe["streams"]]
    assert codecs == ["vp8", "opus", "opus"]
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (1280, 720)
    assert abs(float(probe["format"]["duration"]) - wall) < 1.0

    decoded = decode(path)
    assert decoded.errors == 0
    assert decoded.sizes == {(1280, 720)}
    steps = {b - a for a, b in zip(decoded.counters, decoded.counters[1:], strict=False)}
    assert steps == {1}, f"frames missing or out of order: steps {sorted(steps)}"
    assert len(decoded.counters) >= SECONDS * 20  # the 720p source itself may lag on 2 busy cores
    # the file's clock runs at the source's pace: its duration is the stamps' wall-clock span
    stamped = decoded.stamps_s[-1] - decoded.stamps_s[0]
    assert abs(decoded.duration_s - stamped) < 0.1
    assert abs(decoded.duration_s - wall) < 1.0

    for track in (Track.AUDIO, Track.TALKBACK):
        assert_in_sync(decoded, track)
        assert abs(decoded.audio_start[track] - decoded.video_times[0]) < MAX_SKEW_MS / 1000

    segment = manifest.segments[0]
    assert segment.status is SegmentStatus.CLOSED
    assert segment.frames == len(decoded.counters)
    assert segment.sha256 and segment.chain and segment.bytes == path.stat().st_size
    assert (segment.width, segment.height) == (1280, 720)
    assert sum(segment.dropped.values()) == 0


async def test_an_h264_session_is_recorded_as_fragmented_mp4_that_plays_in_order_and_in_sync(
    client: TestClient, make_token: MakeToken
) -> None:
    consultation = await client.app[STORE].create(
        "h264", "H264", consent_by="Dr. A", recorded_by="t"
    )
    # 360p: aiortc's x264 cannot encode 720p30 in real time next to everything else on 2 cores
    manifest, path, wall = await record_session(
        client, consultation.id, make_token, size=(640, 360)
    )
    assert path.suffix == ".mp4" and manifest.container == "mp4"

    probe = ffprobe(path)
    assert "mp4" in probe["format"]["format_name"]
    assert [s["codec_name"] for s in probe["streams"]] == ["h264", "opus", "opus"]
    assert (probe["streams"][0]["width"], probe["streams"][0]["height"]) == (640, 360)
    assert abs(float(probe["format"]["duration"]) - wall) < 1.0

    decoded = decode(path)
    assert decoded.errors == 0
    steps = {b - a for a, b in zip(decoded.counters, decoded.counters[1:], strict=False)}
    assert steps == {1}, f"frames missing or out of order: steps {sorted(steps)}"
    assert abs(decoded.duration_s - wall) < 1.0
    for track in (Track.AUDIO, Track.TALKBACK):
        assert_in_sync(decoded, track)
        assert abs(decoded.audio_start[track] - decoded.video_times[0]) < MAX_SKEW_MS / 1000


async def test_the_recording_switch_stops_and_restarts_the_recording_of_a_live_feed(
    client: TestClient, consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    admin = {"Authorization": f"Bearer {make_token('admin', cid)}"}
    switch = f"/api/consultations/{cid}/recording"
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        assert await wait_until(lambda: recordings.active(cid) is not None, timeout=10)
        first = recordings.active(cid)
        assert first is not None

        response = await client.post(switch, json={"enabled": False}, headers=admin)
        assert response.status == 200
        body = await response.json()
        assert body["enabled"] is False
        assert (body["state"], body["reason"]) == ("stopped", "disabled")
        assert recordings.active(cid) is None
        row = await recordings.index.get(first.id)
        assert row is not None and (row.status, row.stop_reason) == ("complete", "disabled")

        response = await client.post(switch, json={"enabled": True}, headers=admin)
        body = await response.json()
        assert (body["enabled"], body["state"]) == (True, "recording")
        assert body["recording_id"] not in (None, first.id)

    surgeon = {"Authorization": f"Bearer {make_token('surgeon', cid)}"}
    assert (await client.post(switch, json={"enabled": False}, headers=surgeon)).status == 403
    assert (await client.post(switch, json={"enabled": "no"}, headers=admin)).status == 400
    observer = {"Authorization": f"Bearer {make_token('observer', cid)}"}
    response = await client.get(switch, headers=observer)
    assert response.status == 200 and (await response.json())["enabled"] is True


async def test_a_consultation_with_recording_switched_off_records_nothing(
    client: TestClient, consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    await client.app[STORE].set_recording_enabled(cid, False)
    recordings: Recordings = client.app[RECORDINGS]
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        router = client.app[RELAY].find(cid)
        assert await wait_until(
            lambda: router is not None and router.feeds[FeedName.ENDOSCOPE].state == "live", 10
        )
        await asyncio.sleep(1.0)  # room for a recording that should not start
        assert recordings.active(cid) is None
    assert await recordings.index.list(cid) == []


async def test_a_writer_that_falls_behind_drops_to_the_next_keyframe_and_says_so(
    client: TestClient, consultation, make_token: MakeToken, monkeypatch
) -> None:
    """The writer thread's queue is full for a moment (a slow disk): frames are dropped instead
    of blocking the loop, video resumes at a keyframe (no broken frame in the file), and the
    manifest counts it."""
    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    submit = SegmentWriter.submit
    full = {"until": 0.0}

    def sometimes_full(self: SegmentWriter, *args) -> bool:  # type: ignore[no-untyped-def]
        return False if time.monotonic() < full["until"] else submit(self, *args)

    monkeypatch.setattr(SegmentWriter, "submit", sometimes_full)
    async with publishing(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        assert recorder is not None
        await asyncio.sleep(1.0)
        full["until"] = time.monotonic() + 0.5
        await asyncio.sleep(3.0)
    assert await wait_until(lambda: not recorder.segment_open, timeout=10)
    manifest = Manifest.from_json(json.loads((recorder.directory / MANIFEST).read_text()))
    (segment,) = manifest.segments
    assert manifest.writer_overflows == 1
    assert segment.dropped["video"] >= 10 and segment.dropped["audio"] >= 20
    decoded = decode(recorder.directory / segment.file)
    assert decoded.errors == 0
    jumps = [
        b - a for a, b in zip(decoded.counters, decoded.counters[1:], strict=False) if b - a > 1
    ]
    assert len(jumps) == 1 and jumps[0] >= 10, jumps
