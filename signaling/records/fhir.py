"""A recording as HL7 FHIR R4 resources, for the hospital's record: pure functions from what
EndoLink knows (``RecordFacts``) to a Bundle as plain JSON data.

R4 (4.0.1) because that is what hospitals run; the resources used here (Patient,
DocumentReference, Consent, AuditEvent, Bundle) are identical in R4B, whose models
(``fhir.resources.R4B``) validate every Bundle before it is served (``routes.py``).

- **Patient**: identifier (issuer as system when it is an OID or a URI, always as assigner),
  name, birthDate, gender.
- **DocumentReference** for the video: the download URL with contentType, size and SHA-1
  (R4 Attachment.hash) of exactly the bytes it sends; context.period = the recording's start/end.
  type LOINC 18751-8 "Endoscopy study", category LOINC 18748-4 "Diagnostic imaging study",
  context.event DICOM modality ES and SNOMED CT 423827005 "Endoscopy".
- a second **DocumentReference** for the DICOM study (identifier ``urn:dicom:uid`` /
  ``urn:oid:<Study Instance UID>``), only once the archive accepted it (a ``dicom-export`` audit
  entry "stored in the archive (…)"; a started or ZIP-only export names no study an archive
  holds); its description says where it is stored; it ``transforms`` the video's reference.
- **Consent** per consent record (IHE PCF basic shape): the latest active, earlier inactive;
  the patient is the performer (who grants it), who confirmed it is its ``verification``.
- **AuditEvent** per audit entry on the recording (IHE BALP shape): reads as RESTful read,
  exports as DICOM "Export"; the agent is the identity (never a name), entities the document
  and the patient. Live views are not among them: who watched the live feed read no document.

Every resource has a stable ``urn:uuid`` made from the recording (or entry) it describes, and
an identifier, so a receiving system can tell a second load from new content; the Bundle keeps
its identifier and says in ``meta.lastUpdated`` (and ``timestamp``) when its content was
assembled (every read adds its own AuditEvent, so each one is new content).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recorder.dicom_uids import study_instance_uid
from recorder.index import RecordingRow
from signaling.db.audit import AuditAction, AuditEntry
from signaling.db.patients import Patient
from signaling.db.store import Consent

JSON = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_REGISTRY = "urn:oid:1.2.840.10008.2.6.1"
VIDEO_ENDOSCOPIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
MAX_ATTACHMENT_SIZE = 2**31 - 1
"R4's Attachment.size is an unsignedInt: a larger file is described without its size."

_NAMESPACE = uuid.UUID("0d8f1c52-6a3e-4b9d-8f27-3c5e1a9b7d60")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")

_ENDOSCOPY_STUDY = {"system": LOINC, "code": "18751-8", "display": "Endoscopy study"}
_IMAGING_STUDY = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
_EVENT = [
    {"system": DCM, "code": "ES", "display": "Endoscopy"},
    {"system": SNOMED, "code": "423827005", "display": "Endoscopy"},
]
_CONSENT_METHODS = {
    "page": "confirmed on the clinic's EndoLink page during the consultation",
    "paper": "confirmed on paper before the consultation (the form is kept by the clinic)",
}
_READ = (
    {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    },
    {"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"},
)
_EXPORT = ({"system": DCM, "code": "110106", "display": "Export"}, None)
_AUDIT_KINDS = {
    AuditAction.REPLAY: _READ,
    AuditAction.DOWNLOAD: _READ,
    AuditAction.EXPORT_DOWNLOAD: _READ,
    AuditAction.FHIR: _READ,
    AuditAction.EXPORT: _EXPORT,
    AuditAction.DICOM_EXPORT: _EXPORT,
}
RECORDING_ACTIONS = tuple(_AUDIT_KINDS)
"The audit actions on the recording itself, each an AuditEvent."
STORED_IN_ARCHIVE = "stored in the archive"
"How a ``dicom-export`` entry's detail starts once the archive accepted the study."


@dataclass(frozen=True)
class VideoFile:
    """What ``GET .../download`` sends."""

    content_type: str
    filename: str
    sha1: bytes
    size: int


@dataclass(frozen=True)
class RecordFacts:
    """Everything the Bundle says, gathered by the route."""

    base_url: str
    recording: RecordingRow
    patient: Patient
    video: VideoFile
    consents: Sequence[Consent]
    audit: Sequence[AuditEntry]
    assembled_at: str

    @property
    def dicom_stored(self) -> AuditEntry | None:
        """The first time an archive accepted the recording's DICOM study, if it did."""
        return next(
            (
                e
                for e in self.audit
                if e.action == AuditAction.DICOM_EXPORT
                and (e.detail or "").startswith(STORED_IN_ARCHIVE)
            ),
            None,
        )


def bundle(facts: RecordFacts) -> JSON:
    """The Bundle (type ``collection``): Patient, DocumentReference(s), Consent(s),
    AuditEvents, in that order."""
    rid = facts.recording.id
    patient_url, video_url = _urn("patient", rid), _urn("video", rid)
    entries = [(patient_url, patient(facts.patient))]
    entries.append((video_url, video_reference(facts, patient_url)))
    documents = [video_url]
    stored = facts.dicom_stored
    if stored is not None:
        dicom_url = _urn("dicom", rid)
        entries.append((dicom_url, dicom_reference(facts, stored, patient_url, video_url)))
        documents.append(dicom_url)
    for i, consent in enumerate(facts.consents):
        latest = i == len(facts.consents) - 1
        entries.append(
            (_urn("consent", f"{rid}:{i}"), consent_resource(consent, patient_url, latest))
        )
    identities = f"{facts.base_url}/identities"  # this server's namespace of token identities
    for entry in facts.audit:
        event = audit_event(entry, documents, patient_url, identities)
        entries.append((_urn("audit", f"{rid}:{entry.seq}"), event))
    return {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": facts.assembled_at},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": _urn("bundle", rid)},
        "type": "collection",
        "timestamp": facts.assembled_at,
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }


def patient(details: Patient) -> JSON:
    identifier: JSON = {"use": "usual", "value": details.patient_id}
    if details.issuer:
        if _OID.fullmatch(details.issuer):
            identifier["system"] = f"urn:oid:{details.issuer}"
        elif _URI.fullmatch(details.issuer):
            identifier["system"] = details.issuer
        identifier["assigner"] = {"display": details.issuer}
    resource: JSON = {"resourceType": "Patient", "identifier": [identifier]}
    name: JSON = {}
    if details.family_name:
        name["family"] = details.family_name
    if details.given_names:
        name["given"] = details.given_names.split()
    if name:
        resource["name"] = [{"use": "official", **name}]
    resource["gender"] = details.sex
    if details.birth_date:
        resource["birthDate"] = details.birth_date
    return resource


def video_reference(facts: RecordFacts, patient_url: str) -> JSON:
    row, video = facts.recording, facts.video
    attachment: JSON = {
        "contentType": video.content_type,
        "url": f"{facts.base_url}/api/recordings/{row.id}/download",
        "hash": base64.b64encode(video.sha1).decode("ascii"),
        "title": video.filename,
        "creation": row.started_at,
    }
    if video.size <= MAX_ATTACHMENT_SIZE:
        attachment["size"] = video.size
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": _urn("video", row.id)},
        "identifier": [{"system": f"{facts.base_url}/api/recordings", "value": row.id}],
        "status": "current",
        "docStatus": "final" if row.ended_at else "preliminary",
        **_document_codes(_ENDOSCOPY_STUDY, patient_url),
        "date": row.ended_at or row.started_at,
        "description": "Endoscopy video recorded during a remote consultation (EndoLink)",
        "content": [{"attachment": attachment}],
        "context": _context(row),
    }


def dicom_reference(
    facts: RecordFacts, stored: AuditEntry, patient_url: str, video_url: str
) -> JSON:
    """``stored``: the audit entry of the archive's acceptance (its detail says which one)."""
    row = facts.recording
    uid = study_instance_uid(row.id, facts.patient.issuer, facts.patient.patient_id)
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
        "status": "current",
        "docStatus": "final",
        **_document_codes(_ENDOSCOPY_STUDY, patient_url),
        "date": stored.at,
        "description": (
            f"The recording as a DICOM study (Video Endoscopic Image Storage), {stored.detail}"
        ),
        "relatesTo": [{"code": "transforms", "target": {"reference": video_url}}],
        "content": [
            {
                "attachment": {"contentType": "application/dicom", "title": f"DICOM study {uid}"},
                "format": {
                    "system": DICOM_UID_REGISTRY,
                    "code": VIDEO_ENDOSCOPIC_IMAGE_STORAGE,
                    "display": "Video Endoscopic Image Storage",
                },
            }
        ],
        "context": _context(row),
    }


def consent_resource(consent: Consent, patient_url: str, latest: bool) -> JSON:
    """IHE PCF basic consent: privacy scope, LOINC 59284-0, opt-in for treatment. The patient
    grants it (``performer``); who confirmed it is its ``verification``, a display only
    (personal data, in the Bundle and nowhere else)."""
    return {
        "resourceType": "Consent",
        "status": "active" if latest else "inactive",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                    "display": "Privacy Consent",
                }
            ]
        },
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Consent"}]}],
        "patient": {"reference": patient_url},
        "dateTime": consent.confirmed_at,
        "performer": [{"reference": patient_url}],
        "verification": [
            {
                "verified": True,
                "verifiedWith": {"display": consent.confirmed_by},
                "verificationDate": consent.confirmed_at,
            }
        ],
        "sourceAttachment": {"title": _CONSENT_METHODS.get(consent.method, consent.method)},
        "policyRule": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "OPTIN",
                    "display": "opt-in",
                }
            ]
        },
        "provision": {
            "type": "permit",
            "purpose": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                    "code": "TREAT",
                    "display": "treatment",
                }
            ],
        },
    }


def audit_event(
    entry: AuditEntry, documents: Sequence[str], patient_url: str, identities: str
) -> JSON:
    """BALP's shape: type/subtype, action, recorded, outcome success, the user agent (identity
    as identifier in ``identities``, role as text) and EndoLink as the server agent and source."""
    kind, subtype = _AUDIT_KINDS[AuditAction(entry.action)]
    event: JSON = {"resourceType": "AuditEvent", "type": kind}
    if subtype is not None:
        event["subtype"] = [subtype]
    entities: list[JSON] = [
        {
            "what": {"reference": url},
            "type": _coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2"),
            "role": _coding("http://terminology.hl7.org/CodeSystem/object-role", "4"),
            "detail": [{"type": "endolink-action", "valueString": entry.action}],
        }
        for url in documents
    ]
    entities.append(
        {
            "what": {"reference": patient_url},
            "type": _coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1"),
            "role": _coding("http://terminology.hl7.org/CodeSystem/object-role", "1"),
        }
    )
    return {
        **event,
        "action": "R",
        "recorded": entry.at,
        "outcome": "0",
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "role": [{"text": entry.role}],
                "who": {"identifier": {"system": identities, "value": entry.identity}},
                "requestor": True,
            },
            {
                "type": {
                    "coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]
                },
                "who": {"display": "EndoLink"},
                "requestor": False,
            },
        ],
        "source": {
            "observer": {"display": "EndoLink"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entities,
    }


def _document_codes(kind: JSON, patient_url: str) -> JSON:
    return {
        "type": {"coding": [kind]},
        "category": [{"coding": [_IMAGING_STUDY]}],
        "subject": {"reference": patient_url},
    }


def _context(row: RecordingRow) -> JSON:
    period = {"start": row.started_at}
    if row.ended_at:
        period["end"] = row.ended_at
    return {"event": [{"coding": _EVENT}], "period": period}


def _coding(system: str, code: str) -> JSON:
    return {"system": system, "code": code}


def _urn(kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{kind}:{key}')}"
