"""Snapshot API: upload, list and download a PNG, and every way an upload or a read is refused."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from signaling.http.snapshots import MAX_SNAPSHOT_BYTES
from tests.conftest import MakeToken, bearer
from tests.signaling.test_websocket import join, next_of

PNG_BYTES = cv2.imencode(".png", np.full((8, 8, 3), (0, 255, 0), np.uint8))[1].tobytes()


def url(cid: str, suffix: str = "") -> str:
    return f"/api/consultations/{cid}/snapshots{suffix}"


async def upload(
    client: TestClient, cid: str, token: str, body: object = PNG_BYTES, **headers: str
):  # type: ignore[no-untyped-def]
    return await client.post(
        url(cid), data=body, headers={**bearer(token), "Content-Type": "image/png", **headers}
    )


async def test_an_uploaded_png_is_announced_listed_and_downloadable_by_members(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, _ = await join(client, cid, make_token("clinic", cid))
    token = make_token("surgeon", cid)
    response = await upload(client, cid, token)
    assert response.status == 201
    snapshot = await response.json()
    assert set(snapshot) == {"id", "url", "by", "created_at", "kind"}
    assert snapshot["kind"] == "snapshot"
    assert snapshot["url"] == url(cid, f"/{snapshot['id']}.png")
    assert snapshot["by"].startswith("surgeon-") and snapshot["created_at"].endswith("+00:00")
    assert (await next_of(clinic, "snapshot"))["snapshot"] == snapshot
    second = await (await upload(client, cid, make_token("clinic", cid))).json()

    observer = make_token("observer", cid)  # members may look, even without may_annotate
    listing = await client.get(url(cid), headers=bearer(observer))
    assert listing.status == 200
    assert await listing.json() == {"snapshots": [snapshot, second]}
    image = await client.get(snapshot["url"], headers=bearer(observer))
    assert image.status == 200 and image.content_type == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert await image.read() == PNG_BYTES
    await clinic.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (PNG_BYTES, "image/jpeg", 415),
        (PNG_BYTES, "application/octet-stream", 415),
        (b"GIF89a" + b"\x00" * 100, "image/png", 400),
        (PNG_BYTES[:8], "image/png", 400),
        (b"", "image/png", 400),
        (b"<svg onload=alert(1)>", "image/png", 400),
    ],
    ids=["jpeg-type", "octet-type", "gif-bytes", "signature-only", "empty", "svg"],
)
async def test_only_png_images_are_accepted(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    cid = consultation.id
    response = await upload(client, cid, make_token("surgeon", cid), body, **{
        "Content-Type": content_type
    })  # fmt: skip
    assert response.status == status
    assert (await response.json())["reason"]
    listing = await client.get(url(cid), headers=bearer(make_token("surgeon", cid)))
    assert (await listing.json())["snapshots"] == []


async def test_a_snapshot_over_8_mib_is_refused_with_or_without_a_length(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    token = make_token("surgeon", cid)
    too_big = PNG_BYTES + b"\x00" * MAX_SNAPSHOT_BYTES
    response = await upload(client, cid, token, io.BytesIO(too_big))  # a length, sent in chunks
    assert response.status == 413 and (await response.json())["error"] == "too-large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield PNG_BYTES
        for _ in range(MAX_SNAPSHOT_BYTES // 65536 + 1):
            yield b"\x00" * 65536

    response = await upload(client, cid, token, chunked())
    assert response.status == 413
    assert (await upload(client, cid, token, PNG_BYTES + b"\x00" * 1_000_000)).status == 201


@pytest.mark.parametrize(
    ("role", "consultation_of_token", "status"),
    [
        ("observer", "own", 403),
        ("surgeon", "otherConsult1", 403),
        ("admin", "*", 201),
    ],
)
async def test_only_members_with_may_annotate_may_upload(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    role: str,
    consultation_of_token: str,
    status: int,
) -> None:
    cid = consultation.id
    scope = cid if consultation_of_token == "own" else consultation_of_token
    overrides = {"may_annotate": True} if role == "admin" else {}
    response = await upload(client, cid, make_token(role, scope, **overrides))
    assert response.status == status


async def test_reads_need_membership_and_a_real_snapshot(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    snapshot = await (await upload(client, cid, make_token("surgeon", cid))).json()
    outsider = bearer(make_token("surgeon", "otherConsult1"))
    assert (await client.get(url(cid), headers=outsider)).status == 403
    assert (await client.get(snapshot["url"], headers=outsider)).status == 403
    assert (await client.get(snapshot["url"])).status == 401
    member = bearer(make_token("clinic", cid))
    assert (await client.get(url(cid, "/AAAAAAAAAAAAAAAA.png"), headers=member)).status == 404
    assert (await client.get(url(cid, "/..%2F..%2Fsecret.png"), headers=member)).status == 404
    assert (await client.get(url(cid, "/short.png"), headers=member)).status == 404
    admin = bearer(make_token("admin", "*"))
    assert (await client.get(url("missingCid1"), headers=admin)).status == 404
