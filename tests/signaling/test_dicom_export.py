"""DICOM export over HTTP and from the command line, into a real Orthanc: STOW-RS and C-STORE, the
study read back by QIDO-RS / WADO-RS metadata (modality ES, the SOP classes, the frame count and
the duration of the recording), the audit entry, and every refusal (404, 403, 422, an archive
that cannot be reached)."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from pydicom.uid import VideoEndoscopicImageStorage, VLEndoscopicImageStorage

from recorder.dicom_uids import study_instance_uid
from recorder.index import RecordingIndex
from recorder.snapshots import SnapshotStore
from signaling.cli import main
from signaling.db.patients import Patient
from signaling.keys import AUDIT, PATIENTS, RECORDINGS, SETTINGS, STORE
from signaling.settings import Settings
from tests.conftest import TEST_SECRET, MakeToken, bearer
from tests.orthanc import OUR_AE_TITLE, Orthanc, running_orthanc
from tests.replay_support import FPS, Made, make_recording

PATIENT = {"patient_id": "KR-7781", "family_name": "김", "given_names": "민준", "sex": "male"}
PNG_SIZE = (64, 48)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, orthanc: Orthanc) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        secret=TEST_SECRET,
        ice_host_addresses=("127.0.0.1",),
        pacs_stow_url=orthanc.dicomweb,
        pacs_dicom=orthanc.dicom_address,
        dicom_ae_title=OUR_AE_TITLE,
    )


async def recording(client: TestClient, snapshot: bool = True) -> tuple[str, Made]:
    store = client.app[STORE]
    consultation = await store.create("Gastroscopy", "VP8", consent_by="Dr. A", recorded_by="t")
    data = client.app[SETTINGS].data_dir
    index: RecordingIndex = client.app[RECORDINGS].index
    made = await make_recording(data, index, consultation.id, title="Gastroscopy", segments=(2.0,))
    if snapshot:
        png = cv2.imencode(".png", np.full((*PNG_SIZE[::-1], 3), 90, np.uint8))[1].tobytes()
        await SnapshotStore(data).add(consultation.id, "surgeon-test", png, at=made.started + 1)
    return consultation.id, made


async def finished_job(client: TestClient, token: str, response: Any) -> dict[str, Any]:
    assert response.status == 202, await response.text()
    url = response.headers["Location"]
    job: dict[str, Any] = {}

    async def over() -> bool:
        nonlocal job
        job = (await (await client.get(url, headers=bearer(token))).json())["job"]
        return job["state"] not in ("queued", "running")

    for _ in range(300):  # 60 s at most
        if await over():
            break
        await asyncio.sleep(0.2)
    return job


def read_back(orthanc: Orthanc, made: Made) -> dict[str, Any]:
    """The study as the archive serves it: QIDO-RS for the study, WADO-RS metadata per instance."""
    uid = study_instance_uid(made.id, "", PATIENT["patient_id"])
    (study,) = orthanc.get(f"/dicom-web/studies?StudyInstanceUID={uid}&includefield=00080061")
    metadata = orthanc.get(f"/dicom-web/studies/{uid}/metadata")
    classes = {m["00080016"]["Value"][0] for m in metadata}
    (video,) = [m for m in metadata if m["00080016"]["Value"][0] == VideoEndoscopicImageStorage]
    frames = int(video["00280008"]["Value"][0])
    frame_ms = float(video["00181063"]["Value"][0])
    return {
        "modalities": study["00080061"]["Value"],
        "classes": classes,
        "frames": frames,
        "duration_s": frames * frame_ms / 1000,
        "patient_id": video["00100020"]["Value"][0],
        "uid": uid,
    }


async def test_stow_rs_puts_the_recording_into_the_archive_as_an_es_study(
    client: TestClient, orthanc: Orthanc, make_token: MakeToken
) -> None:
    cid, made = await recording(client)
    token = make_token("admin", cid)
    response = await client.post(
        f"/api/recordings/{made.id}/dicom",
        json={"send": "stow", "patient": PATIENT, "burned_in": False},
        headers=bearer(token),
    )
    job = await finished_job(client, token, response)
    assert job["state"] == "done", job
    assert job["kind"] == "dicom" and job["result"]["sent"] == "stow"
    assert job["result"]["stored"] == 2
    study = read_back(orthanc, made)
    assert study["modalities"] == ["ES"]
    assert study["classes"] == {VideoEndoscopicImageStorage, VLEndoscopicImageStorage}
    segment = made.manifest.segments[0]
    assert abs(study["frames"] - segment.frames) <= 1
    assert study["duration_s"] == pytest.approx(segment.frames / FPS, abs=1 / FPS)
    assert study["patient_id"] == "KR-7781"

    zipped = await client.get(f"{response.headers['Location']}/file", headers=bearer(token))
    assert zipped.status == 200 and zipped.content_type == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(await zipped.read())).namelist()
    assert sorted(names) == ["annotations.json", "stills/001.dcm", "video/001.dcm"]
    trail = await client.app[AUDIT].trail(cid)
    started, stored = [e for e in trail if e.action == "dicom-export"]
    assert started.recording_id == made.id and (started.detail or "").endswith("stow")
    assert stored.recording_id == made.id and stored.detail == "stored in the archive (stow)"
    (recorded,) = [e for e in trail if e.action == "patient"]  # the override is in the register
    assert recorded.detail == "recorded" and recorded.seq < started.seq
    assert all("KR-7781" not in (e.detail or "") for e in trail)
    latest = await client.app[PATIENTS].latest(cid)
    assert latest is not None and latest.patient == Patient.from_json(PATIENT)

    again = await client.post(  # the same export: the archive keeps one copy of each object
        f"/api/recordings/{made.id}/dicom", json={"send": "stow"}, headers=bearer(token)
    )
    assert (await finished_job(client, token, again))["state"] == "done"
    assert len(orthanc.get(f"/dicom-web/studies/{read_back(orthanc, made)['uid']}/instances")) == 2


async def test_only_the_coordinator_exports_and_reads_a_dicom_job(
    client: TestClient, make_token: MakeToken
) -> None:
    cid, made = await recording(client, snapshot=False)
    url = f"/api/recordings/{made.id}/dicom"
    for role in ("surgeon", "observer", "clinic"):
        refused = await client.post(
            url, json={"patient": PATIENT}, headers=bearer(make_token(role, cid))
        )
        assert refused.status == 403, role
    admin = make_token("admin", cid)
    response = await client.post(url, json={"patient": PATIENT}, headers=bearer(admin))
    assert response.status == 202
    status_url = response.headers["Location"]
    busy = await client.post(
        url, json={"patient": PATIENT, "burned_in": True}, headers=bearer(admin)
    )
    assert (
        busy.status == 409
        and (await busy.json())["reason"] == "an export of this recording is running"
    )
    same = await client.post(url, json={"patient": PATIENT}, headers=bearer(admin))
    assert same.status == 202 and same.headers["Location"] == status_url
    surgeon = bearer(make_token("surgeon", cid))  # holds the replay right: not enough
    assert (await client.get(status_url, headers=surgeon)).status == 403
    assert (await client.get(f"{status_url}/file", headers=surgeon)).status == 403
    assert (await client.delete(status_url, headers=surgeon)).status == 403
    assert (await finished_job(client, admin, response))["state"] == "done"


async def test_c_store_from_the_command_line_with_the_registered_patient(
    client: TestClient,
    orthanc: Orthanc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cid, made = await recording(client, snapshot=False)
    await client.app[PATIENTS].record(cid, Patient.from_json(PATIENT), "admin-test")
    settings = client.app[SETTINGS]
    name, host, port = orthanc.dicom_address
    monkeypatch.setenv("ENDOLINK_PACS_DICOM", f"{name}@{host}:{port}")
    monkeypatch.setenv("ENDOLINK_DICOM_AE_TITLE", OUR_AE_TITLE)
    out = tmp_path / "dicom"
    command = ["recordings", "dicom", made.id, "--out", str(out), "--send", "c-store"]
    code = await _in_thread(main, [*command, "--data-dir", str(settings.data_dir)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "1 stored by the archive (c-store)" in printed.out and "KR-7781" not in printed.out
    assert (out / "video" / "001.dcm").is_file() and (out / "annotations.json").is_file()
    study = read_back(orthanc, made)
    assert study["modalities"] == ["ES"] and study["classes"] == {VideoEndoscopicImageStorage}
    assert abs(study["frames"] - made.manifest.segments[0].frames) <= 1
    details = [e.detail for e in await client.app[AUDIT].trail(cid) if e.action == "dicom-export"]
    assert details == [f"cli {out} + c-store", "stored in the archive (c-store)"]


async def test_refusals_unknown_recording_no_patient_bad_send(
    client: TestClient, make_token: MakeToken, tmp_path: Path
) -> None:
    cid, made = await recording(client, snapshot=False)
    url = f"/api/recordings/{made.id}/dicom"
    admin = make_token("admin", "*")
    unknown = await client.post(
        "/api/recordings/20250101T000000Z-AAAAAAAA/dicom", json={}, headers=bearer(admin)
    )
    assert unknown.status == 404
    needed = await client.post(url, json={}, headers=bearer(admin))
    assert needed.status == 422
    assert (await needed.json())["error"] == "patient-details-needed"
    assert "patient_id" in (await needed.json())["reason"]
    wrong = await client.post(
        url, json={"patient": {"patient_id": "a^b\\c"}}, headers=bearer(admin)
    )
    assert wrong.status == 422
    bad = await client.post(url, json={"send": "ftp", "patient": PATIENT}, headers=bearer(admin))
    assert bad.status == 400
    code = await _in_thread(
        main,
        [
            "recordings",
            "dicom",
            made.id,
            "--out",
            str(tmp_path / "x"),
            "--data-dir",
            str(client.app[SETTINGS].data_dir),
        ],
    )
    assert code == 2  # no patient details: a usage error, nothing written
    assert not (tmp_path / "x").exists()


async def test_an_archive_that_cannot_be_reached_fails_the_job_readably(
    client: TestClient, orthanc: Orthanc, make_token: MakeToken, caplog: pytest.LogCaptureFixture
) -> None:
    cid, made = await recording(client, snapshot=False)
    orthanc.process.terminate()
    orthanc.process.wait(10)
    token = make_token("admin", cid)
    with caplog.at_level(logging.INFO):
        response = await client.post(
            f"/api/recordings/{made.id}/dicom",
            json={"send": "c-store", "patient": PATIENT},
            headers=bearer(token),
        )
        job = await finished_job(client, token, response)
    assert job["state"] == "failed"
    assert "could not be reached" in job["error"] and "ORTHANCTEST" in job["error"]
    assert not any(r.exc_info for r in caplog.records)
    assert "KR-7781" not in caplog.text and "김" not in caplog.text


async def _in_thread(function: Any, *args: Any) -> Any:
    """The CLI runs its own event loop: off this one."""
    return await asyncio.to_thread(function, *args)


def test_archive_and_time_zone_settings_are_checked_at_start() -> None:
    env = {
        "ENDOLINK_PACS_STOW_URL": "https://user:pw@pacs.example.org/dicom-web",
        "ENDOLINK_PACS_DICOM": "PACS@10.0.0.5:104",
        "ENDOLINK_TIMEZONE": "Asia/Ulaanbaatar",
    }
    settings = Settings.from_env(env)
    assert settings.pacs_dicom == ("PACS", "10.0.0.5", 104)
    assert settings.timezone == "Asia/Ulaanbaatar" and Settings.from_env({}).timezone
    for name, wrong, said in (
        ("ENDOLINK_PACS_STOW_URL", "ftp://user:pw@pacs/dicom-web", "http or https URL"),
        ("ENDOLINK_PACS_STOW_URL", "https:///dicom-web", "with a host"),
        ("ENDOLINK_PACS_DICOM", "PACS@pacs.example.org", "AET@host:port"),
        ("ENDOLINK_TIMEZONE", "Asia/Atlantis", "IANA time zone"),
    ):
        with pytest.raises(ValueError, match=said) as refused:
            Settings.from_env({name: wrong})
        assert "pw" not in str(refused.value)  # a STOW URL's password is never repeated
