"""DICOM UIDs of a recording, derived from its id and the patient it is filed under."""

from __future__ import annotations

import json
import uuid

_NAMESPACE = uuid.UUID("5b0c8f9e-3d1a-4f7e-9a51-6e2f0c1d7a44")
"""The same recording for the same patient always maps to the same study and series, so a second
export (or the FHIR DocumentReference) names the study the archive already holds; the patient
(issuer, patient_id) is part of the name, so details corrected to another patient make another
study instead of filing two patients under one Study Instance UID."""


def recording_uid(recording_id: str, what: str) -> str:
    """A UID under the UUID-derived root 2.25 (PS3.5 B.2): ``what`` is "study", "series", ..."""
    return "2.25." + str(uuid.uuid5(_NAMESPACE, f"{what}:{recording_id}").int)


def _patient_key(issuer: str, patient_id: str) -> str:
    """Unambiguous whatever the values hold (JSON, not a separator)."""
    return json.dumps([issuer, patient_id], ensure_ascii=False)


def study_instance_uid(recording_id: str, issuer: str, patient_id: str) -> str:
    """The study of ``recording_id`` filed under the patient (``issuer`` may be empty)."""
    return recording_uid(recording_id, f"study:{_patient_key(issuer, patient_id)}")


def series_instance_uid(recording_id: str, issuer: str, patient_id: str, series: str) -> str:
    """One series (``video``, ``stills``, ``burned-in``) of that study."""
    return recording_uid(recording_id, f"series:{series}:{_patient_key(issuer, patient_id)}")


def sop_instance_uid(recording_id: str, series: str, number: int, content: str) -> str:
    """One instance: ``content`` is a digest of all that changes its attributes besides the media
    (the patient's details, the time zone), so an identical re-export makes the same instance
    (an archive keeps one copy) and a corrected one never reuses a UID for other content."""
    return recording_uid(recording_id, f"instance:{series}:{number}:{content}")
