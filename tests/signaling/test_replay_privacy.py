"""Parts filmed outside the body over HTTP: the detail's timeline lists them, a viewer's request
to see one is audited, and only an admin of the consultation may export them unblurred."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from recorder.dicom_export import SIDECAR
from recorder.manifest import OutOfBodySpan, write_manifest
from signaling.cli import main
from signaling.db.patients import Patient
from signaling.keys import AUDIT, PATIENTS, SETTINGS
from tests.conftest import MakeToken, bearer
from tests.recorder.test_dicom import PATIENT

from .test_replay import World, make_world


async def _world(client: TestClient) -> World:
    world = await make_world(client)
    world.rec.manifest.out_of_body = [OutOfBodySpan(0.5, 1.5)]
    write_manifest(world.rec.directory, world.rec.manifest)
    return world


async def test_the_timeline_lists_the_spans_and_a_reveal_is_audited(
    client: TestClient, make_token: MakeToken
) -> None:
    world = await _world(client)
    surgeon = make_token("surgeon", world.a.id, name="Dr. Who")
    detail = await (await client.get(world.url(), headers=bearer(surgeon))).json()
    assert detail["timeline"]["out_of_body"] == [{"start_s": 0.5, "end_s": 1.5}]
    assert detail["manifest"]["out_of_body"] == [{"start_s": 0.5, "end_s": 1.5}]

    reveal = world.url("/out-of-body")
    response = await client.post(reveal, json={"start_s": 0.5}, headers=bearer(surgeon))
    assert response.status == 200
    assert (await response.json())["span"] == {"start_s": 0.5, "end_s": 1.5}
    trail = await client.app[AUDIT].trail(world.a.id, 0, 500)
    (entry,) = [e for e in trail if e.action == "replay" and "outside the body" in (e.detail or "")]
    assert entry.name == "Dr. Who" and entry.recording_id == world.rec.id

    for body, status in [
        ({"start_s": 0.9}, 404),
        ({"start_s": "0.5"}, 400),
        ({"start_s": True}, 400),
        ({"start": 0.5}, 400),
    ]:
        answer = await client.post(reveal, json=body, headers=bearer(surgeon))
        assert answer.status == status, (body, await answer.text())
    other = await client.post(
        world.url("/out-of-body", world.other), json={"start_s": 0.5}, headers=bearer(surgeon)
    )
    assert other.status == 403  # not this surgeon's consultation


async def test_only_an_admin_of_the_consultation_exports_the_spans_unblurred(
    client: TestClient, make_token: MakeToken
) -> None:
    world = await _world(client)
    surgeon = make_token("surgeon", world.a.id)
    admin = make_token("admin", world.a.id)
    keep = world.url("/exports?include_out_of_body=1")
    assert (await client.post(keep, headers=bearer(surgeon))).status == 403
    bad = await client.post(world.url("/exports?include_out_of_body=yes"), headers=bearer(admin))
    assert bad.status == 400
    dicom_keep = await client.post(
        world.url("/dicom?include_out_of_body=1"), json={}, headers=bearer(surgeon)
    )
    assert dicom_keep.status == 403

    response = await client.post(keep, headers=bearer(admin))
    assert response.status == 202
    job = (await response.json())["job"]
    job_id = job["id"]

    async def done() -> bool:
        status = await client.get(job["status_url"], headers=bearer(admin))
        return (await status.json())["job"]["state"] == "done"

    deadline = time.monotonic() + 30
    while not await done():
        assert time.monotonic() < deadline, "the export did not finish"
        await asyncio.sleep(0.2)
    trail = await client.app[AUDIT].trail(world.a.id, 0, 500)
    exports = [e.detail for e in trail if e.action == "export"]
    assert f"job {job_id}, out-of-body kept" in exports


async def test_the_command_line_keeps_the_spans_only_when_asked_and_audits_it(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = await _world(client)
    await client.app[PATIENTS].record(world.a.id, Patient.from_json(PATIENT), "admin-test")
    data_dir = str(client.app[SETTINGS].data_dir)
    for keep in (False, True):
        out = tmp_path / f"dicom-{keep}"
        command = ["recordings", "dicom", world.rec.id, "--out", str(out), "--data-dir", data_dir]
        code = await asyncio.to_thread(main, [*command, *(["--include-out-of-body"] * keep)])
        assert code == 0, capsys.readouterr().err
        sidecar = json.loads((out / SIDECAR).read_text())
        assert sidecar["out_of_body"] == [{"start_s": 0.5, "end_s": 1.5}]
        assert sidecar["out_of_body_blurred"] is not keep
    trail = await client.app[AUDIT].trail(world.a.id, 0, 500)
    details = [e.detail for e in trail if e.action == "dicom-export"]
    assert details == [
        f"cli {tmp_path / 'dicom-False'}",
        f"cli {tmp_path / 'dicom-True'}, out-of-body kept",
    ]
