"""DICOM UIDs for a recording, derived from its id: the same recording always maps to the same study,
so a second export (or the FHIR DocumentReference) names the study the archive already holds."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("5b0c8f9e-3d1a-4f7e-9a51-6e2f0c1d7a44")


def recording_uid(recording_id: str, what: str) -> str:
    """A UID under the UUID-derived root 2.25 (PS3.5 B.2): ``what`` is "study", "series", ..."""
    return "2.25." + str(uuid.uuid5(_NAMESPACE, f"{what}:{recording_id}").int)


def study_instance_uid(recording_id: str) -> str:
    return recording_uid(recording_id, "study")
