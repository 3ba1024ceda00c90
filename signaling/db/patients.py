"""Who the patient is: the identifiers a hospital's records need (DICOM, FHIR) and nothing else.

The coordinator supplies them at consultation creation or at export; EndoLink never asks the
clinic or the surgeon for them and never shows them on the live pages. They are personal data:
never logged (only "patient details recorded for consultation X"), never in a token, kept in the
data dir's SQLite file (mode 0600). Like consent, the table is append-only: a correction is a new
row, the latest counts, earlier ones stay for the audit trail.

Values are checked here against the strictest format they will be written in: DICOM's LO (64
characters, no backslash) for the identifier and issuer, PN component groups (64 characters, no
``^``, ``=`` or ``\\``; the 64 hold the whole ``family^given`` group) for names, DA for the
birth date. Each refusal carries a ``problem`` code the API answers with (``patient-<problem>``),
so the coordinator's page can say it in the visitor's language.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from persistence.database import Connection, Target, open_database
from persistence.sqlite import Migrations
from persistence.times import utc_now_iso
from signaling.db.store import UnknownConsultation, valid_consultation_id

logger = logging.getLogger(__name__)

PATIENT_NEEDED = "patient-details-needed"
"The API's code when a hospital record (DICOM, FHIR) is asked for and no patient is known."
SEXES = ("female", "male", "other", "unknown")
"FHIR's AdministrativeGender codes; DICOM's Patient's Sex maps them to F, M, O and empty."
MAX_PART = 64

_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE patients (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        patient_id      TEXT NOT NULL,
        issuer          TEXT NOT NULL DEFAULT '',
        family_name     TEXT NOT NULL DEFAULT '',
        given_names     TEXT NOT NULL DEFAULT '',
        birth_date      TEXT,
        sex             TEXT NOT NULL DEFAULT 'unknown',
        recorded_by     TEXT NOT NULL,
        recorded_at     TEXT NOT NULL
    );
    CREATE INDEX patients_by_consultation ON patients (consultation_id, seq);
    """,
)
_POSTGRES: tuple[str, ...] = (
    """
    CREATE TABLE patients (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        consultation_id TEXT NOT NULL REFERENCES consultations (id),
        patient_id      TEXT NOT NULL,
        issuer          TEXT NOT NULL DEFAULT '',
        family_name     TEXT NOT NULL DEFAULT '',
        given_names     TEXT NOT NULL DEFAULT '',
        birth_date      TEXT,
        sex             TEXT NOT NULL DEFAULT 'unknown',
        recorded_by     TEXT NOT NULL,
        recorded_at     TEXT NOT NULL
    );
    CREATE INDEX patients_by_consultation ON patients (consultation_id, seq);
    """,
)
SCHEMA = Migrations("patients", _STEPS, postgres=_POSTGRES)

_FIELDS = ("patient_id", "issuer", "family_name", "given_names", "birth_date", "sex")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_FORBIDDEN = re.compile(r"[\^=\\]")


def no_patient(cid: str) -> str:
    """The one sentence saying what is missing (``PATIENT_NEEDED``) and where to give it."""
    return (
        "the patient's details are needed for the hospital record: give at least patient_id "
        f"(PUT /api/consultations/{cid}/patient, or endolink consult patient)"
    )


class InvalidPatient(ValueError):
    """A patient detail that a hospital's records could not hold; the message says which,
    ``problem`` says it as a stable code (one of ``PROBLEMS``)."""

    def __init__(self, reason: str, problem: str = "invalid") -> None:
        super().__init__(reason)
        self.problem = problem


PROBLEMS = (
    "invalid",
    "id-missing",
    "field-too-long",
    "forbidden-character",
    "name-too-long",
    "birth-date",
    "sex",
)
"The refusals' codes: ``invalid`` is any other (a wrong type, an unknown field, spaces around)."


@dataclass(frozen=True)
class Patient:
    """The patient's details as the coordinator gave them."""

    patient_id: str
    issuer: str = ""
    family_name: str = ""
    given_names: str = ""
    birth_date: str | None = None
    sex: str = "unknown"

    def __post_init__(self) -> None:
        _check_text(self.patient_id, "patient_id", required=True)
        _check_text(self.issuer, "issuer")
        for field, value in (("family_name", self.family_name), ("given_names", self.given_names)):
            _check_text(value, field)
            if _NAME_FORBIDDEN.search(value):
                raise InvalidPatient(f"{field} must not contain ^, = or \\", "forbidden-character")
        if self.family_name and self.given_names:
            group = len(self.family_name) + 1 + len(self.given_names)  # DICOM PN: family^given
            if group > MAX_PART:
                raise InvalidPatient(
                    f"family_name and given_names together must be at most {MAX_PART - 1}"
                    f" characters (DICOM holds the whole name in {MAX_PART}): {group - 1} given",
                    "name-too-long",
                )
        if self.birth_date is not None:
            _check_birth_date(self.birth_date)
        if self.sex not in SEXES:
            raise InvalidPatient(f"sex must be one of {', '.join(SEXES)}", "sex")

    @classmethod
    def from_json(cls, body: Any) -> Patient:
        """From an API body: an object with ``patient_id`` and the optional fields, strings."""
        if not isinstance(body, dict):
            raise InvalidPatient("patient must be an object")
        unknown = sorted(set(body) - set(_FIELDS))
        if unknown:
            raise InvalidPatient(f"unknown patient field: {unknown[0]}")
        values: dict[str, str | None] = {}
        for key, value in body.items():
            if value is None and key != "patient_id":
                continue
            if not isinstance(value, str):
                raise InvalidPatient(f"{key} must be a string")
            values[key] = value.strip()
        if "patient_id" not in values:
            raise InvalidPatient("patient_id is required", "id-missing")
        return cls(**values)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in _FIELDS}


@dataclass(frozen=True)
class PatientRecord:
    """One row: the details, who recorded them and when."""

    patient: Patient
    recorded_by: str
    recorded_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            **self.patient.to_json(),
            "recorded_by": self.recorded_by,
            "recorded_at": self.recorded_at,
        }


class PatientRegister:
    """The patients' details per consultation, on the server's database."""

    def __init__(self, path: Target) -> None:
        self._db = open_database(path, SCHEMA)

    async def record(self, cid: str, patient: Patient, recorded_by: str) -> PatientRecord:
        """Append the consultation's patient details; they supersede earlier ones."""
        if not valid_consultation_id(cid):
            raise UnknownConsultation(cid)
        record = PatientRecord(patient, recorded_by, utc_now_iso(timespec="seconds"))

        def insert(db: Connection) -> None:
            with db:
                if not db.execute("SELECT 1 FROM consultations WHERE id = ?", (cid,)).fetchone():
                    raise UnknownConsultation(cid)
                db.execute(
                    "INSERT INTO patients (consultation_id, patient_id, issuer, family_name,"
                    " given_names, birth_date, sex, recorded_by, recorded_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, *(getattr(patient, f) for f in _FIELDS), recorded_by, record.recorded_at),
                )

        await self._db.run(insert)
        logger.info("patient details recorded for consultation %s", cid)
        return record

    async def latest(self, cid: str) -> PatientRecord | None:
        """The consultation's current patient details; None when none were given."""
        history = await self._select(cid, "ORDER BY seq DESC LIMIT 1")
        return history[0] if history else None

    async def history(self, cid: str) -> list[PatientRecord]:
        """Every version of the details, oldest first (the audit trail)."""
        return await self._select(cid, "ORDER BY seq")

    async def close(self) -> None:
        await self._db.close()

    async def _select(self, cid: str, order: str) -> list[PatientRecord]:
        if not valid_consultation_id(cid):
            return []

        def select(db: Connection) -> list[PatientRecord]:
            rows = db.execute(
                f"SELECT {', '.join(_FIELDS)}, recorded_by, recorded_at FROM patients"
                f" WHERE consultation_id = ? {order}",
                (cid,),
            ).fetchall()
            return [PatientRecord(Patient(*row[:6]), row[6], row[7]) for row in rows]

        return await self._db.run(select)


def _check_text(value: str, field: str, *, required: bool = False) -> None:
    if required and not value.strip():
        raise InvalidPatient(f"{field} must not be empty", "id-missing")
    if value != value.strip():
        raise InvalidPatient(f"{field} must not start or end with spaces")
    if len(value) > MAX_PART:
        raise InvalidPatient(f"{field} must be at most {MAX_PART} characters", "field-too-long")
    if _CONTROL.search(value) or "\\" in value:
        raise InvalidPatient(
            f"{field} must not contain control characters or backslashes", "forbidden-character"
        )


def _check_birth_date(value: str) -> None:
    try:
        born = date.fromisoformat(value)
    except ValueError:
        raise InvalidPatient("birth_date must be a date like 1961-04-12", "birth-date") from None
    if len(value) != 10 or not date(1880, 1, 1) <= born <= date.today():
        raise InvalidPatient("birth_date must be a past date like 1961-04-12", "birth-date")
