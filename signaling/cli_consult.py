"""``endolink consult`` (create a consultation, one more invite link, withdraw links, the
patient's details) and what the CLI's commands share: ``CliError``, durations, settings and the
database helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from persistence.database import describe
from relay import ConsultationId
from signaling import running
from signaling.auth.grants import Role
from signaling.auth.invites import INVITE_ROLES, REPLAY_PAGE, issue_invite, with_links
from signaling.auth.names import MAX_NAME_LENGTH, name_argument
from signaling.db.audit import AuditAction, AuditRecord, AuditTrail
from signaling.db.audit_chain import ANCHOR_FILENAME
from signaling.db.invites import InviteBook
from signaling.db.patients import InvalidPatient, Patient, PatientRegister
from signaling.db.store import (
    DB_FILENAME,
    DEFAULT_TITLE,
    Consultation,
    ConsultationStore,
    database_of,
)
from signaling.settings import Settings

T = TypeVar("T")

CLI_IDENTITY = "cli"
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class CliError(Exception):
    """An expected failure: reported as one line, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_duration(text: str) -> int:
    """``3600``, ``90s``, ``30m``, ``6h`` or ``7d`` → seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use seconds or a number with s, m, h or d (e.g. 6h)"
        )
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def settings_of(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings.from_env(data_dir=args.data_dir, **overrides)


def add_consult_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """``endolink consult create|invite|revoke|patient``."""
    consult = commands.add_parser("consult", help="manage consultations")
    consult_commands = consult.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = consult_commands.add_parser(
        "create", parents=[common], help="create a consultation and print its invite links"
    )
    create.add_argument("--title", default=DEFAULT_TITLE)
    create.add_argument("--consent-by", help="who confirmed consent on paper beforehand")
    create.add_argument("--codec", choices=("VP8", "H264"), help="video codec (default VP8)")
    create.add_argument("--json", action="store_true", help="print the API's JSON answer")
    create.add_argument(
        "--no-recording", action="store_true", help="switch recording off for this consultation"
    )
    for role in INVITE_ROLES:
        name_help = f"who the {role} link is for (≤ {MAX_NAME_LENGTH} characters)"
        create.add_argument(f"--{role}-name", type=name_argument, help=name_help)
    patient_arguments(create)
    create.set_defaults(handler=_consult_create)
    patient = consult_commands.add_parser(
        "patient",
        parents=[common],
        help="record the patient's details for the hospital record (DICOM, FHIR)",
    )
    patient.add_argument("consultation", help="consultation id")
    patient_arguments(patient)
    patient.set_defaults(handler=_consult_patient)
    invite = consult_commands.add_parser(
        "invite", parents=[common], help="print one more invite link for a consultation"
    )
    invite.add_argument("--consultation", required=True, help="consultation id")
    invite.add_argument("--role", required=True, choices=[str(r) for r in INVITE_ROLES])
    invite.add_argument(
        "--replay", action="store_true", help="a link to the recordings (surgeon links only)"
    )
    invite.add_argument("--ttl", type=parse_duration, help="lifetime: 3600, 30m, 6h (default 6h)")
    invite.add_argument("--name", type=name_argument, help="who the link is for (else asked)")
    invite.set_defaults(handler=_consult_invite)
    revoke = consult_commands.add_parser(
        "revoke",
        parents=[common],
        help="withdraw an invite link, or with --consultation every link and token of one",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("link", nargs="?", help="the link (…/j/xxxx-xxxx-xxxx) or its code")
    which.add_argument(
        "--consultation",
        help="withdraw every link of this consultation and every token issued for it so far",
    )
    revoke.set_defaults(handler=_consult_revoke)


def patient_arguments(
    parser: argparse.ArgumentParser,
    description: str = "the patient's details for the hospital record (never logged nor shown)",
) -> None:
    """``--patient-file PATH``: the same option wherever a command takes the patient's details.
    A file, not values on the command line: those show in ``ps`` and the shell's history."""
    group = parser.add_argument_group("patient", description)
    group.add_argument(
        "--patient-file",
        metavar="PATH",
        help='a JSON file like {"patient_id": "…", "issuer": "…", "family_name": "…",'
        ' "given_names": "…", "birth_date": "YYYY-MM-DD", "sex": "female|male|other|unknown"}'
        " (only patient_id is required); - reads it from standard input",
    )


def patient_of(args: argparse.Namespace) -> Patient | None:
    """The details in ``--patient-file``; None without the option. Errors name the file and what
    is wrong with it, never its content."""
    path = args.patient_file
    if path is None:
        return None
    where = "standard input" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        body = json.loads(text)
    except OSError as exc:
        raise CliError(
            f"cannot read the patient file {where}: {exc.strerror}", exit_code=2
        ) from None
    except UnicodeDecodeError:
        raise CliError(f"the patient file {where} is not UTF-8 text", exit_code=2) from None
    except json.JSONDecodeError as exc:
        raise CliError(
            f"the patient file {where} is not JSON (line {exc.lineno}, column {exc.colno})",
            exit_code=2,
        ) from None
    try:
        return Patient.from_json(body)
    except InvalidPatient as exc:
        raise CliError(f"patient details in {where}: {exc}", exit_code=2) from None


async def record_patient(settings: Settings, cid: str, patient: Patient) -> None:
    """Into the consultation's register, audited (``patient``, never the values)."""
    register = PatientRegister(database_of(settings))
    try:
        await register.record(cid, patient, CLI_IDENTITY)
    finally:
        await register.close()
    await audit(settings, cid, AuditAction.PATIENT, "recorded")


def _consult_patient(args: argparse.Namespace) -> int:
    patient = patient_of(args)
    if patient is None:
        raise CliError(
            "give the patient's details: --patient-file PATH (JSON with at least patient_id)",
            exit_code=2,
        )
    settings = settings_of(args)
    require_database(settings, args.consultation)

    async def record(store: ConsultationStore) -> str:
        await existing(store, args.consultation)
        await record_patient(settings, args.consultation, patient)
        return f"patient details recorded for consultation {args.consultation}"

    print(with_store(settings, record), flush=True)
    return 0


def _consult_create(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    patient = patient_of(args)

    async def create(store: ConsultationStore, book: InviteBook) -> dict[str, Any]:
        consultation = await store.create(
            title=args.title,
            video_codec=args.codec or settings.video_codec,
            consent_by=args.consent_by,
            recorded_by=CLI_IDENTITY,
        )
        if args.no_recording:
            await store.set_recording_enabled(consultation.id, False)
        if patient is not None:
            await record_patient(settings, consultation.id, patient)
        url = running.public_url(settings)
        names = {r: n for r in INVITE_ROLES if (n := getattr(args, f"{r}_name")) is not None}
        return await with_links(book, url, consultation, settings.token_ttl_s, names)

    answer = with_invites(settings, create)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print_consultation(answer)
    return 0


def _consult_invite(args: argparse.Namespace) -> int:
    role = Role(args.role)
    if args.replay and role is not Role.SURGEON:
        raise CliError("--replay links are surgeon links: use --role surgeon", exit_code=2)
    settings = settings_of(args)
    require_database(settings, args.consultation)

    async def invite(store: ConsultationStore, book: InviteBook) -> str:
        await existing(store, args.consultation)
        page = REPLAY_PAGE if args.replay else None
        ttl_s = args.ttl or settings.token_ttl_s
        url = running.public_url(settings)
        cid, name = args.consultation, args.name or ""
        return (await issue_invite(book, url, cid, role, ttl_s, page, name)).link

    print(with_invites(settings, invite), flush=True)
    return 0


def _consult_revoke(args: argparse.Namespace) -> int:
    """Withdraw one invite link, or (``--consultation``) every link of a consultation and every
    token issued for it so far. A running server ends the sessions and sockets concerned within
    ``REFRESH_S`` (signaling/auth/revocations.py)."""
    settings = settings_of(args)
    if args.consultation is not None:
        require_database(settings, args.consultation)
        return _revoke_consultation(settings, args.consultation)
    code = args.link.rstrip("/").rpartition("/j/")[2]  # a whole link, or the code alone

    async def revoke(store: ConsultationStore, book: InviteBook) -> str:
        invite = await book.find(code)
        if invite is None:
            raise CliError("no invite has this link (check that it was copied whole)")
        await book.revoke(invite.id)
        cid = invite.consultation_id
        await audit(settings, cid, AuditAction.REVOKE, f"{invite.role} link {invite.id}")
        return f"withdrawn: {invite.role} link ({invite.page} page) of consultation {cid}"

    print(with_invites(settings, revoke), flush=True)
    return 0


def _revoke_consultation(settings: Settings, cid: ConsultationId) -> int:
    async def revoke(store: ConsultationStore, book: InviteBook) -> str:
        await existing(store, cid)
        count = await book.revoke_all(cid)  # first: a link must not outlive the tokens' refusal
        await store.revoke_access(cid)
        await audit(settings, cid, AuditAction.REVOKE, f"every link ({count} open)")
        return (
            f"withdrawn: every link of consultation {cid} ({count} not withdrawn before) and every"
            f" token issued for it until now; new links made from now on work"
        )

    print(with_invites(settings, revoke), flush=True)
    return 0


async def audit(
    settings: Settings,
    cid: str,
    action: AuditAction,
    detail: str,
    recording_id: str | None = None,
) -> None:
    """The same entry the HTTP routes write, by the operator's account (``cli``)."""
    trail = AuditTrail(database_of(settings), settings.data_dir / ANCHOR_FILENAME)
    try:
        user = getpass.getuser()
        await trail.record(
            AuditRecord(cid, CLI_IDENTITY, user, "admin", action, recording_id, detail)
        )
    finally:
        await trail.close()


def with_store(settings: Settings, work: Callable[[ConsultationStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = ConsultationStore(database_of(settings))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def with_invites(
    settings: Settings, work: Callable[[ConsultationStore, InviteBook], Awaitable[T]]
) -> T:
    async def both(store: ConsultationStore) -> T:
        book = InviteBook(store.path)
        try:
            return await work(store, book)
        finally:
            await book.close()

    return with_store(settings, both)


def require_database(settings: Settings, cid: ConsultationId) -> None:
    if not settings.database_url and not (settings.data_dir / DB_FILENAME).exists():
        raise CliError(f"unknown consultation {cid!r}: no database in {settings.data_dir}")


async def existing(store: ConsultationStore, cid: ConsultationId) -> Consultation:
    consultation = await store.get(cid)
    if consultation is None:
        raise CliError(f"unknown consultation {cid!r} in {describe(store.path)}")
    return consultation


def print_consultation(answer: dict[str, Any]) -> None:
    consent = answer["consent"]
    print(f"Consultation {answer['id']}: {answer['title']} ({answer['video_codec']})")
    print(f"  consent: {'recorded (' + consent['method'] + ')' if consent else 'not recorded'}")
    width = max(len(role) for role in answer["links"]) + 1
    for role, link in answer["links"].items():
        print(f"  {role + ':':<{width}} {link}")
    sys.stdout.flush()
