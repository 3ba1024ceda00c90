"""Offer vetting: any text either parses into a usable offer or raises a RelayError (400/422)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import MediaUnsupported, RelayError, SdpInvalid
from relay.sdp import parse_offer, with_bitrate_hints
from signaling.db.store import Consultation
from tests.conftest import MakeToken
from tests.peers import publisher
from tests.relay.test_forwarding_flow import url

MINIMAL = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:"
    "88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\n"
)


def test_a_minimal_browser_like_offer_is_accepted() -> None:
    assert [m.kind for m in parse_offer(MINIMAL, sending=True).media] == ["video"]


def test_data_channels_are_refused_with_422() -> None:
    offer = MINIMAL.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=application 9 UDP/DTLS/SCTP 5000")
    try:
        parse_offer(offer, sending=True)
    except MediaUnsupported as exc:
        assert "application" in str(exc) and exc.status == 422
    else:
        raise AssertionError("expected 422")


def test_two_video_tracks_are_refused_with_422() -> None:
    media = MINIMAL[MINIMAL.index("m=video") :].replace("a=mid:0", "a=mid:1")
    try:
        parse_offer(MINIMAL + media, sending=True)
    except MediaUnsupported as exc:
        assert "at most one video" in str(exc) and exc.status == 422
    else:
        raise AssertionError("expected 422")


def test_missing_rtcp_mux_is_400() -> None:
    try:
        parse_offer(MINIMAL.replace("a=rtcp-mux\r\n", ""), sending=True)
    except SdpInvalid as exc:
        assert "rtcp-mux" in str(exc)
    else:
        raise AssertionError("expected 400")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_escapes_as_anything_but_a_relay_error(text: str) -> None:
    for body in (text, "v=0\r\n" + text, MINIMAL + text):
        try:
            parse_offer(body, sending=True)
        except RelayError:
            pass


def test_bitrate_hints_go_on_every_video_codec_but_not_on_rtx_or_audio() -> None:
    answer = (
        "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=video 9 X 97 98 99\r\na=rtpmap:97 VP8/90000\r\na=rtpmap:98 rtx/90000\r\n"
        "a=fmtp:98 apt=97\r\na=rtpmap:99 H264/90000\r\na=fmtp:99 packetization-mode=1\r\n"
    )
    hinted = with_bitrate_hints(answer, 2000, 600, 4000).split("\r\n")
    hints = "x-google-start-bitrate=2000;x-google-min-bitrate=600;x-google-max-bitrate=4000"
    assert f"a=fmtp:97 {hints}" in hinted
    assert f"a=fmtp:99 packetization-mode=1;{hints}" in hinted
    assert "a=fmtp:98 apt=97" in hinted
    assert not any("x-google" in line and "111" in line for line in hinted)


async def test_the_publishers_answer_carries_the_default_hints_low_floor_and_720p_start(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """A real WHIP answer: a floor low enough that Chrome can follow a 600 or 400 kbit/s uplink
    (``x-google-min-bitrate`` is a hard floor for its estimate), a start at 720p's rate."""
    cid = consultation.id
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)) as (pc, _):
        answer = pc.remoteDescription.sdp
    sections = {section.split()[0]: section for section in answer.split("m=")[1:]}
    hints = "x-google-start-bitrate=1500;x-google-min-bitrate=150;x-google-max-bitrate=4000"
    assert hints in sections["video"]
    assert "x-google" not in sections["audio"]
