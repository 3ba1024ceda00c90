"""Into the hospital record: the patient's details (API), and a recording as a FHIR R4 Bundle
that the R4B models of ``fhir.resources`` accept — validation is the test — with its content
checked against the recording, the consent records and the audit trail."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp.test_utils import TestClient
from fhir.resources.R4B.bundle import Bundle

from persistence.times import utc_iso
from recorder.dicom_uids import study_instance_uid
from signaling.db.audit import AuditAction, AuditRecord
from signaling.keys import AUDIT, STORE
from signaling.records.routes import DigestCache
from signaling.replay.download import Download
from tests.conftest import MakeToken, bearer
from tests.replay_support import Made
from tests.signaling.test_dicom_export import finished_job
from tests.signaling.test_replay import World, make_world

PATIENT = {
    "patient_id": "MRN-0042817",
    "issuer": "1.2.410.200001.7",
    "family_name": "Batbayar",
    "given_names": "Oyun Erdene",
    "birth_date": "1958-09-30",
    "sex": "female",
}
SECRETS = ("MRN-0042817", "Batbayar", "Oyun Erdene", "1958-09-30")


@pytest.fixture
async def world(client: TestClient) -> World:
    return await make_world(client)


async def put_patient(world: World, cid: str, token: str, body: Any) -> Any:
    path = f"/api/consultations/{cid}/patient"
    return await world.client.put(path, json=body, headers=bearer(token))


async def fhir(world: World, token: str | None, rec: Made | None = None) -> Any:
    headers = bearer(token) if token else {}
    return await world.client.get(f"/api/recordings/{(rec or world.rec).id}/fhir", headers=headers)


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


async def test_the_bundle_validates_and_describes_the_recording_its_patient_and_consent(
    world: World, make_token: MakeToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = make_token("admin", "*")
    await world.client.app[STORE].record_consent(world.a.id, "Dr. Bold", "page", "clinic-x")
    assert (await put_patient(world, world.a.id, admin, PATIENT)).status == 200
    download = await world.client.get(
        f"/api/recordings/{world.rec.id}/download",
        headers=bearer(make_token("surgeon", world.a.id)),
    )
    sent = await download.read()

    response = await fhir(world, admin)
    assert response.status == 200 and response.content_type == "application/fhir+json"
    data = await response.json()
    Bundle.model_validate(data)  # R4B's models: the same Patient, DocumentReference, Consent...
    assert data["type"] == "collection"

    (patient,) = resources(data, "Patient")
    assert patient["identifier"] == [
        {
            "use": "usual",
            "value": "MRN-0042817",
            "system": "urn:oid:1.2.410.200001.7",
            "assigner": {"display": "1.2.410.200001.7"},
        }
    ]
    assert patient["name"] == [
        {"use": "official", "family": "Batbayar", "given": ["Oyun", "Erdene"]}
    ]
    assert (patient["birthDate"], patient["gender"]) == ("1958-09-30", "female")

    (video,) = resources(data, "DocumentReference")  # no DICOM export yet: no study reference
    attachment = video["content"][0]["attachment"]
    assert attachment["url"].endswith(f"/api/recordings/{world.rec.id}/download")
    assert attachment["contentType"] == "video/webm" and attachment["size"] == len(sent)
    assert base64.b64decode(attachment["hash"]) == hashlib.sha1(sent).digest()
    manifest = world.rec.manifest
    assert video["context"]["period"] == {"start": manifest.started_at, "end": manifest.ended_at}
    assert video["type"]["coding"][0]["code"] == "18751-8"
    patient_url = next(
        e["fullUrl"]
        for e in data["entry"]
        if e["resource"] is not None and e["resource"]["resourceType"] == "Patient"
    )
    assert video["subject"] == {"reference": patient_url}

    paper, page = resources(data, "Consent")
    assert (paper["status"], paper["sourceAttachment"]["title"].split()[2]) == ("inactive", "paper")
    assert paper["verification"][0]["verifiedWith"] == {"display": "Dr. A"}
    assert page["status"] == "active"
    assert page["performer"] == [{"reference": patient_url}]  # the patient grants it
    (check,) = page["verification"]  # who confirmed it, and when
    assert check == {
        "verified": True,
        "verifiedWith": {"display": "Dr. Bold"},
        "verificationDate": check["verificationDate"],
    }
    assert page["scope"]["coding"][0]["code"] == "patient-privacy"
    assert page["patient"] == {"reference": patient_url}

    events = resources(data, "AuditEvent")
    kinds = [e["entity"][0]["detail"][0]["valueString"] for e in events]
    assert kinds == ["download", "fhir"]  # this read is in its own Bundle
    download_event = events[0]
    assert download_event["subtype"][0]["code"] == "read" and download_event["outcome"] == "0"
    user = download_event["agent"][0]
    assert user["who"]["identifier"]["value"].startswith("surgeon-") and user["requestor"]
    assert "display" not in user["who"]  # identities, never names
    assert not [s for s in SECRETS if s in caplog.text]


async def test_a_multi_segment_recording_is_hashed_as_the_zip_its_download_sends(
    world: World, make_token: MakeToken
) -> None:
    admin = make_token("admin", "*")
    assert (await put_patient(world, world.b.id, admin, {"patient_id": "X1"})).status == 200
    data = await (await fhir(world, admin, world.other)).json()
    Bundle.model_validate(data)
    attachment = resources(data, "DocumentReference")[0]["content"][0]["attachment"]
    sent = await (
        await world.client.get(f"/api/recordings/{world.other.id}/download", headers=bearer(admin))
    ).read()
    assert attachment["contentType"] == "application/zip" and attachment["size"] == len(sent)
    assert base64.b64decode(attachment["hash"]) == hashlib.sha1(sent).digest()
    (patient,) = resources(data, "Patient")
    assert patient == {
        "resourceType": "Patient",
        "identifier": [{"use": "usual", "value": "X1"}],
        "gender": "unknown",
    }
    assert [c["verification"][0]["verifiedWith"] for c in resources(data, "Consent")] == [
        {"display": "Dr. B"}
    ]


def export_entry(world: World, detail: str) -> AuditRecord:
    return AuditRecord(
        world.a.id, "admin-x", "", "admin", AuditAction.DICOM_EXPORT, world.rec.id, detail
    )


async def test_only_an_archived_dicom_study_gets_a_reference_and_live_views_are_no_reads(
    world: World, make_token: MakeToken
) -> None:
    admin = make_token("admin", world.a.id)
    assert (await put_patient(world, world.a.id, admin, PATIENT)).status == 200
    trail = world.client.app[AUDIT]
    for at in (world.rec.started - 60, world.rec.started + 0.5):  # before and while recording
        view = AuditRecord(
            world.a.id, "observer-x", "Obs", "observer", AuditAction.VIEW, at=utc_iso(at)
        )
        await trail.record(view)
    await trail.record(export_entry(world, "job 1 stow"))  # started: nothing archived yet
    first = await (await fhir(world, admin)).json()
    Bundle.model_validate(first)
    assert len(resources(first, "DocumentReference")) == 1  # no study the archive holds
    kinds = [e["entity"][0]["detail"][0]["valueString"] for e in resources(first, "AuditEvent")]
    assert kinds == ["dicom-export", "fhir"]  # watching the live feed read no document

    await trail.record(export_entry(world, "stored in the archive (stow)"))
    data = await (await fhir(world, admin)).json()
    Bundle.model_validate(data)
    assert data["identifier"] == first["identifier"]  # the same Bundle, newer content
    assert data["meta"]["lastUpdated"] == data["timestamp"] > first["meta"]["lastUpdated"]
    video, study = resources(data, "DocumentReference")
    uid = study_instance_uid(world.rec.id, PATIENT["issuer"], PATIENT["patient_id"])
    assert study["masterIdentifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
    assert study["content"][0]["format"]["code"] == "1.2.840.10008.5.1.4.1.1.77.1.1.1"
    assert study["description"].endswith("stored in the archive (stow)")
    stored = (await trail.trail(world.a.id))[-2]  # before this Bundle's own read
    assert study["date"] == stored.at and stored.detail == "stored in the archive (stow)"
    video_url = next(e["fullUrl"] for e in data["entry"] if e["resource"] == video)
    assert study["relatesTo"] == [{"code": "transforms", "target": {"reference": video_url}}]
    started, read, archived, again = resources(data, "AuditEvent")  # in the trail's order
    assert started["type"]["code"] == archived["type"]["code"] == "110106"
    assert len(archived["entity"]) == 3  # video, study, patient
    assert read["subtype"][0]["code"] == again["subtype"][0]["code"] == "read"


async def test_the_study_reference_names_the_study_the_dicom_export_wrote(
    world: World, make_token: MakeToken
) -> None:
    admin = make_token("admin", world.a.id)
    assert (await put_patient(world, world.a.id, admin, PATIENT)).status == 200
    started = await world.client.post(
        f"/api/recordings/{world.rec.id}/dicom", json={}, headers=bearer(admin)
    )
    job = await finished_job(world.client, admin, started)
    assert job["state"] == "done", job
    zipped = await world.client.get(f"{started.headers['Location']}/file", headers=bearer(admin))
    with zipfile.ZipFile(io.BytesIO(await zipped.read())) as archive:
        video = pydicom.dcmread(io.BytesIO(archive.read("video/001.dcm")))
    assert len(resources(await (await fhir(world, admin)).json(), "DocumentReference")) == 1
    await world.client.app[AUDIT].record(export_entry(world, "stored in the archive (c-store)"))
    data = await (await fhir(world, admin)).json()
    Bundle.model_validate(data)
    study = resources(data, "DocumentReference")[1]
    assert study["masterIdentifier"]["value"] == f"urn:oid:{video.StudyInstanceUID}"
    assert video.PatientID == PATIENT["patient_id"]


async def test_only_the_coordinator_reads_the_bundle(world: World, make_token: MakeToken) -> None:
    admin = make_token("admin", "*")
    assert (await fhir(world, admin)).status == 422  # no patient details yet
    reason = (await (await fhir(world, admin)).json())["reason"]
    assert "patient_id" in reason
    assert (await put_patient(world, world.a.id, admin, PATIENT)).status == 200
    for role in ("surgeon", "clinic", "observer"):  # the surgeon's link carries the replay right
        assert (await fhir(world, make_token(role, world.a.id))).status == 403
    assert (await fhir(world, make_token("admin", world.b.id))).status == 403
    assert (await fhir(world, None)).status == 401
    unknown = await world.client.get(
        "/api/recordings/20260101T000000Z-abcdef/fhir", headers=bearer(admin)
    )
    assert unknown.status in (400, 404)
    bad = await world.client.get("/api/recordings/..%2Fx/fhir", headers=bearer(admin))
    assert bad.status in (400, 404)


async def test_patient_details_round_trip_and_are_refused_with_a_reason(
    world: World, make_token: MakeToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = make_token("admin", world.a.id)
    path = f"/api/consultations/{world.a.id}/patient"
    empty = await world.client.get(path, headers=bearer(admin))
    assert empty.status == 200 and (await empty.json()) == {"patient": None}
    saved = await put_patient(world, world.a.id, admin, PATIENT)
    assert saved.status == 200
    assert {k: v for k, v in (await saved.json())["patient"].items() if k in PATIENT} == PATIENT
    read = await (await world.client.get(path, headers=bearer(admin))).json()
    assert read["patient"]["patient_id"] == "MRN-0042817"

    bad = await put_patient(world, world.a.id, admin, {**PATIENT, "birth_date": "12/04/1961"})
    assert bad.status == 400
    assert (await bad.json())["error"] == "patient-birth-date"
    assert "birth_date" in (await bad.json())["reason"]
    long = {**PATIENT, "family_name": "B" * 40, "given_names": "O" * 30}
    refused = await (await put_patient(world, world.a.id, admin, long)).json()
    assert refused["error"] == "patient-name-too-long" and "63" in refused["reason"]
    assert (await put_patient(world, world.a.id, admin, {"family_name": "X"})).status == 400
    ward = await put_patient(world, world.a.id, admin, {**PATIENT, "ward": "3"})
    assert ward.status == 400 and (await ward.json())["error"] == "bad-request"
    for role in ("surgeon", "clinic", "observer"):
        token = make_token(role, world.a.id)
        assert (await world.client.get(path, headers=bearer(token))).status == 403
        assert (await put_patient(world, world.a.id, token, PATIENT)).status == 403
    other = make_token("admin", world.b.id)
    assert (await world.client.get(path, headers=bearer(other))).status == 403
    unknown = "/api/consultations/nope-nope-nope/patient"
    assert (await world.client.get(unknown, headers=bearer(make_token("admin", "*")))).status == 404

    trail = await world.client.app[AUDIT].trail(world.a.id)
    details = [(e.action, e.detail) for e in trail if e.action == "patient"]
    assert details == [("patient", "read"), ("patient", "recorded"), ("patient", "read")]
    assert not [s for s in SECRETS if s in caplog.text]


async def test_a_consultation_is_created_with_its_patient(
    world: World, make_token: MakeToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = make_token("admin", "*")
    bad = await world.client.post(
        "/api/consultations", json={"patient": {"patient_id": ""}}, headers=bearer(admin)
    )
    assert bad.status == 400 and "patient_id" in (await bad.json())["reason"]
    made = await world.client.post(
        "/api/consultations", json={"title": "ERCP", "patient": PATIENT}, headers=bearer(admin)
    )
    assert made.status == 201
    cid = (await made.json())["id"]
    read = await world.client.get(f"/api/consultations/{cid}/patient", headers=bearer(admin))
    assert (await read.json())["patient"]["family_name"] == "Batbayar"
    assert (
        "Batbayar"
        not in await (
            await world.client.get(f"/api/consultations/{cid}", headers=bearer(admin))
        ).text()
    )
    assert not [s for s in SECRETS if s in caplog.text]


def test_a_finished_recordings_digest_is_kept_until_its_files_change(tmp_path: Path) -> None:
    """The Bundle's SHA-1 is computed once per finished recording: the cache answers while every
    file keeps its path, size and modification time (here the bytes change behind its back, to
    show it does not read them again), and hashes anew when one of them changes."""
    path = tmp_path / "endolink-r.webm"
    path.write_bytes(b"A" * 1000)
    sent = Download("video/webm", path.name, [(path.name, path)])
    cache = DigestCache()
    first = cache.digest("r", sent, ended=True)
    assert first == (hashlib.sha1(b"A" * 1000).digest(), 1000)
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"B" * 1000)
    os.utime(path, ns=(stamp, stamp))
    assert cache.digest("r", sent, ended=True) == first  # not read again
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert cache.digest("r", sent, ended=True) == (hashlib.sha1(b"B" * 1000).digest(), 1000)

    growing = DigestCache()  # a recording still being written is never kept
    assert growing.digest("r", sent, ended=False)[0] == hashlib.sha1(b"B" * 1000).digest()
    path.write_bytes(b"C" * 1000)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert growing.digest("r", sent, ended=False)[0] == hashlib.sha1(b"C" * 1000).digest()
