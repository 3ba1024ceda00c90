"""Offer checks done before aiortc sees an SDP, so a hostile or broken offer gets a precise
WHIP/WHEP error (400 / 422) instead of an exception deep inside the peer connection."""

from __future__ import annotations

import ipaddress
import re

from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .errors import MediaUnsupported, SdpInvalid, TooManyTracks

SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
_NUMBER = re.compile(r"[0-9]{1,10}")
"ASCII digits only: ``str.isdigit`` also takes ``²``, which ``int`` then refuses."
_MDNS_NAME = re.compile(r"[A-Za-z0-9-]{1,63}\.local", re.ASCII)
"A browser hides its host address behind ``<uuid>.local`` (RFC 8839 §5.1, mDNS)."
_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}\.?", re.ASCII)
"An RFC 8839 connection-address may be a fully qualified domain name (the relay resolves none)."
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~A-Za-z0-9]{1,32}", re.ASCII)
"An RFC 4566 token: what a transport or candidate type may be, known or not."
_SDP_LINE = re.compile(r"[a-z]=\S.*", re.ASCII)


def parse_offer(sdp: str, sending: bool) -> SessionDescription:
    """Parse and vet an offer. ``sending``: the client publishes (WHIP) rather than plays (WHEP)."""
    if not sdp.lstrip().startswith("v=0"):
        raise SdpInvalid("body is not an SDP offer (must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise SdpInvalid(f"SDP could not be parsed: {exc.__class__.__name__}") from exc
    if not description.media:
        raise SdpInvalid("SDP offer has no media sections")
    kinds = [m.kind for m in description.media]
    for kind in set(kinds):
        if kind not in ("audio", "video"):
            raise MediaUnsupported(f"media kind {kind!r} is not supported (audio and video only)")
        if kinds.count(kind) > 1:
            raise TooManyTracks(f"at most one {kind} track per session (got {kinds.count(kind)})")
    _check_mids(sdp, description)
    wanted = SENDING if sending else RECEIVING
    for media in description.media:
        if media.direction not in wanted:
            verb = "publish" if sending else "view"
            raise SdpInvalid(
                f"{media.kind} direction {media.direction or 'unset'!r} cannot {verb}: "
                f"use {' or '.join(wanted)}"
            )
        ice = media.ice
        if ice is None or not ice.usernameFragment or not ice.password:
            raise SdpInvalid(f"{media.kind} section lacks ICE credentials (ice-ufrag/ice-pwd)")
        if not media.dtls or not media.dtls.fingerprints:
            raise SdpInvalid(f"{media.kind} section lacks a DTLS fingerprint")
        if not media.rtcp_mux:
            raise SdpInvalid(f"{media.kind} section must use rtcp-mux")
        if media.msid is not None and " " in media.msid and len(media.msid.split()) != 2:
            raise SdpInvalid(f"{media.kind} section's a=msid must be: stream-id track-id")
    return description


def _check_mids(sdp: str, description: SessionDescription) -> None:
    """Every media section names one distinct ``a=mid``, and a BUNDLE group (RFC 9725 uses
    max-bundle) holds exactly those mids: aiortc looks transports up by mid and fails with an
    AttributeError deep in the answer otherwise."""
    sections = re.split(r"^m=", sdp, flags=re.M)[1:]
    for section in sections:
        if len(re.findall(r"^a=mid:", section, re.M)) != 1:
            raise SdpInvalid("each media section needs exactly one a=mid line")
    mids = [media.rtp.muxId for media in description.media]
    if not all(mids):
        raise SdpInvalid("a media section has an empty a=mid")
    if len(set(mids)) != len(mids):
        raise SdpInvalid("two media sections share one a=mid")
    for group in description.group:
        if group.semantic == "BUNDLE" and sorted(group.items) != sorted(mids):
            raise SdpInvalid("the BUNDLE group must list every media section's a=mid, once")


def check_sdpfrag(sdpfrag: str) -> None:
    """An ``application/trickle-ice-sdpfrag`` body (RFC 8840 §9) is SDP lines, ``x=value``
    each: anything else is malformed, which RFC 9725 §4.3.1 answers with a 4xx."""
    for line in sdpfrag.splitlines():
        if line.strip() and not _SDP_LINE.fullmatch(line.rstrip()):
            raise SdpInvalid("not an SDP fragment: every line must read type=value (a=...)")


def parse_candidate(line: str) -> RTCIceCandidate | None:
    """One trickled ``a=candidate:`` value (RFC 8839 §5.1), checked field by field: aiortc's
    ``candidate_from_sdp`` asserts on a short line and converts numbers unguarded. A malformed
    one raises ``SdpInvalid``; a well-formed one the relay cannot use (a transport other than
    UDP/TCP, a type it does not know, a host name it will not resolve) is ``None``: RFC 9725
    §4.3.2 discards it silently and goes on with the rest of the PATCH."""
    bits = line.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise SdpInvalid(
            "a candidate needs: foundation component transport priority address port typ type"
        )
    component, priority, port = bits[1], bits[3], bits[5]
    if not all(_NUMBER.fullmatch(number) for number in (component, priority, port)):
        raise SdpInvalid("a candidate's component, priority and port must be numbers")
    if not (1 <= int(component) <= 256 and int(priority) < 2**32 and 0 < int(port) < 65536):
        raise SdpInvalid("a candidate's component, priority or port is out of range")
    if not all(_TOKEN.fullmatch(bit) for bit in (bits[0], bits[2], bits[7])):
        raise SdpInvalid("a candidate's foundation, transport and type must be plain tokens")
    address = bits[4]
    if not (_is_address(address) or _HOST_NAME.fullmatch(address)):
        raise SdpInvalid("a candidate's address must be an IP address or a host name")
    if len(bits) % 2:
        raise SdpInvalid("a candidate's extensions must come as name value pairs")
    rport = dict(zip(bits[8::2], bits[9::2], strict=True)).get("rport")
    if rport is not None and not (_NUMBER.fullmatch(rport) and int(rport) < 65536):
        raise SdpInvalid("a candidate's rport must be a port number")
    usable = bits[2].lower() in ("udp", "tcp") and bits[7] in CANDIDATE_TYPES
    return candidate_from_sdp(line) if usable and _is_address(address) else None


def _is_address(text: str) -> bool:
    if _MDNS_NAME.fullmatch(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def offered_codecs(description: SessionDescription, kind: str) -> set[str]:
    return {
        codec.mimeType.split("/", 1)[1].upper()
        for media in description.media
        if media.kind == kind
        for codec in media.rtp.codecs
    }


def with_bitrate_hints(answer: str, start_kbps: int, min_kbps: int, max_kbps: int) -> str:
    """Add Chrome's ``x-google-{start,min,max}-bitrate`` to the video codecs of an answer.

    Chrome starts a new video stream at ~300 kbit/s and ramps by the receiver's estimate;
    aiortc's REMB estimator is slow (≈30 s to 1 Mbit/s measured), and with
    ``maintain-resolution`` the clinic's 720p drops to 6–10 fps meanwhile. Starting near the
    target with a floor gives the surgeon diagnostic detail from the first seconds; congestion
    still pushes the rate down to the floor. Browsers that do not know the hints ignore them.
    """
    hints = (
        f"x-google-start-bitrate={start_kbps};x-google-min-bitrate={min_kbps};"
        f"x-google-max-bitrate={max_kbps}"
    )
    lines = answer.split("\r\n")
    out: list[str] = []
    in_video = False
    fmtp = {line.split()[0][len("a=fmtp:") :] for line in lines if line.startswith("a=fmtp:")}
    for line in lines:
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        if in_video and line.startswith("a=fmtp:") and "apt=" not in line:
            line = f"{line};{hints}"
        out.append(line)
        if in_video and line.startswith("a=rtpmap:"):
            pt, encoding = line[len("a=rtpmap:") :].split()[:2]
            if pt not in fmtp and not encoding.lower().startswith("rtx/"):
                out.append(f"a=fmtp:{pt} {hints}")
    return "\r\n".join(out)
