"""``relay.rtp_header.parse_rtp`` against aiortc's ``RtpPacket.parse``: the same packet, or the
same exception with the same message, for well-formed, odd and broken packets."""

from __future__ import annotations

import random
import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from relay.rtp_header import parse_rtp

URIS = {
    "mid": "urn:ietf:params:rtp-hdrext:sdes:mid",
    "repaired": "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "rid": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "abs": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "toffset": "urn:ietf:params:rtp-hdrext:toffset",
    "level": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "twcc": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
}
CHROME_IDS = {"level": 1, "abs": 2, "twcc": 3, "mid": 4, "rid": 10, "repaired": 11, "toffset": 14}
"Chrome's ids for these extensions, as in its offers."


def extensions_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    map_ = HeaderExtensionsMap()
    map_.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=x_id, uri=URIS[name])
                for name, x_id in ids.items()
            ]
        )
    )
    return map_


def outcome(parse: object, data: bytes, map_: HeaderExtensionsMap) -> object:
    """The parsed packet's fields, or the exception's type and message."""
    try:
        packet = parse(data, map_)  # type: ignore[operator]
    except Exception as exc:
        return (type(exc), str(exc))
    assert isinstance(packet, RtpPacket)
    return vars(packet)


def assert_same(data: bytes, map_: HeaderExtensionsMap) -> object:
    expected = outcome(RtpPacket.parse, data, map_)
    assert outcome(parse_rtp, data, map_) == expected, data.hex()
    return expected


def one_byte(elements: list[tuple[int, bytes]], padding: int = 0) -> tuple[int, bytes]:
    value = b"".join(bytes([x_id << 4 | (len(v) - 1)]) + v for x_id, v in elements)
    return 0xBEDE, value + b"\x00" * padding


def two_byte(elements: list[tuple[int, bytes]], padding: int = 0) -> tuple[int, bytes]:
    value = b"".join(bytes([x_id, len(v)]) + v for x_id, v in elements)
    return 0x1000, value + b"\x00" * padding


def packet_bytes(
    rng: random.Random,
    extension: tuple[int, bytes] | None,
    csrc: int = 0,
    padding: int = 0,
    payload: bytes = b"\x90\x80\x01\x02\x03",
) -> bytes:
    """One RTP packet; an extension block is padded to whole words with zero bytes."""
    first = 0x80 | csrc | (0x10 if extension else 0) | (0x20 if padding else 0)
    data = struct.pack(
        "!BBHLL", first, rng.randrange(256), rng.randrange(65536), rng.getrandbits(32), 99
    )
    data += b"".join(struct.pack("!L", rng.getrandbits(32)) for _ in range(csrc))
    if extension is not None:
        profile, value = extension
        value += b"\x00" * (-len(value) % 4)
        data += struct.pack("!HH", profile, len(value) // 4) + value
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def chrome_elements(rng: random.Random) -> list[tuple[int, bytes]]:
    """The extensions Chrome puts on a video packet, in a random order and subset."""
    elements = [
        (2, rng.randbytes(3)),  # abs-send-time
        (3, rng.randbytes(2)),  # transport-wide sequence number
        (4, b"0"),  # mid
        (14, rng.randbytes(3)),  # toffset (id 14: the last one-byte id)
        (1, rng.randbytes(1)),  # audio level
        (10, b"hi"),  # rid
        (7, rng.randbytes(4)),  # not negotiated
    ]
    rng.shuffle(elements)
    return elements[: rng.randrange(len(elements) + 1)]


def test_well_formed_packets_parse_alike() -> None:
    rng = random.Random(5)
    chrome = extensions_map(CHROME_IDS)
    seen = 0
    for _ in range(3000):
        elements = chrome_elements(rng)
        form = rng.choice([one_byte, two_byte])
        extension = form(elements, rng.randrange(4)) if rng.random() < 0.9 else None
        data = packet_bytes(
            rng, extension, csrc=rng.choice([0, 0, 1, 3]), padding=rng.choice([0, 0, 1, 7])
        )
        parsed = assert_same(data, chrome)
        seen += isinstance(parsed, dict) and parsed["extensions"].abs_send_time is not None
    assert seen > 1000, "most packets carry an abs-send-time read by both"


def test_ids_are_read_as_configured_now() -> None:
    """Renegotiation reconfigures the map: the next packet reads the new ids."""
    rng = random.Random(6)
    map_ = extensions_map({"abs": 3, "mid": 5})
    data = packet_bytes(rng, one_byte([(3, b"\x01\x02\x03"), (5, b"a"), (4, b"\x09\x08\x07")]))
    assert parse_rtp(data, map_).extensions.abs_send_time == 0x010203
    map_.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(4, URIS["abs"])])
    )
    assert_same(data, map_)
    assert parse_rtp(data, map_).extensions.abs_send_time == 0x090807
    assert parse_rtp(data, map_).extensions.mid == "a"


def test_the_same_id_twice_and_unconfigured_maps() -> None:
    """An id negotiated for two extensions decodes as the first in aiortc's order; an
    unconfigured map reads nothing; an unknown profile is skipped."""
    rng = random.Random(7)
    twice = extensions_map({"mid": 2, "abs": 2})
    elements = [(2, b"x"), (2, b"yz")]
    for map_ in (twice, HeaderExtensionsMap(), extensions_map(CHROME_IDS)):
        for extension in (one_byte(elements), two_byte(elements), (0x1234, b"\x21ab\x00")):
            assert_same(packet_bytes(rng, extension), map_)


@pytest.mark.parametrize("form", [one_byte, two_byte])
def test_broken_packets_fail_alike(form: object) -> None:
    """Every truncation of packets with CSRCs, extensions and padding, and extension values
    that do not decode (a short abs-send-time, a mid that is not UTF-8), alone and before a
    truncated extension."""
    rng = random.Random(8)
    chrome = extensions_map(CHROME_IDS)
    good = [(2, b"\x01\x02\x03"), (4, b"0"), (3, b"\x00\x07")]
    bad_values = [[(2, b"\x01")], [(4, b"\xff\xfe")], [(1, b"")], [(3, b"\x01\x02\x03")]]
    cases = [form(good)] + [form(bad) for bad in bad_values if bad[0][1] or form is two_byte]  # type: ignore[operator]
    cases += [form(bad + good) for bad in bad_values[:2]]  # type: ignore[operator]
    failures: set[str] = set()
    for extension in cases:
        data = packet_bytes(rng, extension, csrc=2, padding=3)
        for end in range(len(data) + 1):
            outcome_ = assert_same(data[:end], chrome)
            if isinstance(outcome_, tuple):
                failures.add(outcome_[1])
        # a truncated last extension after a value that does not decode: aiortc reports the
        # truncation, since it splits every extension before it decodes one
        profile, value = extension
        assert_same(
            packet_bytes(rng, (profile, value + bytes([0x2F if form is one_byte else 2]))), chrome
        )
        assert_same(packet_bytes(rng, (profile, value + b"\x02\x09\x01")), chrome)
    assert {"RTP packet has truncated CSRC", "RTP packet padding length is invalid"} <= failures
    assert any("extension" in failure for failure in failures)


def test_bad_version_and_padding() -> None:
    rng = random.Random(9)
    chrome = extensions_map(CHROME_IDS)
    data = packet_bytes(rng, None)
    assert_same(bytes([0x40]) + data[1:], chrome)
    for payload in (b"", b"\x10\x00\x01"):
        padded = bytearray(packet_bytes(rng, None, padding=2, payload=payload))
        for last in (0, 1, 2, 3, 4, 5, 6, 200):  # none, each length up to the header, beyond
            padded[-1] = last
            assert_same(bytes(padded), chrome)
