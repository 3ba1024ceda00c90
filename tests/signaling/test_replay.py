"""Replay API: listing and filters, detail with the annotation timeline, media with HTTP Range,
media tokens, thumbnails, downloads, exports, integrity, the audit trail, and every refusal."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import zipfile
from dataclasses import dataclass

import av
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from recorder import library
from recorder.annotation_log import read_annotation_log
from recorder.index import RecordingIndex
from recorder.manifest import recording_dir
from recorder.snapshots import Snapshot, SnapshotStore
from recorder.storage import consultation_dir
from signaling.auth import media_tokens
from signaling.db.store import Consultation
from signaling.http.logs import install_log_hygiene
from signaling.keys import RECORDINGS, SETTINGS, STORE
from tests.conftest import MakeToken, bearer
from tests.peers import wait_until
from tests.replay_support import Made, at, make_recording, stroke, write_log

PNG = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


@dataclass
class World:
    client: TestClient
    a: Consultation
    b: Consultation
    rec: Made
    "Consultation A's recording: one 2 s segment, a mark from 0.5 s to 1.5 s, a snapshot at 1 s."
    other: Made
    "Consultation B's recording, two segments."
    snapshot: Snapshot

    def url(self, suffix: str = "", rec: Made | None = None) -> str:
        return f"/api/recordings/{(rec or self.rec).id}{suffix}"


@pytest.fixture
async def world(client: TestClient) -> World:
    return await make_world(client)


async def make_world(client: TestClient) -> World:
    """Consultations A and B with their recordings (also the FHIR tests' world)."""
    store = client.app[STORE]
    a = await store.create("Colonoscopy review", "VP8", consent_by="Dr. A", recorded_by="t")
    b = await store.create("Other", "VP8", consent_by="Dr. B", recorded_by="t")
    data = client.app[SETTINGS].data_dir
    index: RecordingIndex = client.app[RECORDINGS].index
    rec = await make_recording(data, index, a.id, title=a.title, segments=(2.0,))
    other = await make_recording(
        data, index, b.id, title=b.title, segments=(1.0, 1.0), started=time.time() - 86400 * 3
    )
    write_log(
        data,
        a.id,
        [
            at(rec, 0.5, op="add", by="surgeon-test", annotation=stroke()),
            at(rec, 1.5, op="remove", by="surgeon-test", id="m1"),
        ],
    )
    snapshot = await SnapshotStore(data).add(a.id, "surgeon-test", PNG, at=rec.started + 1.0)
    return World(client, a, b, rec, other, snapshot)


async def get(world: World, path: str, token: str | None = None, **headers: str):  # type: ignore[no-untyped-def]
    auth = bearer(token) if token else {}
    return await world.client.get(path, headers={**auth, **headers})


async def test_members_with_the_replay_grant_list_their_consultations_recordings_admins_all(
    world: World, make_token: MakeToken
) -> None:
    surgeon = make_token("surgeon", world.a.id)
    body = await (await get(world, "/api/recordings", surgeon)).json()
    (item,) = body["recordings"]
    assert item["id"] == world.rec.id
    assert item["consultation"] == {"id": world.a.id, "title": "Colonoscopy review"}
    assert item["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert item["mime_type"] == "video/webm" and item["segments"] == 1
    assert {p["name"] for p in item["participants"]} == {"Dr. Test", ""}
    assert item["thumbnail"] == world.url("/thumbnail.jpg")

    admin = make_token("admin", "*")
    listed = (await (await get(world, "/api/recordings", admin)).json())["recordings"]
    assert [r["id"] for r in listed] == [world.rec.id, world.other.id]  # newest first
    only_b = f"/api/recordings?consultation={world.b.id}"
    assert [r["id"] for r in (await (await get(world, only_b, admin)).json())["recordings"]] == [
        world.other.id
    ]
    # dates: B's recording is three days old
    day = time.strftime("%Y-%m-%d", time.gmtime(world.other.started))
    for query, expected in [
        (f"since={day}&until={day}", [world.other.id]),
        (f"until={day}", [world.other.id]),
        (f"since={time.strftime('%Y-%m-%d', time.gmtime(world.rec.started))}", [world.rec.id]),
        ("since=2020-01-01T00:00:00Z", [world.rec.id, world.other.id]),
    ]:
        response = await get(world, f"/api/recordings?{query}", admin)
        assert [r["id"] for r in (await response.json())["recordings"]] == expected, query
    assert (await get(world, "/api/recordings?since=yesterday", admin)).status == 400

    assert (await get(world, only_b, surgeon)).status == 403  # not their consultation
    assert (await get(world, "/api/recordings", make_token("observer", world.a.id))).status == 403
    replaying_observer = make_token("observer", world.a.id, may_replay=True)
    assert (await get(world, "/api/recordings", replaying_observer)).status == 200
    scoped_admin = make_token("admin", world.b.id)
    listed = (await (await get(world, "/api/recordings", scoped_admin)).json())["recordings"]
    assert [r["id"] for r in listed] == [world.other.id]


async def test_the_detail_holds_manifest_integrity_timeline_snapshots_and_media(
    world: World, make_token: MakeToken
) -> None:
    response = await get(world, world.url(), make_token("surgeon", world.a.id))
    assert response.status == 200
    body = await response.json()
    assert body["manifest"]["recording_id"] == world.rec.id
    assert body["manifest"]["format"] == "endolink-recording"
    assert body["integrity"]["ok"] is True
    assert {f["verdict"] for f in body["integrity"]["files"]} == {"OK"}
    (media,) = body["media"]
    assert media == {
        "segment": 1,
        "url": world.url("/media/1"),
        "mime_type": "video/webm",
        "status": "closed",
        "started_at": world.rec.manifest.segments[0].started_at,
        "offset_s": 0.0,
        "duration_s": world.rec.manifest.segments[0].duration_s,
        "bytes": world.rec.segment_path().stat().st_size,
        "repaired": False,
        "talkback": world.url("/media/1/talkback"),
    }
    (mark,) = body["timeline"]["marks"]
    assert (mark["start_t"], mark["end_t"], mark["end"]) == (0.5, 1.5, "remove")
    assert mark["author"] == "surgeon-test" and mark["color"] == "#00e676"
    assert mark["shapes"][0]["points"] == [[0.3, 0.5], [0.7, 0.5]]
    (snapshot,) = body["snapshots"]
    sid = world.snapshot.id
    assert snapshot["id"] == sid and snapshot["t"] == pytest.approx(1.0, abs=0.01)
    assert snapshot["url"] == f"/api/consultations/{world.a.id}/snapshots/{sid}.png"

    # B's two-segment recording: the gap and each segment's place on the recording clock
    other = await (await get(world, world.url(rec=world.other), make_token("admin", "*"))).json()
    assert [m["segment"] for m in other["media"]] == [1, 2]
    assert other["media"][1]["offset_s"] == pytest.approx(3.0, abs=0.1)
    assert other["gaps"][0]["duration_s"] == pytest.approx(2.0, abs=0.01)


async def test_media_is_served_with_range_requests(world: World, make_token: MakeToken) -> None:
    token = make_token("surgeon", world.a.id)
    content = world.rec.segment_path().read_bytes()
    whole = await get(world, world.url("/media/1"), token)
    assert whole.status == 200 and whole.content_type == "video/webm"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert await whole.read() == content

    part = await get(world, world.url("/media/1"), token, Range="bytes=100-199")
    assert part.status == 206 and part.content_type == "video/webm"
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
    assert await part.read() == content[100:200]
    tail = await get(world, world.url("/media/1"), token, Range="bytes=-50")
    assert tail.status == 206 and await tail.read() == content[-50:]
    beyond = await get(world, world.url("/media/1"), token, Range=f"bytes={len(content) + 10}-")
    assert beyond.status == 416
    assert (await get(world, world.url("/media/2"), token)).status == 404


async def test_the_talkback_track_is_served_as_audio_only_webm(
    world: World, make_token: MakeToken
) -> None:
    token = make_token("surgeon", world.a.id)
    response = await get(world, world.url("/media/1/talkback"), token)
    assert response.status == 200 and response.content_type == "audio/webm"
    body = await response.read()
    stored = world.rec.directory / "talkback-001.webm"
    assert stored.read_bytes() == body
    with av.open(str(stored)) as container:
        (stream,) = container.streams
        assert stream.type == "audio" and stream.codec_context.name == "opus"
        packets = sum(1 for p in container.demux(stream) if p.dts is not None)
    assert packets == world.rec.manifest.segments[0].audio_packets["talkback"] == 100
    part = await get(world, world.url("/media/1/talkback"), token, Range="bytes=0-99")
    assert part.status == 206 and await part.read() == body[:100]
    media = await (await get(world, world.url("/media-token"), token)).json()
    with_token = await get(world, media["media"][0]["talkback"])
    assert with_token.status == 200 and await with_token.read() == body
    observer = make_token("observer", world.a.id)
    assert (await get(world, world.url("/media/1/talkback"), observer)).status == 403
    assert (await get(world, world.url("/media/9/talkback"), token)).status == 404


async def test_refusals_wrong_consultation_observer_expired_unknown(
    world: World, make_token: MakeToken
) -> None:
    paths = ["", "/media/1", "/thumbnail.jpg", "/download", "/media-token"]
    cases = [
        (make_token("surgeon", world.b.id), 403),  # another consultation's surgeon
        (make_token("admin", world.b.id), 403),  # an admin scoped to another consultation
        (make_token("observer", world.a.id), 403),  # no replay grant
        (make_token("clinic", world.a.id), 403),  # no replay grant
        (make_token("surgeon", world.a.id, ttl_s=-30), 401),  # expired
        (None, 401),
    ]
    for token, status in cases:
        for path in paths:
            response = await get(world, world.url(path), token)
            assert response.status == status, (path, token and status, await response.text())
    response = await get(world, world.url(), make_token("surgeon", world.a.id, ttl_s=-30))
    assert "expired" in (await response.json())["reason"]
    post = await world.client.post(
        world.url("/exports"), headers=bearer(make_token("observer", world.a.id))
    )
    assert post.status == 403
    granted = make_token("observer", world.a.id, may_replay=True)
    assert (await get(world, world.url(), granted)).status == 200
    assert (await get(world, world.url(), make_token("admin", "*"))).status == 200

    unknown = "/api/recordings/20200101T000000Z-AAAAAAAA"
    assert (await get(world, unknown, make_token("admin", "*"))).status == 404


@pytest.mark.parametrize(
    "rid",
    [
        "..%2F..%2Fetc",
        "..",
        "20200101T000000Z-AAAAAAAA%2F..",
        "20200101T000000Z-AAAA",
        "x" * 300,
        "20200101T000000Z-AAAAAAA%00",
    ],
)
async def test_malformed_ids_are_refused_before_touching_index_or_disk(
    world: World, make_token: MakeToken, monkeypatch: pytest.MonkeyPatch, rid: str
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index or the disk was touched")

    monkeypatch.setattr(RecordingIndex, "get", forbidden)
    monkeypatch.setattr(library, "read_manifest", forbidden)
    monkeypatch.setattr(library, "recording_dir", forbidden)
    admin = make_token("admin", "*")
    for suffix in ("", "/media/1", "/thumbnail.jpg", "/download", "/media-token", "/exports/x"):
        response = await get(world, f"/api/recordings/{rid}{suffix}", admin)
        assert response.status in (400, 404), (rid, suffix, response.status)
        body = await response.json()
        assert rid not in body["reason"]
    response = await world.client.post(f"/api/recordings/{rid}/exports", headers=bearer(admin))
    assert response.status in (400, 404)


async def test_a_flipped_byte_is_reported_by_the_detail(
    world: World, make_token: MakeToken
) -> None:
    token = make_token("surgeon", world.a.id)
    assert (await (await get(world, world.url(), token)).json())["integrity"]["ok"] is True
    path = world.rec.segment_path()
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    integrity = (await (await get(world, world.url(), token)).json())["integrity"]
    assert integrity["ok"] is False
    verdicts = {f["file"]: f["verdict"] for f in integrity["files"]}
    assert verdicts == {"segment-001.webm": "MODIFIED", "manifest.json": "OK"}


async def test_media_tokens_are_scoped_short_lived_and_only_for_media(
    world: World, make_token: MakeToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    surgeon = make_token("surgeon", world.a.id)
    response = await get(world, world.url("/media-token"), surgeon)
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["expires_at"] - time.time() <= media_tokens.MEDIA_TOKEN_TTL_S + 1
    (entry,) = body["media"]
    assert entry["url"] == world.url(f"/media/1?t={body['token']}")
    media_url = entry["url"]
    content = world.rec.segment_path().read_bytes()
    part = await get(world, media_url, Range="bytes=10-19")
    assert part.status == 206 and await part.read() == content[10:20]

    # not for another recording, not on other routes, not as a Bearer token — and vice versa
    other = world.url(f"/media/1?t={body['token']}", rec=world.other)
    assert (await get(world, other)).status == 403
    for path in ("", "/download", "/thumbnail.jpg", "/media-token"):
        assert (await get(world, world.url(f"{path}?t={body['token']}"))).status == 401
    assert (await get(world, world.url("/media/1"), body["token"])).status == 401
    assert (await get(world, world.url(f"/media/1?t={surgeon}"))).status == 401
    assert (await get(world, world.url("/media/1?t=garbage"))).status == 401

    # expired: issued six minutes ago
    real = time.time
    monkeypatch.setattr(media_tokens.time, "time", lambda: real() - 360)
    old = await (await get(world, world.url("/media-token"), surgeon)).json()
    monkeypatch.setattr(media_tokens.time, "time", real)
    response = await get(world, world.url(f"/media/1?t={old['token']}"))
    assert response.status == 401 and "expired" in (await response.json())["reason"]
    # never outlives the Bearer token it was issued for
    short = make_token("surgeon", world.a.id, ttl_s=20)
    brief = await (await get(world, world.url("/media-token"), short)).json()
    assert brief["expires_at"] - time.time() <= 21


def test_the_access_log_never_shows_a_media_token(caplog: pytest.LogCaptureFixture) -> None:
    install_log_hygiene()
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        logging.getLogger("aiohttp.access").info(
            '127.0.0.1 "GET /api/recordings/x/media/1?t=eyJsecret.part.sig HTTP/1.1" 206'
        )
    assert "eyJsecret" not in caplog.text and "t=<redacted>" in caplog.text


async def test_the_thumbnail_is_made_once_from_the_first_keyframe(
    world: World, make_token: MakeToken
) -> None:
    token = make_token("surgeon", world.a.id)
    response = await get(world, world.url("/thumbnail.jpg"), token)
    assert response.status == 200 and response.content_type == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1] == 320 and image.shape[0] == 192
    stored = world.rec.directory / "thumbnail.jpg"
    made_at = stored.stat().st_mtime_ns
    assert (await get(world, world.url("/thumbnail.jpg"), token)).status == 200
    assert stored.stat().st_mtime_ns == made_at


async def test_download_one_segment_as_is_several_as_a_zip_in_order(
    world: World, make_token: MakeToken
) -> None:
    single = await get(world, world.url("/download"), make_token("surgeon", world.a.id))
    assert single.status == 200 and single.content_type == "video/webm"
    assert f'filename="endolink-{world.rec.id}.webm"' in single.headers["Content-Disposition"]
    assert await single.read() == world.rec.segment_path().read_bytes()

    multi = await get(world, world.url("/download", world.other), make_token("admin", "*"))
    assert multi.status == 200 and multi.content_type == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await multi.read()))
    assert archive.namelist() == ["manifest.json", "segment-001.webm", "segment-002.webm"]
    for name in archive.namelist()[1:]:
        assert archive.read(name) == (world.other.directory / name).read_bytes()
    assert json.loads(archive.read("manifest.json"))["recording_id"] == world.other.id


async def test_every_replay_download_and_export_is_audited(
    world: World, make_token: MakeToken
) -> None:
    surgeon = make_token("surgeon", world.a.id, name="Dr. Who")
    assert (await get(world, world.url("/media-token"), surgeon)).status == 200
    assert (await get(world, world.url("/download"), surgeon)).status == 200
    response = await world.client.post(world.url("/exports"), headers=bearer(surgeon))
    assert response.status == 202
    job = (await response.json())["job"]
    assert response.headers["Location"] == job["status_url"]
    assert job["state"] in ("queued", "running") and job["url"] is None

    async def state() -> dict:
        return (await (await get(world, job["status_url"], surgeon)).json())["job"]

    deadline = time.monotonic() + 25
    current = await state()
    while current["state"] not in ("done", "failed") and time.monotonic() < deadline:
        assert 0 <= current["progress"] <= 100
        current = await state()
    assert current["state"] == "done", current
    assert current["url"] == f"{job['status_url']}/file"
    file = await get(world, current["url"], surgeon)
    assert file.status == 200 and file.content_type == "video/mp4"
    exported = world.rec.directory / "exports" / f"{job['id']}.mp4"
    assert await file.read() == exported.read_bytes()
    with av.open(str(exported)) as container:
        assert container.streams.video[0].codec_context.name == "h264"

    admin = make_token("admin", "*")
    response = await get(world, f"/api/consultations/{world.a.id}/audit", admin)
    assert response.status == 200
    rows = (await response.json())["audit"]
    assert [r["action"] for r in rows] == ["replay", "download", "export", "export-download"]
    for row in rows:
        assert row["recording_id"] == world.rec.id and row["consultation_id"] == world.a.id
        assert row["role"] == "surgeon" and row["identity"].startswith("surgeon-")
        assert row["name"] == "Dr. Who" and re.match(r"\d{4}-\d\d-\d\dT", row["at"])
    other = await get(world, f"/api/consultations/{world.b.id}/audit", admin)
    assert (await other.json())["audit"] == []
    assert (await get(world, f"/api/consultations/{world.a.id}/audit", surgeon)).status == 403
    scoped = make_token("admin", world.b.id)
    assert (await get(world, f"/api/consultations/{world.a.id}/audit", scoped)).status == 403
    unknown = await get(world, "/api/consultations/nope-nope-nope/audit", admin)
    assert unknown.status == 404


async def test_export_jobs_of_another_recording_or_malformed_are_not_found(
    world: World, make_token: MakeToken
) -> None:
    admin = make_token("admin", "*")
    job = (await (await world.client.post(world.url("/exports"), headers=bearer(admin))).json())[
        "job"
    ]
    assert (await get(world, world.url(f"/exports/{job['id']}", world.other), admin)).status == 404
    assert (await get(world, world.url("/exports/..%2F..%2Fx"), admin)).status in (400, 404)
    assert (await get(world, world.url("/exports/AAAAAAAAAAAA"), admin)).status == 404
    early = await get(world, world.url(f"/exports/{job['id']}/file"), admin)
    assert early.status in (200, 409)
    assert await wait_until(lambda: (world.rec.directory / "exports").is_dir(), timeout=5)


async def test_the_replay_page_is_served_like_the_others(client: TestClient) -> None:
    response = await client.get("/replay")
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    html = await response.text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'type="module"' in tag and 'src="/static/' in tag, tag
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for testid in ("recordings-list", "replay-video", "replay-overlay", "timeline", "download"):
        assert f'data-testid="{testid}"' in html
    assert 'data-testid="export-annotated"' in html


async def test_recording_dir_is_never_built_from_an_unchecked_id() -> None:
    with pytest.raises(ValueError):
        recording_dir(__import__("pathlib").Path("/data"), "../../etc")


async def test_a_mark_drawn_during_a_real_recorded_session_replays_on_the_frame_it_was_drawn_on(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """End to end: an aiortc clinic publishes the stamped pattern, the recorder records it, the
    surgeon draws over the WebSocket; the replay timeline puts the mark on the recorded frame
    whose capture time is when it was drawn."""
    from recorder.recordings import Recordings
    from tests.recorder.media import decode, publishing
    from tests.signaling.test_websocket import join, next_of

    cid = consultation.id
    recordings: Recordings = client.app[RECORDINGS]
    surgeon_token = make_token("surgeon", cid)
    surgeon, _ = await join(client, cid, surgeon_token)
    mark = {"id": "e2e", "tool": "pen", "color": "#00e676", "width": 0.02, "points": [[0.5, 0.5]]}
    async with publishing(
        str(client.make_url(f"/whip/{cid}")), make_token("clinic", cid), size=(320, 192)
    ):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        await asyncio.sleep(1.5)
        sent_add = time.time()
        await surgeon.send_json({"type": "annotation", "op": "add", "annotation": mark})
        await next_of(surgeon, "annotation")
        await asyncio.sleep(1.0)
        sent_remove = time.time()
        await surgeon.send_json({"type": "annotation", "op": "remove", "id": "e2e"})
        await next_of(surgeon, "annotation")
        await asyncio.sleep(1.0)
    assert recorder is not None
    assert await wait_until(lambda: not recorder.segment_open, timeout=10)
    await surgeon.close()
    log = consultation_dir(client.app[SETTINGS].data_dir, cid) / "annotations.jsonl"
    assert await wait_until(lambda: len(read_annotation_log(log)) == 2, timeout=5)

    response = await client.get(f"/api/recordings/{recorder.id}", headers=bearer(surgeon_token))
    detail = await response.json()
    (drawn,) = detail["timeline"]["marks"]
    assert drawn["end"] == "remove"
    decoded = decode(recorder.directory / recorder.manifest.segments[0].file)

    def stamp_at(t: float) -> float:
        nearest = min(
            range(len(decoded.video_times)), key=lambda i: abs(decoded.video_times[i] - t)
        )
        return decoded.stamps_s[nearest]

    # the recorded frame shown when the mark appears was captured when it was drawn
    print(
        f"mark at {drawn['start_t']:.3f}-{drawn['end_t']:.3f} s: frame captured"
        f" {(stamp_at(drawn['start_t']) - sent_add) * 1000:+.0f} ms /"
        f" {(stamp_at(drawn['end_t']) - sent_remove) * 1000:+.0f} ms from when it was sent"
    )
    assert abs(stamp_at(drawn["start_t"]) - sent_add) < 0.35, (drawn, sent_add)
    assert abs(stamp_at(drawn["end_t"]) - sent_remove) < 0.35
    assert detail["integrity"]["ok"] is True
