"""Stills mode on the server: ``stills-request`` (who may, bad input), the ``stills`` state, the
JPEG upload (clinic only, only in stills mode, the JPEG's own header checked, size limits) and
the still shown through the freeze; the JPEG header check itself."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from recorder.dicom_stills import still_instance
from recorder.dicom_study import Series, Study
from recorder.snapshots import BadImage, ImageTooLarge, UnsupportedImage, check_jpeg
from signaling.db.store import Consultation
from signaling.http.snapshots import MAX_SNAPSHOT_BYTES
from signaling.keys import RELAY
from tests.conftest import MakeToken, bearer
from tests.signaling.test_websocket import join, next_of
from tests.signaling.test_websocket_annotations import add

JPEG = cv2.imencode(".jpg", np.full((720, 1280, 3), (40, 60, 160), np.uint8))[1].tobytes()
PNG = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def declaring(width: int, height: int) -> bytes:
    """JPEG with its start-of-frame patched to declare another size."""
    at = JPEG.index(b"\xff\xc0")
    return JPEG[: at + 5] + struct.pack(">HH", height, width) + JPEG[at + 9 :]


def framed(marker: int, depth: int = 8, channels: int = 3) -> bytes:
    """JPEG with its start-of-frame patched to another kind (lossless, arithmetic, 12-bit…)."""
    at = JPEG.index(b"\xff\xc0")
    sof = bytes([0xFF, marker]) + JPEG[at + 2 : at + 4] + bytes([depth]) + JPEG[at + 5 : at + 9]
    return JPEG[:at] + sof + bytes([channels]) + JPEG[at + 10 :]


async def upload(client: TestClient, cid: str, token: str, body: object = JPEG, **headers: str):  # type: ignore[no-untyped-def]
    headers = {**bearer(token), "Content-Type": "image/jpeg", **headers}
    return await client.post(f"/api/consultations/{cid}/stills", data=body, headers=headers)


async def stills_on(ws: ClientWebSocketResponse, **extra: bool) -> dict:
    await ws.send_json({"type": "stills-request", "on": True, **extra})
    return await stills_state(ws, True)


async def stills_state(ws: ClientWebSocketResponse, active: bool) -> dict:
    """The next ``stills`` message saying ``active`` (earlier states are skipped)."""
    while (state := await next_of(ws, "stills"))["active"] is not active:
        pass
    return state


async def clinic_and_surgeon(
    client: TestClient, make_token: MakeToken, cid: str
) -> tuple[ClientWebSocketResponse, ClientWebSocketResponse]:
    clinic, _ = await join(client, cid, make_token("clinic", cid))
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    return clinic, surgeon


async def newest(ws: ClientWebSocketResponse, still_id: str) -> None:
    """Waits for the ``stills`` state naming ``still_id`` the mode's newest still."""
    while ((await next_of(ws, "stills"))["still"] or {}).get("id") != still_id:
        pass


def test_the_jpeg_check_reads_the_real_header() -> None:
    assert check_jpeg(JPEG) == (1280, 720)
    for bad in (PNG, JPEG[:-2], JPEG[:200], b"\xff\xd8\xff\xd9", b""):
        with pytest.raises(BadImage):
            check_jpeg(bad)
    with pytest.raises(ImageTooLarge, match="9000 × 720"):
        check_jpeg(declaring(9000, 720))
    assert check_jpeg(framed(0xC2)) == (1280, 720)  # progressive
    for odd in (framed(0xC3), framed(0xC9), framed(0xC0, depth=12), framed(0xC0, channels=4)):
        with pytest.raises(UnsupportedImage):  # lossless, arithmetic, 12-bit, CMYK
            check_jpeg(odd)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xd8" + b"\xff" * (MAX_SNAPSHOT_BYTES - 4) + b"\xff\xd9",
        b"\xff\xd8" + b"\xff\xfe\x00\x02" * (MAX_SNAPSHOT_BYTES // 4 - 1) + b"\xff\xd9",
    ],
    ids=["fill-bytes", "empty-comments"],
)
def test_the_jpeg_header_walk_is_bounded(body: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(BadImage):
        check_jpeg(body)
    assert time.perf_counter() - started < 0.1  # was 3.5 s for the fill bytes


async def test_the_surgeon_asks_the_clinic_sends_and_everyone_sees_the_still(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic_token = make_token("clinic", cid)
    clinic, welcome = await join(client, cid, clinic_token)
    assert welcome["stills"] == {
        "type": "stills", "active": False, "reason": None, "by": None, "still": None, "asked": 0
    }  # fmt: skip
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    await surgeon.send_json({"type": "freeze", "frozen": False})  # the board exists (media would)
    await next_of(clinic, "freeze")

    refused = await upload(client, cid, clinic_token)
    assert refused.status == 409 and (await refused.json())["error"] == "stills-off"

    state = await stills_on(surgeon)
    assert state["active"] and state["reason"] == "requested" and state["by"].startswith("surgeon")
    assert (await next_of(clinic, "stills"))["active"]

    response = await upload(client, cid, clinic_token)
    assert response.status == 201
    still = await response.json()
    assert still["kind"] == "still" and still["url"].endswith(f"/snapshots/{still['id']}.jpg")
    assert (await next_of(surgeon, "snapshot"))["snapshot"] == still
    freeze = await next_of(surgeon, "freeze")
    assert freeze["frozen"] and freeze["snapshot"] == {"id": still["id"], "url": still["url"]}
    assert (await next_of(surgeon, "stills"))["still"] == {"id": still["id"], "url": still["url"]}
    image = await client.get(still["url"], headers=bearer(make_token("observer", cid)))
    assert image.status == 200 and image.content_type == "image/jpeg"
    assert await image.read() == JPEG
    png_url = still["url"].removesuffix(".jpg") + ".png"
    assert (await client.get(png_url, headers=bearer(clinic_token))).status == 404

    # A second still, no marks on the first: it takes its place (under marks it would not).
    second = await (await upload(client, cid, clinic_token)).json()
    assert (await next_of(surgeon, "snapshot"))["snapshot"]["id"] == second["id"]
    assert (await next_of(clinic, "freeze"))["snapshot"]["id"] == still["id"]  # the first
    assert (await next_of(clinic, "freeze"))["snapshot"]["url"] == second["url"]
    await newest(surgeon, second["id"])
    await newest(clinic, second["id"])

    # The surgeon asks for the next one; the clinic's link recovering does not end the mode.
    assert (await stills_on(surgeon, next=True))["asked"] == 1
    await clinic.send_json({"type": "stills-request", "on": False})
    await surgeon.send_json({"type": "ping"})
    assert (await next_of(surgeon, "pong")) and (await next_of(clinic, "stills"))["asked"] == 1

    # Back to video: the still is released for everyone.
    await surgeon.send_json({"type": "stills-request", "on": False})
    released = await next_of(clinic, "freeze")
    assert not released["frozen"] and released["reason"] == "video"
    assert not (await next_of(clinic, "stills"))["active"]
    listing = await client.get(f"/api/consultations/{cid}/snapshots", headers=bearer(clinic_token))
    assert [s["kind"] for s in (await listing.json())["snapshots"]] == ["still", "still"]
    await clinic.close()
    await surgeon.close()


async def test_the_clinic_link_begins_and_ends_stills_mode_the_surgeon_ends_it_too(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, surgeon = await clinic_and_surgeon(client, make_token, cid)
    state = await stills_on(clinic)
    assert state["reason"] == "link" and state["by"].startswith("clinic")
    await clinic.send_json({"type": "stills-request", "on": False})
    assert (await stills_state(surgeon, False))["by"] == state["by"]
    await stills_on(clinic)
    await surgeon.send_json({"type": "stills-request", "on": False})
    assert (await stills_state(clinic, False))["by"].startswith("surgeon")
    await clinic.close()
    await surgeon.close()


async def test_a_new_still_never_replaces_a_freeze_that_has_marks_on_it(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, surgeon = await clinic_and_surgeon(client, make_token, cid)
    await surgeon.send_json({"type": "freeze", "frozen": True})  # the surgeon's own freeze
    mine = await next_of(clinic, "freeze")
    clinic_token = make_token("clinic", cid)
    await surgeon.send_json(add())
    await next_of(clinic, "annotation")
    await stills_on(clinic)  # the clinic's link is slow
    still = await (await upload(client, cid, clinic_token)).json()
    await newest(surgeon, still["id"])  # offered, not shown
    freeze = client.app[RELAY].find(cid).board.freeze
    assert freeze is not None and not freeze.still and freeze.by == mine["by"]

    # A still frozen with no marks on it gives way to the next still; with marks it stays.
    await surgeon.send_json({"type": "annotation", "op": "clear"})
    await surgeon.send_json({"type": "freeze", "frozen": True, "snapshot_id": still["id"]})
    await next_of(clinic, "freeze")
    second = await (await upload(client, cid, clinic_token)).json()
    assert (await next_of(clinic, "freeze"))["snapshot"]["id"] == second["id"]
    await surgeon.send_json(add(id="on-the-second"))
    await next_of(clinic, "annotation")
    third = await (await upload(client, cid, clinic_token)).json()
    await newest(clinic, third["id"])
    assert client.app[RELAY].find(cid).board.freeze.snapshot_id == second["id"]
    await clinic.close()
    await surgeon.close()


async def test_a_requested_mode_ends_with_its_surgeon_or_goes_back_to_the_slow_link(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    clinic, surgeon = await clinic_and_surgeon(client, make_token, consultation.id)
    await stills_on(surgeon)
    await surgeon.close()  # the only surgeon leaves: back to video
    assert not (await stills_state(clinic, False))["active"]

    surgeon, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    await stills_on(clinic)  # the link is slow; the surgeon then takes the mode over
    await stills_on(surgeon, next=True)
    while (await next_of(clinic, "stills"))["reason"] != "requested":
        pass
    await surgeon.close()  # the link is still slow: the mode is the link's again
    while (state := await next_of(clinic, "stills"))["reason"] != "link":
        pass
    assert state["active"] and state["by"].startswith("clinic")
    await clinic.close()


@pytest.mark.parametrize(
    ("role", "message", "code"),
    [
        ("observer", {"on": True}, "forbidden"),
        ("clinic", {"on": True, "next": True}, "forbidden"),
        ("surgeon", {"on": "yes"}, "invalid-message"),
        ("surgeon", {}, "invalid-message"),
        ("surgeon", {"on": False, "next": True}, "invalid-message"),
        ("surgeon", {"on": True, "next": 1}, "invalid-message"),
    ],
    ids=["observer", "clinic-next", "on-string", "on-missing", "next-without-on", "next-number"],
)
async def test_a_stills_request_from_the_wrong_person_or_malformed_is_an_error(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    role: str,
    message: dict,
    code: str,
) -> None:
    cid = consultation.id
    ws, _ = await join(client, cid, make_token(role, cid))
    await ws.send_json({"type": "stills-request", **message})
    error = await next_of(ws, "error")
    assert error["code"] == code and error["reason"]
    await ws.send_json({"type": "ping"})
    assert await next_of(ws, "pong") == {"type": "pong", "v": 1}  # the socket stays open
    await ws.close()


@pytest.mark.parametrize(("role", "status"), [("surgeon", 403), ("observer", 403), ("admin", 403)])
async def test_only_the_clinic_uploads_stills(
    client: TestClient, make_token: MakeToken, consultation: Consultation, role: str, status: int
) -> None:
    cid = consultation.id
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    await stills_on(surgeon)
    response = await upload(client, cid, make_token(role, cid))
    assert response.status == status and (await response.json())["reason"]
    await surgeon.close()


@pytest.mark.parametrize(
    ("body", "content_type", "refusal"),
    [
        (PNG, "image/jpeg", (400, "bad-image")),
        (JPEG[:-2], "image/jpeg", (400, "bad-image")),
        (JPEG, "image/png", (415, "unsupported-media-type")),
        (framed(0xC3), "image/jpeg", (415, "unsupported-image")),
        (declaring(8193, 720), "image/jpeg", (413, "image-too-large")),
        (JPEG[:-2] + b"\x00" * MAX_SNAPSHOT_BYTES + b"\xff\xd9", "image/jpeg", (413, "too-large")),
    ],
    ids=["png-bytes", "cut", "png-type", "lossless", "too-wide", "over-8-mib"],
)
async def test_a_bad_or_too_large_still_is_refused_with_the_reason(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    body: bytes,
    content_type: str,
    refusal: tuple[int, str],
) -> None:
    cid = consultation.id
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    await stills_on(surgeon)
    clinic = make_token("clinic", cid)
    response = await upload(client, cid, clinic, io.BytesIO(body), **{"Content-Type": content_type})
    answer = await response.json()
    assert (response.status, answer["error"]) == refusal and answer["reason"]
    await surgeon.close()


def test_a_still_in_the_dicom_export_says_it_is_lossy_and_has_no_marks(tmp_path: Path) -> None:
    path = tmp_path / "still.jpg"
    path.write_bytes(JPEG)
    study = Study(
        "20250101T000000Z-AAAAAAAA", "Gastro", "2025-01-01T00:00:00Z", {"patient_id": "P1"}
    )
    ds = still_instance(Series(study, 2, "stills", "Snapshots"), path, 1, study.started_at)
    assert (ds.Columns, ds.Rows) == (1280, 720)
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert ds.BurnedInAnnotation == "NO"
