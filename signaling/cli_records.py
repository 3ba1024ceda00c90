"""``endolink recordings dicom ID --out DIR``: a recording as DICOM files for the hospital record
(the same files the ``POST /api/recordings/{id}/dicom`` job makes, written straight into DIR
instead of a ZIP), optionally sent to the archive (``--send stow|c-store``).

The patient's details come from ``--patient-file`` (JSON, ``-`` for standard input), else from
the consultation's register. They go into the files only: nothing printed or logged names the
patient, and the audit entry (by the operator's account, like ``revoke``) says where the files
went.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from pathlib import Path

from signaling.cli_consult import CliError, patient_arguments, patient_of, settings_of
from signaling.db.audit import AuditAction, AuditRecord, AuditTrail
from signaling.db.patients import Patient, PatientRegister
from signaling.db.store import DB_FILENAME


def add_commands(
    recording_commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    dicom = recording_commands.add_parser(
        "dicom",
        parents=[common],
        help="write a recording as DICOM (Video Endoscopic Image, stills, annotations sidecar)",
    )
    dicom.add_argument("recording", help="recording id")
    dicom.add_argument("--out", type=Path, required=True, help="directory for the DICOM files")
    dicom.add_argument(
        "--burned-in",
        action="store_true",
        help="add a derived series with the marks drawn into the video",
    )
    dicom.add_argument(
        "--send",
        choices=("stow", "c-store"),
        help="also send the files to the archive (ENDOLINK_PACS_STOW_URL / ENDOLINK_PACS_DICOM)",
    )
    patient_arguments(dicom, "the patient's details (default: those recorded for the consultation)")
    dicom.set_defaults(handler=_dicom)


def _dicom(args: argparse.Namespace) -> int:
    # Imported here: PyAV, pydicom and pynetdicom are slow to import.
    from recorder.dicom_export import export_dicom
    from recorder.index import RecordingIndex
    from recorder.jobs import JobFailed
    from recorder.library import RecordingLibrary
    from recorder.manifest import valid_recording_id
    from signaling.replay.dicom import archive_for

    if not valid_recording_id(args.recording):
        raise CliError(f"not a recording id: {args.recording!r}", exit_code=2)
    settings = settings_of(args)
    database = settings.data_dir / DB_FILENAME
    if not database.exists():
        raise CliError(f"no database in {settings.data_dir}")
    try:
        archive = archive_for(settings, args.send)
    except LookupError as exc:
        raise CliError(str(exc), exit_code=2) from None

    async def run() -> str:
        index = RecordingIndex(database)
        library = RecordingLibrary(settings.data_dir, index)
        try:
            row = await index.get(args.recording)
            if row is None:
                raise CliError(f"unknown recording {args.recording!r}")
            patient = await _patient(args, database, row.consultation_id)
            stills = await library.dicom_stills(row, await library.manifest(row))
            plan = await asyncio.to_thread(
                library.dicom_plan, row, patient.to_json(), stills, args.burned_in
            )
            result = await asyncio.to_thread(export_dicom, plan, args.out)
            sent = ""
            if archive is not None:
                answer = await asyncio.to_thread(archive.send, result.files)
                sent = f"; {answer['stored']} stored by the archive ({archive.kind})"
            where = str(args.out) if archive is None else f"{args.out} + {archive.kind}"
            await _audit(settings.data_dir / DB_FILENAME, row.consultation_id, row.id, where)
            size = sum(f.stat().st_size for f in result.files)
            return (
                f"{len(result.files)} DICOM file(s) in {args.out} ({size / 1e6:.1f} MB): "
                f"{result.frames} frames, {result.duration_s:.1f} s of video"
                f"{', transcoded to H.264 High' if result.transcoded else ''}{sent}"
            )
        finally:
            await library.close()
            await index.close()

    try:
        print(asyncio.run(run()), flush=True)
    except JobFailed as exc:
        raise CliError(str(exc)) from None
    return 0


async def _patient(args: argparse.Namespace, database: Path, cid: str) -> Patient:
    from signaling.replay.dicom import NO_PATIENT

    given = patient_of(args)
    if given is not None:
        return given
    register = PatientRegister(database)
    try:
        record = await register.latest(cid)
    finally:
        await register.close()
    if record is None:
        raise CliError(f"{NO_PATIENT} (--patient-file)", exit_code=2)
    return record.patient


async def _audit(database: Path, cid: str, rid: str, where: str) -> None:
    trail = AuditTrail(database)
    try:
        record = AuditRecord(
            cid, "cli", getpass.getuser(), "admin", AuditAction.DICOM_EXPORT, rid, f"cli {where}"
        )
        await trail.record(record)
    finally:
        await trail.close()
