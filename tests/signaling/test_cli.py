"""The ``endolink`` command, run in-process (and ``serve`` as a real process)."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import free_port
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, TokenIssuer
from signaling.auth.secret import load_or_create_secret
from signaling.cli import parse_duration
from signaling.db.store import valid_consultation_id

from .cli_support import clear_environment, create_consultation, invite_of, link_parts, run

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = {"clinic": "clinic", "surgeon": "surgeon", "observer": "surgeon", "replay": "replay"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def verify(data_dir: Path, token: str) -> Grant:
    return TokenIssuer(load_or_create_secret(data_dir)).verify(token)


def test_consult_create_json_answers_like_the_api(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code, out, err = run(
        capsys,
        "consult",
        "create",
        "--json",
        "--title",
        "Knee",
        "--consent-by",
        "Dr. Bat",
        "--codec",
        "H264",
        "--data-dir",
        str(data_dir),
    )
    assert (code, err) == (0, "")
    answer = json.loads(out)
    assert valid_consultation_id(answer["id"])
    assert (answer["title"], answer["video_codec"]) == ("Knee", "H264")
    assert answer["consent"]["confirmed_by"] == "Dr. Bat"
    assert answer["consent"]["method"] == "paper"
    assert set(answer["links"]) == set(PAGES)
    for key, link in answer["links"].items():
        base, _ = link_parts(link)
        assert base == "http://127.0.0.1:8080"
        invite = invite_of(data_dir, link)
        assert invite.page == PAGES[key]
        assert (invite.role, invite.consultation_id) == (
            Role.SURGEON if key == "replay" else Role(key),
            answer["id"],
        )


def test_consult_create_prints_readable_links(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code, out, _ = run(capsys, "consult", "create", "--data-dir", str(data_dir))
    assert code == 0
    assert "consent: not recorded" in out
    links = re.findall(r"^  (clinic|surgeon|observer|replay): +(\S+)$", out, re.MULTILINE)
    assert [role for role, _ in links] == ["clinic", "surgeon", "observer", "replay"]
    for _, link in links:
        link_parts(link)


def test_the_data_dir_defaults_to_the_environment_variable(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDOLINK_DATA_DIR", str(data_dir))
    code, out, _ = run(capsys, "consult", "create", "--json")
    assert code == 0
    assert (data_dir / "endolink.sqlite3").exists()
    assert invite_of(data_dir, json.loads(out)["links"]["clinic"]).role is Role.CLINIC


def test_token_prints_only_a_token_with_the_requested_rights(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    cid = create_consultation(capsys, data_dir)["id"]
    code, out, err = run(
        capsys,
        "token",
        "--consultation",
        cid,
        "--role",
        "surgeon",
        "--ttl",
        "30m",
        "--name",
        "Dr. Who",
        "--data-dir",
        str(data_dir),
    )
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    grant = verify(data_dir, out.strip())
    assert (grant.role, grant.cid, grant.name) == (Role.SURGEON, cid, "Dr. Who")
    assert abs(grant.expires_at - (time.time() + 1800)) < 5


@pytest.mark.parametrize("consultation", [[], ["--consultation", "*"]])
def test_an_admin_token_without_consultation_covers_all(
    capsys: pytest.CaptureFixture[str], data_dir: Path, consultation: list[str]
) -> None:
    code, out, _ = run(
        capsys, "token", "--role", "admin", *consultation, "--data-dir", str(data_dir)
    )
    assert code == 0
    grant = verify(data_dir, out.strip())
    assert (grant.role, grant.cid) == (Role.ADMIN, ANY_CONSULTATION)


def test_a_participant_token_needs_a_consultation(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code, out, err = run(capsys, "token", "--role", "clinic", "--data-dir", str(data_dir))
    assert (code, out) == (2, "")
    assert "--consultation is required" in err


@pytest.mark.parametrize("with_database", [True, False])
def test_a_token_for_an_unknown_consultation_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], data_dir: Path, with_database: bool
) -> None:
    if with_database:
        create_consultation(capsys, data_dir)
    code, out, err = run(
        capsys,
        "token",
        "--consultation",
        "nosuch123",
        "--role",
        "clinic",
        "--data-dir",
        str(data_dir),
    )
    assert (code, out) == (1, "")
    assert err.startswith("endolink: error: unknown consultation 'nosuch123'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--role", "king"],
        ["token", "--role", "admin", "--ttl", "soon"],
        ["consult", "create", "--codec", "AV1"],
        [],
    ],
)
def test_usage_errors_exit_with_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert "usage:" in err


def test_help_exits_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "serve" in out and "publish" in out


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90s", 90), ("30m", 1800), ("6h", 21600), ("7D", 604800)]
)
def test_durations_accept_seconds_and_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_a_corrupt_environment_setting_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDOLINK_VIDEO_CODEC", "AV1")
    code, _, err = run(capsys, "consult", "create", "--data-dir", str(data_dir))
    assert code == 1
    assert err.startswith("endolink: error: unsupported video codec")


def test_certs_makes_a_ca_and_a_server_certificate_for_the_given_names(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code, out, _ = run(
        capsys,
        "certs",
        "--hostname",
        "cart.local",
        "--hostname",
        "10.0.0.7",
        "--data-dir",
        str(data_dir),
    )
    assert code == 0
    certs = data_dir / "certs"
    assert f"CA certificate:     {certs / 'ca.pem'}" in out
    assert "update-ca-certificates" in out
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["cart.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]


def test_certs_dtls_client_makes_a_p256_certificate_for_ffmpeg(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "certs", "--dtls-client", str(tmp_path / "kit"))
    assert code == 0
    cert_path, key_path = tmp_path / "kit" / "dtls-cert.pem", tmp_path / "kit" / "dtls-key.pem"
    assert f"-cert_file {cert_path} -key_file {key_path}" in out
    key = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "kit" / "ca.pem").exists()


def test_certs_defaults_to_this_machines_names(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert run(capsys, "certs", "--data-dir", str(data_dir))[0] == 0
    server = x509.load_pem_x509_certificate((data_dir / "certs" / "server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sans.get_values_for_type(x509.DNSName)
    assert "localhost" in names and socket.gethostname() in names
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_publishing_a_missing_file_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "publish",
        "--url",
        "http://127.0.0.1:9/whip/abcdef1",
        "--token",
        "x",
        str(tmp_path / "missing.mp4"),
    )
    assert code == 1
    assert err.startswith("endolink: error:") and err.count("\n") == 1


def test_a_refused_publish_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from client import whip as whip_client

    async def refused(
        url: str, token: str, source: str, options: object = None, *, relay_only: bool = False
    ) -> None:
        raise whip_client.WhipError(403, "token is for another consultation")

    monkeypatch.setattr(whip_client, "publish_source", refused)
    code, _, err = run(capsys, "publish", "--url", "http://x/whip/abcdef1", "--token", "t", "a.mp4")
    assert code == 1
    assert (
        err == "endolink: error: publishing failed: HTTP 403: token is for another consultation\n"
    )


# --- serve, as a real process ---------------------------------------------------------------


def read_lines(proc: subprocess.Popen[str], into: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line.rstrip("\n"))
    into.put(None)  # the process ended


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., list[str]]]:
    """serve(*args) starts ``endolink serve``; returns its stdout lines up to the server URL."""
    running: list[tuple[subprocess.Popen[str], threading.Thread]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDOLINK_")}
    env["PYTHONPATH"] = str(REPO_ROOT)  # the checkout under test, however it is installed
    log_path = tmp_path / "serve.log"

    def start(*args: str) -> list[str]:
        command = [sys.executable, "-m", "signaling", "serve", "--port", str(free_port())]
        command += ["--data-dir", str(tmp_path / "data"), *args]
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=tmp_path
            )
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=read_lines, args=(proc, lines), daemon=True)
        reader.start()
        running.append((proc, reader))
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while not seen or not seen[-1].startswith("EndoLink server:"):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"server did not start: {seen}\n{log_path.read_text()}")
            seen.append(line)
        return seen

    yield start
    for proc, reader in running:
        proc.terminate()
        code = proc.wait(20)
        reader.join(5)
        proc.stdout.close()  # type: ignore[union-attr]
        assert code == 0, log_path.read_text()


def get_json(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=context) as r:
        return json.load(r)


def join_link(link: str) -> dict[str, Any]:
    """What the page at a short link gets from the server it points to."""
    base, code = link_parts(link)
    body = json.dumps({"code": code}).encode()
    request = urllib.request.Request(
        f"{base}/api/join", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as r:
        answer: dict[str, Any] = json.load(r)
        return answer


def printed_links(output: str) -> dict[str, str]:
    return dict(re.findall(r"^  (clinic|surgeon|observer|replay): +(\S+)$", output, re.M))


def test_serve_demo_prints_links_that_work(serve: Callable[..., list[str]]) -> None:
    output = serve("--demo")
    base = output[-1].split()[2]
    links = printed_links("\n".join(output))
    assert set(links) == set(PAGES)
    answers = {key: join_link(link) for key, link in links.items()}
    assert all(link.startswith(f"{base}/j/") for link in links.values())
    assert {key: answer["page"] for key, answer in answers.items()} == PAGES
    tokens = {key: answer["token"] for key, answer in answers.items()}
    session = get_json(f"{base}/api/session", tokens["clinic"])
    assert session["role"] == "clinic"
    consultation = get_json(
        f"{base}/api/consultations/{session['consultation']}", tokens["surgeon"]
    )
    assert consultation["title"] == "Demo consultation"
    assert consultation["consent"]["confirmed_by"] == "demo (paper form on file)"


def test_consult_create_beside_a_running_server_prints_its_address(
    serve: Callable[..., list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve()[-1].split()[2]
    assert not base.endswith(":8080")
    code, out, _ = run(capsys, "consult", "create", "--data-dir", str(tmp_path / "data"))
    assert code == 0
    links = printed_links(out)
    assert set(links) == set(PAGES)
    assert all(link.startswith(f"{base}/j/") for link in links.values())
    assert join_link(links["replay"])["page"] == "replay"


def test_serve_tls_makes_certificates_on_first_run(
    serve: Callable[..., list[str]], tmp_path: Path
) -> None:
    output = serve("--tls")
    ca_path = tmp_path / "data" / "certs" / "ca.pem"
    assert any(str(ca_path) in line for line in output)
    base = output[-1].split()[2]
    assert base.startswith("https://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{base}/api/session", context=ssl.create_default_context(cafile=ca_path))
    refused.value.close()
    assert refused.value.code == 401


def test_the_cli_starts_without_loading_the_media_stack() -> None:
    """``endolink token`` or ``consult create`` must not pay for aiortc, PyAV and OpenCV (the
    grants and the store name consultations through ``relay``'s light identifiers)."""
    code = (
        "import signaling.cli, sys; print([m for m in ('aiortc', 'av', 'cv2') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- consult invite / revoke, and the address printed links use ----------------------------


def test_consult_invite_prints_one_short_link_and_revoke_withdraws_it(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    cid = create_consultation(capsys, data_dir)["id"]
    base = ["--data-dir", str(data_dir)]
    argv = ["consult", "invite", "--consultation", cid, "--role", "observer", "--ttl", "1h"]
    code, out, err = run(capsys, *argv, *base)
    assert (code, err) == (0, "")
    link = out.strip()
    invite = invite_of(data_dir, link)
    assert (invite.role, invite.page, invite.consultation_id) == (Role.OBSERVER, "surgeon", cid)
    assert abs(invite.expires_at - time.time() - 3600) < 5
    code, out, _ = run(capsys, "consult", "revoke", link, *base)
    assert code == 0 and out.startswith("withdrawn: observer link")
    assert invite_of(data_dir, link).revoked_at is not None
    code, _, err = run(capsys, "consult", "revoke", link_parts(link)[1].upper(), *base)
    assert code == 0, err  # by code alone, in any case; revoking twice is harmless


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (["--role", "clinic", "--replay"], 2, "--replay links are surgeon links"),
        (["--role", "admin"], 2, "invalid choice"),
        (["--role", "clinic", "--consultation", "nosuch123"], 1, "unknown consultation"),
    ],
)
def test_consult_invite_refuses_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str],
    data_dir: Path,
    argv: list[str],
    exit_code: int,
    message: str,
) -> None:
    cid = create_consultation(capsys, data_dir)["id"]
    if "--consultation" not in argv:
        argv = [*argv, "--consultation", cid]
    code, out, err = run(capsys, "consult", "invite", *argv, "--data-dir", str(data_dir))
    assert (code, out) == (exit_code, "")
    assert message in err


def test_revoking_an_unknown_link_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    create_consultation(capsys, data_dir)
    code, out, err = run(
        capsys, "consult", "revoke", "http://h/j/aaaa-bbbb-cccc", "--data-dir", str(data_dir)
    )
    assert (code, out) == (1, "")
    assert err.startswith("endolink: error: no invite has this link") and err.count("\n") == 1


def test_links_ignore_the_address_of_a_server_that_is_gone(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    data_dir.mkdir(parents=True)
    (data_dir / "server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": int(gone.stdout)})
    )
    answer = create_consultation(capsys, data_dir)
    assert {link_parts(link)[0] for link in answer["links"].values()} == {"http://127.0.0.1:8080"}


def test_printed_links_use_the_public_url(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDOLINK_PUBLIC_URL", "https://endolink.example.org/")
    answer = create_consultation(capsys, data_dir)
    assert all(
        link_parts(link)[0] == "https://endolink.example.org" for link in answer["links"].values()
    )
