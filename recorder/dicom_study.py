"""What every DICOM object of a recording shares: the patient, the study, its series, the
equipment, the SOP common attributes and the file meta (PS3.3 C.7.1.1, C.7.2.1, C.7.3.1, C.7.5.1,
C.12.1), so the video, the stills and the burned-in copy of one recording land in one study.

The study is the recording filed under its patient (its UID comes from ``dicom_uids.py``, from
the recording and the patient's issuer and id, so a second export names the study the archive
already holds); it is dated when the recording started (when the endoscopy was imaged: a
consultation may be created days before), described by the consultation's title. SOP Instance
UIDs are derived too, from the recording, the series, the instance number and a digest of the
patient's details and the time zone: an identical re-export makes the same instances (the archive
keeps one copy), a corrected one makes new ones (one UID never names two contents).

Times are the hospital's local time (``ENDOLINK_TIMEZONE``: archives match studies by local date),
with its offset at the start of the recording in Timezone Offset From UTC, every time of the
study written at that one offset; text is UTF-8 (``ISO_IR 192``): names are Korean and Mongolian
Cyrillic as often as Latin. The patient details are personal data: nothing here logs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from persistence.times import parse_utc_iso

from .dicom_uids import series_instance_uid, sop_instance_uid, study_instance_uid

MODALITY = "ES"
"Endoscopy (PS3.3 C.7.3.1.1.1): the modality of the Video and VL Endoscopic IODs."
MANUFACTURER = "EndoLink"
CHARSET = "ISO_IR 192"
_SEX = {"female": "F", "male": "M", "other": "O", "unknown": ""}
_LO = 64
"Characters of a LO value (Study and Series Description)."


@dataclass(frozen=True)
class Study:
    """One recording as a DICOM study, with the patient it is of."""

    recording_id: str
    title: str
    started_at: str
    "ISO 8601 UTC: when the recording started."
    patient: Mapping[str, str | None]
    "The patient's details as ``Patient.to_json()`` gives them (patient_id required)."
    zone: str = "UTC"
    "IANA name of the hospital's time zone (``ENDOLINK_TIMEZONE``), checked by the settings."

    @property
    def patient_key(self) -> tuple[str, str]:
        """(issuer, patient_id): whom the study is filed under."""
        return self.patient.get("issuer") or "", self.patient["patient_id"] or ""

    @property
    def uid(self) -> str:
        return study_instance_uid(self.recording_id, *self.patient_key)

    @cached_property
    def offset(self) -> timedelta:
        """The zone's offset from UTC when the recording started (one offset for the study)."""
        started = datetime.fromtimestamp(parse_utc_iso(self.started_at), ZoneInfo(self.zone))
        return started.utcoffset() or timedelta(0)

    @cached_property
    def content_digest(self) -> str:
        """What besides the media changes the instances' attributes: the patient, the zone."""
        said = json.dumps([dict(self.patient), self.zone], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(said.encode()).hexdigest()[:32]

    def local(self, iso: str) -> tuple[str, str]:
        """DA and TM (to the millisecond) of an ISO 8601 UTC time, at the study's offset."""
        moment = datetime.fromtimestamp(parse_utc_iso(iso), timezone(self.offset))
        return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S.%f")[:-3]

    def offset_text(self) -> str:
        """Timezone Offset From UTC: ``+HHMM`` / ``-HHMM``."""
        minutes = round(self.offset.total_seconds() / 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class Series:
    """One series of the study: its number, what it holds, and its own stable UID."""

    study: Study
    number: int
    name: str
    "``video``, ``stills``, ``burned-in``: the UID is derived from it."
    description: str

    @property
    def uid(self) -> str:
        return series_instance_uid(self.study.recording_id, *self.study.patient_key, self.name)


def person_name(patient: Mapping[str, str | None]) -> str:
    """PN: family name ``^`` given names (the register has already refused ``^``, ``=``, ``\\``)."""
    family, given = patient.get("family_name") or "", patient.get("given_names") or ""
    return f"{family}^{given}" if given else family


def new_instance(
    series: Series,
    sop_class: str,
    transfer_syntax: str,
    instance_number: int,
    content_at: str,
) -> Dataset:
    """A dataset with the shared modules filled in; the caller adds the image and pixel data."""
    study, patient = series.study, series.study.patient
    ds = Dataset()
    sop_instance = UID(
        sop_instance_uid(study.recording_id, series.name, instance_number, study.content_digest)
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.SpecificCharacterSet = CHARSET
    created_date, created_time = study.local(datetime.now(UTC).isoformat())
    ds.InstanceCreationDate, ds.InstanceCreationTime = created_date, created_time
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = sop_instance
    ds.TimezoneOffsetFromUTC = study.offset_text()
    # Patient (C.7.1.1)
    ds.PatientName = person_name(patient)
    ds.PatientID = patient["patient_id"]
    if patient.get("issuer"):
        ds.IssuerOfPatientID = patient["issuer"]
    ds.PatientBirthDate = (patient.get("birth_date") or "").replace("-", "")
    ds.PatientSex = _SEX.get(patient.get("sex") or "unknown", "")
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = study.uid
    ds.StudyDate, ds.StudyTime = study.local(study.started_at)
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = study.title[:_LO]
    # General Series (C.7.3.1), General Equipment (C.7.5.1)
    ds.Modality = MODALITY
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description[:_LO]
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.Manufacturer = MANUFACTURER
    # General Image (C.7.6.1), Acquisition Context (C.7.6.14): no coded context is known
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = study.local(content_at)
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.PatientOrientation = ""
    ds.AcquisitionContextSequence = []
    return ds
