"""``endolink consult create|patient --patient-file``: the patient's details from a JSON file (or
standard input), never from values on the command line (``ps``, shell history), never echoed."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from signaling.db.audit import AuditTrail
from signaling.db.patients import PatientRecord, PatientRegister
from signaling.db.store import DB_FILENAME

from .cli_support import clear_environment, run

DETAILS = {
    "patient_id": "MRN-7",
    "issuer": "Hospital A",
    "family_name": "Dorj",
    "given_names": "Bat Erdene",
    "birth_date": "1970-01-02",
    "sex": "male",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)


@pytest.fixture
def where(tmp_path: Path) -> tuple[str, str]:
    return ("--data-dir", str(tmp_path / "data"))


def written(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def stored(data_dir: Path, cid: str) -> tuple[list[PatientRecord], list[str]]:
    async def read() -> tuple[list[PatientRecord], list[str]]:
        register = PatientRegister(data_dir / DB_FILENAME)
        trail = AuditTrail(data_dir / DB_FILENAME)
        try:
            entries = await trail.trail(cid)
            return await register.history(cid), [f"{e.action} {e.detail}" for e in entries]
        finally:
            await register.close()
            await trail.close()

    return asyncio.run(read())


def test_consult_create_and_consult_patient_record_the_details_from_a_file_or_stdin(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    details = written(tmp_path, "patient.json", json.dumps(DETAILS))
    code, out, err = run(capsys, "consult", "create", "--json", "--patient-file", details, *where)
    assert (code, err) == (0, "")
    cid = json.loads(out)["id"]
    assert "Dorj" not in out and "MRN-7" not in out  # the answer is the links, as the API's
    monkeypatch.setattr("sys.stdin", io.StringIO('{"patient_id": "MRN-8"}'))
    code, out, err = run(capsys, "consult", "patient", cid, "--patient-file", "-", *where)
    assert (code, err) == (0, "") and "MRN-8" not in out

    history, audit = stored(tmp_path / "data", cid)
    assert [r.patient.patient_id for r in history] == ["MRN-7", "MRN-8"]
    assert history[0].patient.to_json() == DETAILS and history[0].recorded_by == "cli"
    assert audit == ["patient recorded", "patient recorded"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the patient file"),
        (b"\xff\xfe MRN-9", "is not UTF-8 text"),
        (b'{"patient_id": "MRN-9", ', "is not JSON (line 1, column 25)"),
        (b'{"patient_id": "MRN-9", "birth_date": "2999-01-01"}', "birth_date must be a past"),
        (b'{"patient_id": "MRN-9", "family_name": "Kim^Lee"}', "must not contain ^"),
        (b'["MRN-9"]', "patient must be an object"),
    ],
    ids=["missing", "not-utf8", "not-json", "future-date", "caret", "not-object"],
)
def test_a_bad_patient_file_is_a_one_line_error_that_never_echoes_it(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: tuple[str, str],
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "patient.json"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "consult", "create", "--patient-file", str(path), *where)
    assert (code, out) == (2, "")
    assert err.startswith("endolink: error: ") and err.count("\n") == 1
    assert message in err and str(path) in err
    for value in ("MRN-9", "2999", "Kim", "Lee"):
        assert value not in err
    assert not (tmp_path / "data" / DB_FILENAME).exists()  # refused before anything was made


def test_consult_patient_needs_a_file_and_a_known_consultation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: tuple[str, str]
) -> None:
    code, out, _ = run(capsys, "consult", "create", "--json", *where)
    cid = json.loads(out)["id"]
    code, _, err = run(capsys, "consult", "patient", cid, *where)
    assert code == 2 and "--patient-file" in err
    details = written(tmp_path, "p.json", '{"patient_id": "X"}')
    code, _, err = run(
        capsys, "consult", "patient", "nope-nope-nope", "--patient-file", details, *where
    )
    assert code == 1 and "unknown consultation" in err


@pytest.mark.parametrize(
    "command",
    [["consult", "create"], ["recordings", "dicom", "20260101T000000Z-abcdefgh", "--out", "d"]],
    ids=["consult-create", "recordings-dicom"],
)
def test_the_old_value_options_are_gone(
    capsys: pytest.CaptureFixture[str], where: tuple[str, str], command: list[str]
) -> None:
    """Values on the command line would show in ``ps``: the options no longer exist, and every
    command that takes the details offers the file."""
    code, _, err = run(capsys, *command, "--patient-id", "MRN-1", *where)
    assert code == 2 and "unrecognized arguments" in err
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and "--patient-file PATH" in out
