"""A Safari-shaped offer (WebKit's libwebrtc, as Safari sends it: H.264 High and Constrained
Baseline first, then VP8, each with rtx, RED and ULPFEC, its full ``a=extmap`` set, BUNDLE, every
candidate in the offer and no trickle) gets a valid answer from a real ``endolink serve`` on both
WHIP and WHEP, for either codec. Only the SDP is Safari's: no Safari runs here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiortc.sdp import SessionDescription

from bench.common import delete_session, post_sdp
from signaling.auth.grants import Role
from tests.interop.support import served

pytestmark = pytest.mark.timeout(60)

OFFER = Path(__file__).with_name("safari_offer.sdp")
CLIENT = "Safari-shaped offer (SDP only)"
ROLES = {"whip": ("publish", "sendonly", Role.CLINIC), "whep": ("play", "recvonly", Role.SURGEON)}
CODECS = {"H264": ("H.264", 98, "42e01f"), "VP8": ("VP8", 100, None)}
"Consultation codec → (table name, the offer's payload type to be chosen, profile-level-id)."


def safari_offer(direction: str) -> str:
    """The offer with ``direction`` in both sections; a receive-only Safari announces no SSRCs."""
    lines = OFFER.read_text().replace("{direction}", direction).splitlines()
    if direction == "recvonly":
        lines = [line for line in lines if not line.startswith(("a=ssrc", "a=msid:"))]
    return "\r\n".join(lines) + "\r\n"


def cases() -> list[object]:
    return [
        pytest.param(
            protocol,
            codec,
            marks=pytest.mark.interop(
                client=CLIENT, role=ROLES[protocol][0], codec=CODECS[codec][0]
            ),
            id=f"{protocol}-{codec}",
        )
        for protocol in ROLES
        for codec in CODECS
    ]


@pytest.mark.parametrize(("protocol", "codec"), cases())
async def test_a_safari_shaped_offer_gets_a_valid_answer(
    protocol: str, codec: str, tmp_path: Path
) -> None:
    _, direction, role = ROLES[protocol]
    offer = safari_offer(direction)
    async with served(tmp_path, codec) as s:
        token = s.token(role)
        answer, location = await post_sdp(s.endpoint(protocol), token, offer)
        await delete_session(location, token)
    parsed = SessionDescription.parse(answer)
    assert [m.kind for m in parsed.media] == ["audio", "video"]
    assert [(g.semantic, g.items) for g in parsed.group] == [("BUNDLE", ["0", "1"])]
    offered_extensions = set(re.findall(r"^a=extmap:(\d+) (\S+)", offer, re.M))
    for media in parsed.media:
        assert media.direction == {"sendonly": "recvonly", "recvonly": "sendonly"}[direction]
        assert media.dtls is not None and media.dtls.role in ("client", "server")
        assert media.dtls.fingerprints and media.ice is not None and media.ice.usernameFragment
        assert media.rtcp_mux
        assert media.ice_candidates, "no candidate: the offer does not trickle, nor may the answer"
        first = media.ice_candidates[0]
        assert (first.type, first.ip) == ("host", "127.0.0.1")  # FFmpeg too uses only the first
        extensions = {(str(e.id), e.uri) for e in media.rtp.headerExtensions}
        assert extensions <= offered_extensions, extensions - offered_extensions
    audio, video = parsed.media
    assert [c.mimeType for c in audio.rtp.codecs] == ["audio/opus"]
    _, payload_type, profile = CODECS[codec]
    chosen = [c for c in video.rtp.codecs if c.mimeType != "video/rtx"]
    assert [c.payloadType for c in chosen] == [payload_type], video.rtp.codecs
    if profile is not None:
        assert chosen[0].parameters["profile-level-id"] == profile
    retransmission = [c for c in video.rtp.codecs if c.mimeType == "video/rtx"]
    assert [c.parameters for c in retransmission] == [{"apt": payload_type}]
