"""``endolink recordings dicom ID --out DIR``: a recording as DICOM files for the hospital record
(the same files the ``POST /api/recordings/{id}/dicom`` job makes, written straight into DIR
instead of a ZIP), optionally sent to the archive (``--send stow|c-store``). The spans filmed
outside the body are blurred unless ``--include-out-of-body`` (audited as kept).

The patient's details come from ``--patient-file`` (JSON, ``-`` for standard input; recorded in
the consultation's register first, audited ``patient``, as over HTTP), else from the register.
Nothing printed or logged names the patient; the audit entries (by the operator's account, like
``revoke``) say where the files went, and ``stored in the archive (…)`` once the archive took them.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from signaling.cli_consult import (
    CliError,
    audit,
    patient_arguments,
    patient_of,
    record_patient,
    settings_of,
)
from signaling.db.audit import AuditAction
from signaling.db.patients import Patient, PatientRegister, no_patient
from signaling.db.store import DB_FILENAME, database_of
from signaling.settings import SENDS, Settings


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
        choices=SENDS,
        help="also send the files to the archive (ENDOLINK_PACS_STOW_URL / ENDOLINK_PACS_DICOM)",
    )
    dicom.add_argument(
        "--include-out-of-body",
        action="store_true",
        help="keep the parts filmed outside the body (the room, faces) unblurred",
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
    from signaling.replay.dicom import archive_for, stored_detail
    from signaling.replay.exports import KEPT_OUT_OF_BODY

    if not valid_recording_id(args.recording):
        raise CliError(f"not a recording id: {args.recording!r}", exit_code=2)
    settings = settings_of(args)
    database = database_of(settings)
    if not settings.database_url and not (settings.data_dir / DB_FILENAME).exists():
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
            cid = row.consultation_id
            patient = await _patient(args, settings, cid)
            stills = await library.dicom_stills(row, await library.manifest(row))
            plan = await asyncio.to_thread(
                library.dicom_plan,
                row,
                patient.to_json(),
                stills,
                args.burned_in,
                settings.timezone,
                args.include_out_of_body,
            )
            result = await asyncio.to_thread(export_dicom, plan, args.out)
            where = str(args.out) if archive is None else f"{args.out} + {archive.kind}"
            if args.include_out_of_body:
                where += f", {KEPT_OUT_OF_BODY}"
            await audit(settings, cid, AuditAction.DICOM_EXPORT, f"cli {where}", row.id)
            sent = ""
            if archive is not None:
                answer = await asyncio.to_thread(archive.send, result.files, lambda: False)
                detail = stored_detail(archive.kind)
                await audit(settings, cid, AuditAction.DICOM_EXPORT, detail, row.id)
                sent = f"; {answer['stored']} stored by the archive ({archive.kind})"
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


async def _patient(args: argparse.Namespace, settings: Settings, cid: str) -> Patient:
    """The options' patient (recorded in the register first), else the registered one."""
    given = patient_of(args)
    if given is not None:
        await record_patient(settings, cid, given)
        return given
    register = PatientRegister(database_of(settings))
    try:
        record = await register.latest(cid)
    finally:
        await register.close()
    if record is None:
        raise CliError(f"{no_patient(cid)}; or give --patient-file", exit_code=2)
    return record.patient
