"""The relay's DTLS: let peers with an RSA certificate connect, and say why a handshake failed
(written against aiortc 1.16.0, whose version guard is in ``relay.forwarding``).

To a client's ``a=setup:actpass`` offer aiortc answers ``active``: the relay is the DTLS client,
and the client's certificate decides which cipher suites it can accept as server. aiortc's
context offers only ECDHE-ECDSA suites, so a client with an RSA certificate (GStreamer 1.22
webrtcbin always makes RSA-2048 ones) fails the handshake with "no shared cipher". The relay's
own certificate stays ECDSA P-256; its context also offers the ECDHE-RSA suites (same AEADs and
ciphers, same order). Answering ``a=setup:passive`` instead would work too, but needs a private
role setter and changes who starts the handshake for every client; this changes only the list.
"""

from __future__ import annotations

from aiortc import RTCCertificate, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

# Importing forwarding also checks the aiortc version (AIORTC_VERSION).
from . import forwarding

CIPHERS = b":".join(
    f"ECDHE-{key}-{cipher}".encode()
    for key in ("ECDSA", "RSA")
    for cipher in ("AES128-GCM-SHA256", "CHACHA20-POLY1305", "AES128-SHA", "AES256-SHA")
)
"aiortc's four ECDHE-ECDSA suites, then the same four for RSA-certificate peers."


class RelayCertificate(RTCCertificate):
    """aiortc's certificate (ECDSA P-256), with a context that also offers ECDHE-RSA suites."""

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(CIPHERS)
        return context


def use_certificate(pc: RTCPeerConnection, certificate: RTCCertificate) -> None:
    """Give ``pc`` this DTLS certificate: aiortc makes one per connection and has no setter.
    Before the first description is applied (the DTLS transports take it from there)."""
    pc._RTCPeerConnection__certificates = [certificate]  # type: ignore[attr-defined]


def accept_rsa_peers(pc: RTCPeerConnection) -> None:
    """Let ``pc`` shake hands with RSA-certificate peers as well as ECDSA ones."""
    use_certificate(pc, RelayCertificate.generateCertificate())


USABLE_CURVES = ("secp256r1", "secp384r1", "secp521r1")
"The curves the relay's OpenSSL accepts for a peer's DTLS key (P-224 is not among them)."


def dtls_failure(pc: RTCPeerConnection) -> str | None:
    """Why ``pc``'s DTLS handshake failed, when the peer's certificate says it; else None."""
    for dtls in forwarding.dtls_transports(pc):
        if dtls.state != "failed" or dtls._ssl is None:
            continue
        peer = dtls._ssl.get_peer_certificate(as_cryptography=True)
        key = peer.public_key() if peer is not None else None
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in USABLE_CURVES:
            return (
                f"peer DTLS certificate on an unsupported curve ({key.curve.name}; FFmpeg/GnuTLS"
                " P-224): give FFmpeg a P-256 cert_file/key_file (endolink certs --dtls-client)"
            )
    return None
