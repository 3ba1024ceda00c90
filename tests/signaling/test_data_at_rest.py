"""What the server keeps on disk stays bounded: a snapshot's declared picture size is checked
before anyone decodes it, a recording keeps one export (a new one replaces the old), and new
snapshots and exports are refused with 507 below the data dir's free-space floor."""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from recorder.snapshots import MAX_SIDE
from signaling.app import create_app
from signaling.auth.grants import Grant, Role
from signaling.db.store import Consultation
from signaling.keys import RECORDINGS, SETTINGS, STORE, TOKENS
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.replay_support import Made, make_recording
from tests.signaling.test_snapshots import PNG_BYTES, upload
from tests.signaling.test_websocket import join


def png(width: int, height: int, colour: int = 2) -> bytes:
    """A real, small PNG file declaring ``width`` × ``height``: one row of compressed zeros (a
    decoder would expand it to the declared size)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ((60000, 60000), "60000 × 60000 pixels"),
        ((MAX_SIDE + 1, 16), f"{MAX_SIDE + 1} × 16 pixels"),
        ((8000, 8000), "64 MiB once decoded"),  # each side allowed, 256 MB of pixels
    ],
)
async def test_a_png_declaring_a_huge_picture_is_refused_unannounced(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    size: tuple[int, int],
    why: str,
) -> None:
    cid = consultation.id
    token = make_token("surgeon", cid)
    ws, _ = await join(client, cid, token)
    bomb = png(*size)
    assert len(bomb) < 200
    response = await upload(client, cid, token, bomb)
    assert response.status == 413
    body = await response.json()
    assert body["error"] == "image-too-large" and why in body["reason"]
    listing = await client.get(f"/api/consultations/{cid}/snapshots", headers=bearer(token))
    assert (await listing.json())["snapshots"] == []
    assert (await upload(client, cid, token, png(4096, 4096, colour=6))).status == 201  # 64 MiB
    announced = await ws.receive_json(timeout=3)
    while announced["type"] != "snapshot":
        announced = await ws.receive_json(timeout=3)
    listing = await client.get(f"/api/consultations/{cid}/snapshots", headers=bearer(token))
    assert announced["snapshot"]["id"] == (await listing.json())["snapshots"][0]["id"]


async def test_a_png_with_a_broken_header_is_a_bad_image(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    token = make_token("surgeon", consultation.id)
    for body in (png(0, 10), png(10, 10, colour=5), PNG_BYTES[:20]):
        response = await upload(client, consultation.id, token, body)
        assert response.status == 400 and (await response.json())["error"] == "bad-image"


async def recorded(client: TestClient) -> tuple[str, str, Made]:
    """A consultation with a 1 s recording: its id, a surgeon's token, the recording."""
    store = client.app[STORE]
    consultation = await store.create("Exports", "VP8", consent_by="Dr. A", recorded_by="t")
    cid = consultation.id
    data = client.app[SETTINGS].data_dir
    rec = await make_recording(data, client.app[RECORDINGS].index, cid, segments=(1.0,))
    token = client.app[TOKENS].issue(Grant.for_role(Role.SURGEON, cid, "surgeon-1", 600))
    return cid, token, rec


async def export(client: TestClient, rec: Made, token: str) -> dict[str, Any]:
    """Start an export and wait (bounded) until it is done."""
    response = await client.post(f"/api/recordings/{rec.id}/exports", headers=bearer(token))
    assert response.status == 202
    job: dict[str, Any] = (await response.json())["job"]
    deadline = time.monotonic() + 30
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        job = (await (await client.get(job["status_url"], headers=bearer(token))).json())["job"]
    assert job["state"] == "done", job
    return job


async def test_a_new_export_replaces_the_recordings_previous_one(client: TestClient) -> None:
    _, token, rec = await recorded(client)
    exports = rec.directory / "exports"
    first = await export(client, rec, token)
    files = sorted(p.name for p in exports.iterdir())
    assert files == [f"{first['id']}.json", f"{first['id']}.mp4"]
    second = await export(client, rec, token)
    files = sorted(p.name for p in exports.iterdir())
    assert files == [f"{second['id']}.json", f"{second['id']}.mp4"]
    assert (await client.get(first["status_url"], headers=bearer(token))).status == 404
    file = await client.get(f"{second['status_url']}/file", headers=bearer(token))
    assert file.status == 200


@pytest.fixture
async def full_disk(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    """A server whose free-space floor is above what this disk has free."""
    return await aiohttp_client(create_app(replace(settings, recording_min_free_mb=1 << 40)))


async def test_below_the_disk_floor_snapshots_and_exports_are_refused_with_507(
    full_disk: TestClient,
) -> None:
    cid, token, rec = await recorded(full_disk)
    response = await upload(full_disk, cid, token, PNG_BYTES)
    assert response.status == 507
    body = await response.json()
    assert body["error"] == "disk-full" and "nearly full" in body["reason"]
    snapshots = full_disk.app[SETTINGS].data_dir / "consultations" / cid / "snapshots"
    assert not list(snapshots.glob("*.png"))
    response = await full_disk.post(f"/api/recordings/{rec.id}/exports", headers=bearer(token))
    assert response.status == 507 and (await response.json())["error"] == "disk-full"
    assert not (rec.directory / "exports").exists()
