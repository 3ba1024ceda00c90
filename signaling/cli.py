"""The ``endolink`` command: run the server, create consultations and their invite links, issue
tokens and certificates, publish a file or camera, list and verify recordings, write them as DICOM.

Exit codes: 0 success, 2 usage error, 1 runtime error (one readable line on stderr, no traceback).
Tokens are printed to stdout only, never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from persistence.database import DATABASE_ERRORS
from signaling import cli_audit, cli_node, cli_publish, cli_records, running
from signaling.auth.grants import ANY_CONSULTATION, Role
from signaling.auth.invites import issue_token, with_links
from signaling.auth.names import name_argument
from signaling.auth.secret import token_issuer
from signaling.cli_consult import (
    CLI_IDENTITY,
    CliError,
    add_consult_commands,
    existing,
    parse_duration,
    print_consultation,
    require_database,
    settings_of,
    with_store,
)
from signaling.db.store import DB_FILENAME, database_of
from signaling.settings import Settings
from signaling.tls import make_certificates, make_dtls_client_certificate, ssl_context

if TYPE_CHECKING:
    from recorder.index import RecordingIndex

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LINE_BREAK = re.compile(r"\s*\n\s*")
DEMO_TITLE = "Demo consultation"
DEMO_CONSENT = "demo (paper form on file)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    # Whatever a command makes (a fresh data dir, the database SQLite creates, certificates,
    # the audit head, what PyAV writes) is the service user's alone, whatever umask the shell
    # had; restored after, for callers running a command in their own process.
    umask = os.umask(0o077)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"endolink: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) + DATABASE_ERRORS as exc:
        # One line: libpq's messages (PostgreSQL down) carry a second, indented one.
        print(f"endolink: error: {_LINE_BREAK.sub(' ', str(exc).strip())}", file=sys.stderr)
        return 1
    finally:
        os.umask(umask)
    return code


def default_hostnames(host: str | None = None) -> list[str]:
    """Names a local browser may use to reach this machine, plus the bind address if specific."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if host and host not in ("0.0.0.0", "::"):
        names.append(host)
    return list(dict.fromkeys(names))


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help="database, secret and certificates (default: $ENDOLINK_DATA_DIR, else ./data)",
    )
    parser = argparse.ArgumentParser(prog="endolink", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    serve.add_argument(
        "--tls", action="store_true", help="serve HTTPS (certificates are made if missing)"
    )
    serve.add_argument(
        "--demo", action="store_true", help="create a demo consultation and print its links"
    )
    serve.set_defaults(handler=_serve)

    add_consult_commands(commands, common)

    token = commands.add_parser("token", parents=[common], help="print a token (JWT)")
    token.add_argument("--consultation", help="consultation id (admins: omit or * for all)")
    token.add_argument("--role", required=True, choices=[str(r) for r in Role])
    token.add_argument("--ttl", type=parse_duration, help="lifetime: 3600, 30m, 6h (default 6h)")
    token.add_argument("--name", type=name_argument, help="display name carried by the token")
    token.set_defaults(handler=_token)

    certs = commands.add_parser("certs", parents=[common], help="make a local CA and server cert")
    certs.add_argument(
        "--hostname",
        action="append",
        help="name or IP the server is reached by (repeatable; default: this machine's names)",
    )
    certs.add_argument(
        "--new-ca",
        action="store_true",
        help="make a new local CA (for names the old one was not made for; devices trust it anew)",
    )
    certs.add_argument(
        "--dtls-client",
        type=Path,
        metavar="DIR",
        help="instead: write a P-256 DTLS certificate and key for FFmpeg's whip muxer into DIR",
    )
    certs.set_defaults(handler=_certs)

    cli_publish.add_command(commands, common)

    recordings = commands.add_parser(
        "recordings", help="list and verify recordings, write them as DICOM"
    )
    recording_commands = recordings.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = recording_commands.add_parser("list", parents=[common], help="list recordings")
    listing.add_argument("--consultation", help="only this consultation's recordings")
    listing.add_argument("--json", action="store_true", help="print the index rows as JSON")
    listing.set_defaults(handler=_recordings_list)
    verify = recording_commands.add_parser(
        "verify",
        parents=[common],
        help="re-hash recording files: OK, MODIFIED, TRUNCATED or MISSING (exit 1 on any failure)",
    )
    verify.add_argument("recording", nargs="?", help="recording id (default: every recording)")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(handler=_recordings_verify)
    cli_records.add_commands(recording_commands, common)
    cli_audit.add_commands(commands, common, lambda message: CliError(message, exit_code=2))
    cli_node.add_commands(commands, common)
    return parser


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the media stack is slow to import and other commands do not need it.
    from signaling.app import create_app
    from signaling.http import serving
    from signaling.keys import CLUSTER, INVITES, STORE
    from signaling.ops.logs import configure_logging

    settings = settings_of(args, host=args.host, port=args.port, tls=True if args.tls else None)
    configure_logging(settings.log_format)
    tls_context = _server_tls(settings) if settings.tls else None
    app = create_app(settings)
    if args.demo:

        async def create_demo(app: web.Application) -> None:
            consultation = await app[STORE].create(
                title=DEMO_TITLE,
                video_codec=settings.video_codec,
                consent_by=DEMO_CONSENT,
                recorded_by=CLI_IDENTITY,
            )
            print_consultation(
                await with_links(
                    app[INVITES], settings.base_url, consultation, settings.token_ttl_s
                )
            )
            # The script beside this interpreter (e.g. .venv/bin/endolink), which may not be
            # on PATH in a fresh checkout.
            script = Path(sys.executable).parent / "endolink"
            command = str(script) if script.exists() else "endolink"
            print(
                "  no camera? publish the built-in test pattern as the clinic:\n"
                f"    ENDOLINK_TOKEN=$({command} token --data-dir {settings.data_dir} "
                f"--consultation {consultation.id} --role clinic) \\\n"
                f"    {command} publish --url {settings.base_url}/whip/{consultation.id} "
                "testpattern",
                flush=True,
            )

        app.on_startup.append(create_demo)

    def listening() -> None:
        # run_app calls this once the sockets are bound: only then is the URL worth printing.
        running.record(settings)
        print(f"EndoLink server: {settings.base_url}  (Ctrl+C to stop)", flush=True)

    cluster = app.get(CLUSTER)
    try:
        serving.run_app(
            app,
            settings.host,
            settings.port,
            settings.header_timeout_s,
            tls_context,
            listening,
            None if cluster is None else cluster.drained,
        )
    finally:
        running.forget(settings)
    return 0


def _server_tls(settings: Settings) -> ssl.SSLContext:
    """The server's TLS context; the first ``--tls`` run makes the certificates itself."""
    explicit = settings.cert_file is not None or settings.key_file is not None
    if not explicit and not settings.cert_path.exists():
        ca_cert, _, _ = make_certificates(settings.certs_dir, default_hostnames(settings.host))
        print(f"Made TLS certificates; trust this CA on every device: {ca_cert}", flush=True)
    return ssl_context(settings.cert_path, settings.key_path)


def _token(args: argparse.Namespace) -> int:
    role = Role(args.role)
    cid = args.consultation or ANY_CONSULTATION
    if cid == ANY_CONSULTATION and role is not Role.ADMIN:
        raise CliError(f"--consultation is required for role {role}", exit_code=2)
    settings = settings_of(args)
    if cid != ANY_CONSULTATION:
        require_database(settings, cid)
        with_store(settings, lambda store: existing(store, cid))
    ttl_s = args.ttl or settings.token_ttl_s
    token, _ = issue_token(token_issuer(settings), role, cid, ttl_s, name=args.name or "")
    print(token)
    return 0


def _certs(args: argparse.Namespace) -> int:
    if args.dtls_client is not None:
        return _dtls_client_certificate(args.dtls_client)
    settings = settings_of(args)
    ca_cert, server_cert, server_key = make_certificates(
        settings.certs_dir, args.hostname or default_hostnames(), new_ca=args.new_ca
    )
    print(f"CA certificate:     {ca_cert}")
    print(f"server certificate: {server_cert}")
    print(f"server key:         {server_key}")
    print(
        f"\nTrust {ca_cert} once on every device that opens EndoLink:\n"
        f"  Debian/Ubuntu: sudo cp {ca_cert} /usr/local/share/ca-certificates/endolink.crt"
        " && sudo update-ca-certificates\n"
        "  macOS:         sudo security add-trusted-cert -d -r trustRoot"
        f" -k /Library/Keychains/System.keychain {ca_cert}\n"
        f"  Windows:       certutil -addstore -f ROOT {ca_cert.name}\n"
        "  Firefox:       Settings > Privacy & Security > Certificates > View Certificates >"
        " Authorities > Import\n"
        f"  Android/iOS:   copy {ca_cert.name} to the device, install it as a CA certificate\n"
        f"Then run: endolink serve --tls --data-dir {settings.data_dir}"
    )
    return 0


def _dtls_client_certificate(out_dir: Path) -> int:
    cert, key = make_dtls_client_certificate(out_dir)
    print(f"DTLS certificate: {cert}")
    print(f"DTLS key:         {key}")
    print(
        "\nGive both to FFmpeg's whip muxer (its own certificate is on P-224, which EndoLink cannot"
        " use):\n"
        f"  ffmpeg ... -c:v libx264 -bf 0 -f whip -cert_file {cert} -key_file {key} \\\n"
        '    -authorization "$ENDOLINK_TOKEN" https://SERVER/whip/CONSULTATION'
    )
    return 0


def _recordings_list(args: argparse.Namespace) -> int:
    rows = _with_index(settings_of(args), lambda index: index.list(args.consultation))
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
        return 0
    if not rows:
        print("no recordings")
    for row in rows:
        reason = f" ({row.stop_reason})" if row.stop_reason else ""
        print(
            f"{row.id}  consultation {row.consultation_id}  {row.status}{reason}  {row.started_at}"
            f"  {row.duration_s:.1f} s  {len(row.segments)} segment(s)"
            f"  {row.bytes / 1e6:.1f} MB"
        )
    return 0


def _recordings_verify(args: argparse.Namespace) -> int:
    # Imported here: PyAV is slow to import and other commands do not need it.
    from recorder.manifest import valid_recording_id
    from recorder.verify import RecordingCheck, format_check, verify_recording

    if args.recording is not None and not valid_recording_id(args.recording):
        raise CliError(f"not a recording id: {args.recording!r}", exit_code=2)
    settings = settings_of(args)

    async def verify(index: RecordingIndex) -> list[RecordingCheck]:
        if args.recording is None:
            rows = await index.list()
        else:
            row = await index.get(args.recording)
            if row is None:
                raise CliError(f"unknown recording {args.recording!r}")
            rows = [row]
        return [await asyncio.to_thread(verify_recording, settings.data_dir, r) for r in rows]

    checks = _with_index(settings, verify)
    failed = [check for check in checks if not check.ok]
    if args.json:
        print(json.dumps([check.to_json() for check in checks], indent=2))
    else:
        for check in checks:
            print("\n".join(format_check(check)))
        print(f"{len(checks) - len(failed)} of {len(checks)} recording(s) verified OK")
    return 1 if failed else 0


def _with_index(settings: Settings, work: Callable[[RecordingIndex], Awaitable[T]]) -> T:
    """Run ``work(RecordingIndex)`` on the data dir's database (the index migrates its own
    tables if the file is older)."""
    from recorder.index import RecordingIndex

    if not settings.database_url and not (settings.data_dir / DB_FILENAME).exists():
        raise CliError(f"no database in {settings.data_dir}")

    async def run() -> T:
        index = RecordingIndex(database_of(settings))
        try:
            return await work(index)
        finally:
            await index.close()

    return asyncio.run(run())
