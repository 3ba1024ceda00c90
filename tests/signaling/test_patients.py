"""The patient register keeps what a hospital's records need, checks it against the formats it
will be written in (DICOM LO/PN/DA, FHIR gender), keeps every version, and never logs it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence.database import Target
from signaling.db.patients import PROBLEMS, InvalidPatient, Patient, PatientRegister
from signaling.db.store import ConsultationStore, UnknownConsultation
from tests.postgres import BACKENDS, records_target

PATIENT = Patient(
    patient_id="UB-2026-0042",
    issuer="Ulaanbaatar Hospital No. 1",
    family_name="Бат-Эрдэнэ",
    given_names="Сарангэрэл",
    birth_date="1961-04-12",
    sex="female",
)


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return records_target(request, tmp_path)


@pytest.fixture
async def stores(db_path: Target) -> AsyncIterator[tuple[ConsultationStore, PatientRegister]]:
    store, register = ConsultationStore(db_path), PatientRegister(db_path)
    yield store, register
    await register.close()
    await store.close()


async def test_details_survive_a_restart_and_the_latest_counts(
    db_path: Target, stores: tuple[ConsultationStore, PatientRegister]
) -> None:
    store, register = stores
    cid = (await store.create("t", "VP8")).id
    await register.record(cid, Patient(patient_id="WRONG-1"), recorded_by="coordinator")
    await register.record(cid, PATIENT, recorded_by="coordinator")
    await register.close()

    again = PatientRegister(db_path)
    try:
        latest = await again.latest(cid)
        assert latest is not None and latest.patient == PATIENT
        assert latest.recorded_by == "coordinator"
        assert [r.patient.patient_id for r in await again.history(cid)] == [
            "WRONG-1",
            "UB-2026-0042",
        ]
    finally:
        await again.close()


async def test_a_consultation_without_details_has_none(
    stores: tuple[ConsultationStore, PatientRegister],
) -> None:
    store, register = stores
    cid = (await store.create("t", "VP8")).id
    assert await register.latest(cid) is None
    assert await register.latest("not a valid id") is None


async def test_details_for_an_unknown_consultation_are_refused(
    stores: tuple[ConsultationStore, PatientRegister],
) -> None:
    _, register = stores
    with pytest.raises(UnknownConsultation):
        await register.record("abcdefgh", PATIENT, recorded_by="x")
    with pytest.raises(UnknownConsultation):
        await register.record("../../x", PATIENT, recorded_by="x")


async def test_details_are_never_logged(
    stores: tuple[ConsultationStore, PatientRegister], caplog: pytest.LogCaptureFixture
) -> None:
    store, register = stores
    cid = (await store.create("t", "VP8")).id
    with caplog.at_level(logging.DEBUG):
        await register.record(cid, PATIENT, recorded_by="coordinator")
        await register.latest(cid)
    assert "patient details recorded" in caplog.text
    for value in ("UB-2026-0042", "Бат-Эрдэнэ", "Сарангэрэл", "1961-04-12", "Ulaanbaatar"):
        assert value not in caplog.text


@pytest.mark.parametrize(
    ("body", "reason", "problem"),
    [
        ({}, "patient_id is required", "id-missing"),
        ({"patient_id": ""}, "patient_id must not be empty", "id-missing"),
        ({"patient_id": "x" * 65}, "at most 64", "field-too-long"),
        ({"patient_id": "a\\b"}, "backslashes", "forbidden-character"),
        ({"patient_id": "a\nb"}, "control characters", "forbidden-character"),
        ({"patient_id": 42}, "patient_id must be a string", "invalid"),
        (
            {"patient_id": "1", "family_name": "Kim^Lee"},
            "must not contain ^",
            "forbidden-character",
        ),
        ({"patient_id": "1", "given_names": "a=b"}, "must not contain ^", "forbidden-character"),
        ({"patient_id": "1", "birth_date": "12.04.1961"}, "a date like", "birth-date"),
        ({"patient_id": "1", "birth_date": "2999-01-01"}, "a past date", "birth-date"),
        ({"patient_id": "1", "birth_date": "19610412"}, "a past date", "birth-date"),
        ({"patient_id": "1", "sex": "F"}, "sex must be one of", "sex"),
        ({"patient_id": "1", "mrn": "2"}, "unknown patient field: mrn", "invalid"),
        (["1"], "patient must be an object", "invalid"),
        (
            {"patient_id": "1", "family_name": "K" * 32, "given_names": "S" * 32},
            "together must be at most 63 characters",
            "name-too-long",
        ),
    ],
)
def test_bad_details_say_what_is_wrong(body: object, reason: str, problem: str) -> None:
    with pytest.raises(InvalidPatient, match=reason.replace("^", r"\^")) as refused:
        Patient.from_json(body)
    assert refused.value.problem == problem and problem in PROBLEMS


def test_a_whole_dicom_name_fits_in_64_characters() -> None:
    """PN's 64 hold ``family^given``: 31 + 1 + 32 fits, and either part alone may use all 64."""
    Patient(patient_id="1", family_name="K" * 31, given_names="S" * 32)
    Patient(patient_id="1", family_name="K" * 64)
    Patient(patient_id="1", given_names="S" * 64)


def test_details_from_json_round_trip_and_strip() -> None:
    body = {**PATIENT.to_json(), "family_name": "  Бат-Эрдэнэ ", "issuer": None}
    parsed = Patient.from_json(body)
    assert parsed == Patient(**{**PATIENT.to_json(), "issuer": ""})
    assert Patient.from_json(parsed.to_json()) == parsed
