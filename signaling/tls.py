"""A local certificate authority and a server certificate signed by it.

Browsers only grant camera and microphone access on secure origins, so a clinic reaching the
server by LAN address needs HTTPS. Trusting one local CA on each device (instead of clicking
through a self-signed warning) keeps certificate errors meaningful; the CA is kept and reused
when the server certificate is renewed, so devices trust it once.

The CA's key stays in ``<data>/certs``. So that a thief of it cannot mint certificates for other
sites that every device trusting the CA would accept, the CA carries a critical Name Constraints
extension permitting only the names and addresses it was made for: a certificate for any other
name fails verification (OpenSSL, browsers). A certificate for a name outside them needs a new CA
(``endolink certs --new-ca``), which every device must trust again; a CA made before the
constraints existed is reused as it is until then.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from persistence.files import Sync, write_bytes_atomic

logger = logging.getLogger(__name__)

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
DTLS_CERT = "dtls-cert.pem"
DTLS_KEY = "dtls-key.pem"
CA_VALIDITY = timedelta(days=3650)
# Browsers reject server certificates valid for longer than 825 days.
SERVER_VALIDITY = timedelta(days=825)
# A WebRTC peer's DTLS certificate is pinned by its SDP fingerprint, not by a CA: its validity only
# has to outlast the kit's configuration.
DTLS_VALIDITY = timedelta(days=3650)
# Tolerates devices whose clock runs a little behind.
BACKDATE = timedelta(hours=1)


def make_certificates(
    certs_dir: Path, hostnames: list[str], *, new_ca: bool = False
) -> tuple[Path, Path, Path]:
    """Create (or reuse, unless ``new_ca``) the CA and issue a new server certificate for
    ``hostnames``.

    Returns ``(ca.pem, server.pem, server-key.pem)``. Entries that parse as IP addresses become
    IP subject alternative names, the others DNS names. A reused CA must permit every name.
    """
    names = list(dict.fromkeys(h.strip() for h in hostnames if h.strip()))
    if not names:
        raise ValueError("at least one hostname is needed for the server certificate")
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_create_ca(certs_dir, names, new_ca)

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = certs_dir / SERVER_CERT, certs_dir / SERVER_KEY
    _write(server_key, _key_pem(key), private=True)
    _write(server_cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    logger.info("server certificate for %s written to %s", ", ".join(names), server_cert)
    return certs_dir / CA_CERT, server_cert, server_key


def make_dtls_client_certificate(out_dir: Path) -> tuple[Path, Path]:
    """A self-signed P-256 DTLS certificate and key for hospital kit that makes its own on a curve
    the relay cannot use: FFmpeg built on GnuTLS (the PyAV wheel's among them) picks P-224,
    which the relay's OpenSSL refuses; ``-cert_file``/``-key_file`` give FFmpeg this one instead.

    Returns ``(dtls-cert.pem, dtls-key.pem)``; an existing pair is replaced.
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EndoLink DTLS client")])
    cert = _self_signed(key, name, DTLS_VALIDITY).sign(key, hashes.SHA256())
    cert_path, key_path = out_dir / DTLS_CERT, out_dir / DTLS_KEY
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path, key_path


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server-side TLS (1.2 or newer) with the given certificate and key."""
    for path in (cert, key):
        if not path.is_file():
            raise FileNotFoundError(f"TLS file {path} not found: run `endolink certs` first")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _load_or_create_ca(
    certs_dir: Path, names: list[str], new_ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = certs_dir / CA_CERT, certs_dir / CA_KEY
    if not new_ca and (cert_path.exists() or key_path.exists()):
        if not (cert_path.exists() and key_path.exists()):
            raise FileNotFoundError(
                f"{cert_path} and {key_path} must both exist: restore the missing one, "
                "or remove both to create a new CA (every device must then trust it again)"
            )
        ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EndoLink CA key (expected EC)")
        outside = [n for n in names if not _permitted(ca_cert, _general_name(n))]
        if outside:
            raise ValueError(
                "the local CA may only certify the names it was made for, "
                f"not {', '.join(outside)}: run `endolink certs --new-ca` with every name "
                "(every device must then trust the new CA again)"
            )
        return ca_cert, ca_key

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EndoLink"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"EndoLink local CA ({names[0]})"),
        ]
    )
    cert = (
        _self_signed(key, name, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(_name_constraints(names), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    logger.info("new local CA written to %s", cert_path)
    return cert, key


def _self_signed(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, validity: timedelta
) -> x509.CertificateBuilder:
    """A certificate of ``key`` issued by itself, valid from a little before now."""
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name_constraints(names: list[str]) -> x509.NameConstraints:
    """Only these names (and DNS names below them) and exactly these addresses."""
    subtrees: list[x509.GeneralName] = []
    for name in names:
        general = _general_name(name)
        if isinstance(general, x509.IPAddress):
            general = x509.IPAddress(ipaddress.ip_network(general.value))
        subtrees.append(general)
    return x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None)


def _permitted(ca_cert: x509.Certificate, name: x509.GeneralName) -> bool:
    """Whether ``ca_cert`` may certify ``name`` (a CA without constraints: anything)."""
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    for subtree in constraints.permitted_subtrees or ():
        if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
            network = subtree.value
            if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
                if name.value in network:
                    return True
        elif isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
            base = subtree.value.lower().lstrip(".")
            if name.value.lower() == base or name.value.lower().endswith("." + base):
                return True
    return False


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Replace ``path`` atomically; private keys are never readable by others, even briefly."""
    write_bytes_atomic(path, data, mode=0o600 if private else 0o644, sync=Sync.NONE)
