"""Peers with an RSA certificate (GStreamer 1.22's webrtcbin always makes an RSA-2048 one) publish
to and play from the relay (``relay/dtls.py``); ECDSA peers (browsers, aiortc) still do.

The relay answers a client's ``a=setup:actpass`` with ``active``, so it is the DTLS client and
the RSA peer the server: the handshake works only if the relay offers an ECDHE-RSA suite."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCCertificate, RTCSessionDescription
from aiortc.rtcdtlstransport import SRTPProtectionProfile, generate_certificate
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from relay.dtls import use_certificate
from signaling.db.store import Consultation
from tests.conftest import MakeToken
from tests.peers import Received, new_pc, publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url

SIZE = (640, 360)
"Small enough for one process to encode and decode it at full rate on a busy 2-core machine."
RSA_SUITES = b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
"What an RSA-certificate DTLS server can pick from (OpenSSL's defaults, as in webrtcbin)."


class RsaCertificate(RTCCertificate):
    """A self-signed RSA-2048 certificate, the kind GStreamer's DTLS agent makes."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # aiortc's self-signed certificate maker, given an RSA key (its hints say EC only)
        cert = generate_certificate(key)  # type: ignore[arg-type]
        super().__init__(key, cert)  # type: ignore[arg-type]

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(RSA_SUITES)
        return context


def certificate(kind: str) -> RTCCertificate:
    return RsaCertificate() if kind == "RSA" else RTCCertificate.generateCertificate()


async def frames_arrive(received: Received) -> None:
    """40 more decoded frames: full size, in order, hardly any of the pattern's missing (counted
    against the pattern's own counters, not wall time: a loaded box only makes them later)."""
    assert await wait_until(lambda: received.counters, timeout=10), "no frame decoded"
    before = len(received.counters)
    assert await wait_until(lambda: len(received.counters) >= before + 40, timeout=15)
    got = received.counters[before - 1 :]
    made = got[-1] - got[0] + 1
    assert len(got) >= 0.9 * made, f"{len(got)} of {made} frames arrived"
    assert received.sizes == {SIZE}
    assert all(b > a for a, b in zip(received.counters, received.counters[1:], strict=False))


@pytest.mark.parametrize(
    ("publisher_key", "viewer_key"), [("RSA", "ECDSA"), ("ECDSA", "RSA"), ("ECDSA", "ECDSA")]
)
async def test_rsa_and_ecdsa_certificate_peers_publish_and_play(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    publisher_key: str,
    viewer_key: str,
) -> None:
    cid = consultation.id
    async with (
        publisher(
            url(client, f"/whip/{cid}"),
            make_token("clinic", cid),
            audio=False,
            certificate=certificate(publisher_key),
            size=SIZE,
        ) as (clinic, _),
        viewer(
            url(client, f"/whep/{cid}"),
            make_token("surgeon", cid),
            kinds=("video",),
            certificate=certificate(viewer_key),
        ) as (surgeon, _, received),
    ):
        await frames_arrive(received)
        assert clinic.connectionState == surgeon.connectionState == "connected"


async def test_stock_aiortc_and_an_rsa_peer_share_no_cipher() -> None:
    """Why ``relay/dtls.py`` exists: aiortc as DTLS client (it answered ``active``) offers only
    ECDSA suites. Should an aiortc upgrade fix that, this fails and the module can go."""
    rsa_peer, stock = new_pc(), new_pc()
    use_certificate(rsa_peer, RsaCertificate())
    rsa_peer.addTransceiver("video", direction="sendonly")
    try:
        await rsa_peer.setLocalDescription(await rsa_peer.createOffer())
        await stock.setRemoteDescription(rsa_peer.localDescription)
        await stock.setLocalDescription(await stock.createAnswer())
        assert "a=setup:active" in stock.localDescription.sdp
        answer = RTCSessionDescription(sdp=stock.localDescription.sdp, type="answer")
        await rsa_peer.setRemoteDescription(answer)
        assert await wait_until(lambda: stock.connectionState == "failed", timeout=10)
    finally:
        await asyncio.gather(rsa_peer.close(), stock.close())
