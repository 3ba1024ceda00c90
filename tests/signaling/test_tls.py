"""The local CA signs a server certificate that a client trusting only ca.pem accepts."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signaling.tls import make_certificates, ssl_context

HOSTNAMES = ["localhost", "127.0.0.1", "::1", "endoscopy-cart.local"]


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path / "certs", HOSTNAMES)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> str:
    """Echo one message over TLS on 127.0.0.1; returns the negotiated protocol version."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
                try:
                    tls.do_handshake()
                    tls.sendall(tls.recv(16))
                except (ssl.SSLError, OSError):
                    pass  # the client refused us: the client side reports it

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(
                    raw, server_hostname=server_hostname, do_handshake_on_connect=False
                ) as tls,
            ):
                tls.do_handshake()
                tls.sendall(b"ping")
                assert tls.recv(16) == b"ping"
                return str(tls.version())
        finally:
            thread.join(5)


def test_the_files_are_made_with_private_keys_readable_only_by_the_owner(
    certs: tuple[Path, Path, Path],
) -> None:
    ca_cert, server_cert, server_key = certs
    assert [p.name for p in certs] == ["ca.pem", "server.pem", "server-key.pem"]
    ca_key = ca_cert.with_name("ca-key.pem")
    for key in (server_key, ca_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(server_cert.stat().st_mode) == 0o644


def test_the_ca_is_a_ca_valid_for_ten_years(certs: tuple[Path, Path, Path]) -> None:
    ca = load(certs[0])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = ca.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3640) < lifetime <= timedelta(days=3650)


def test_the_server_certificate_is_signed_by_the_ca_for_every_hostname(
    certs: tuple[Path, Path, Path],
) -> None:
    ca, server = load(certs[0]), load(certs[1])
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "endoscopy-cart.local"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = server.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=820) < lifetime <= timedelta(days=825)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_a_client_trusting_only_the_ca_completes_a_tls_handshake(
    certs: tuple[Path, Path, Path], server_hostname: str
) -> None:
    ca_cert, server_cert, server_key = certs
    client = ssl.create_default_context(cafile=ca_cert)
    version = handshake(ssl_context(server_cert, server_key), client, server_hostname)
    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_hostname_missing_from_the_certificate_fails_verification(
    certs: tuple[Path, Path, Path],
) -> None:
    ca_cert, server_cert, server_key = certs
    client = ssl.create_default_context(cafile=ca_cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl_context(server_cert, server_key), client, "example.org")


def test_the_server_refuses_tls_older_than_1_2(certs: tuple[Path, Path, Path]) -> None:
    assert ssl_context(certs[1], certs[2]).minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_second_run_reuses_the_ca_and_issues_a_new_server_certificate(
    tmp_path: Path, certs: tuple[Path, Path, Path]
) -> None:
    ca_before, server_before = certs[0].read_bytes(), load(certs[1])
    ca_cert, server_cert, _ = make_certificates(tmp_path / "certs", ["endoscopy-cart.local"])
    assert ca_cert.read_bytes() == ca_before
    server = load(server_cert)
    assert server.serial_number != server_before.serial_number
    server.verify_directly_issued_by(load(ca_cert))


def test_a_ca_certificate_without_its_key_is_reported(
    tmp_path: Path, certs: tuple[Path, Path, Path]
) -> None:
    (tmp_path / "certs" / "ca-key.pem").unlink()
    with pytest.raises(FileNotFoundError, match="must both exist"):
        make_certificates(tmp_path / "certs", ["localhost"])


def test_no_hostname_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hostname"):
        make_certificates(tmp_path, [" ", ""])


def test_missing_certificate_files_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="endolink certs"):
        ssl_context(tmp_path / "server.pem", tmp_path / "server-key.pem")


def forged(certs_dir: Path, name: str) -> tuple[Path, Path]:
    """What a thief of ca-key.pem would make: a server certificate for ``name``, signed by the
    CA (written beside the real files, for ``ssl_context``)."""
    ca_key = serialization.load_pem_private_key((certs_dir / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    general: x509.GeneralName
    try:
        general = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        general = x509.DNSName(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(load(certs_dir / "ca.pem").subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([general]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = certs_dir / "forged.pem", certs_dir / "forged-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("name", ["bank.example", "10.1.2.3", "localhost.bank.example"])
def test_a_certificate_the_stolen_ca_key_makes_for_another_name_fails_verification(
    certs: tuple[Path, Path, Path], name: str
) -> None:
    ca_cert, server_cert, server_key = certs
    constraints = load(ca_cert).extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    client = ssl.create_default_context(cafile=ca_cert)
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)name constraint|permitted"):
        handshake(ssl_context(*forged(ca_cert.parent, name)), client, name)
    assert handshake(ssl_context(server_cert, server_key), client, "endoscopy-cart.local")


def test_a_name_the_ca_was_not_made_for_needs_a_new_ca(
    tmp_path: Path, certs: tuple[Path, Path, Path]
) -> None:
    ca_before = certs[0].read_bytes()
    with pytest.raises(ValueError, match="--new-ca"):
        make_certificates(tmp_path / "certs", ["localhost", "new-name.local"])
    assert certs[0].read_bytes() == ca_before
    ca_cert, server_cert, server_key = make_certificates(
        tmp_path / "certs", ["localhost", "new-name.local"], new_ca=True
    )
    assert ca_cert.read_bytes() != ca_before
    client = ssl.create_default_context(cafile=ca_cert)
    assert handshake(ssl_context(server_cert, server_key), client, "new-name.local")
