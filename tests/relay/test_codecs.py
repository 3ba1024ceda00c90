from __future__ import annotations

import fractions
import itertools
import random

import av
import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.codecs.vpx import vp8_depayload as aiortcs_vp8_depayload

from relay.codecs import (
    Vp8Packetizer,
    h264_nal_types,
    is_keyframe,
    preferences,
    vp8_depayload,
    vp8_dimensions,
)

VP8_KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x00, 0x05, 0xD0, 0x02]) + b"\x00" * 20
VP8_DELTA = bytes([0x31, 0x02, 0x00]) + b"\x00" * 20
H264_IDR = b"\x00\x00\x00\x01\x67abc\x00\x00\x00\x01\x68de\x00\x00\x01\x65xyz"
H264_P = b"\x00\x00\x00\x01\x41xyz"


def test_vp8_keyframe_is_recognised_by_its_p_bit_and_start_code() -> None:
    assert is_keyframe("VP8", VP8_KEY)
    assert not is_keyframe("VP8", VP8_DELTA)
    assert not is_keyframe("VP8", b"\x00")


def test_vp8_keyframe_header_gives_the_frame_size() -> None:
    assert vp8_dimensions(VP8_KEY) == (1280, 720)
    assert vp8_dimensions(VP8_DELTA) is None


def test_h264_access_unit_with_idr_slice_is_a_keyframe() -> None:
    assert h264_nal_types(H264_IDR) == {7, 8, 5}
    assert is_keyframe("H264", H264_IDR)
    assert not is_keyframe("H264", H264_P)


def test_codec_preferences_pin_the_codec_and_keep_its_rtx() -> None:
    names = [c.mimeType for c in preferences("video", "H264")]
    assert names[-1] == "video/rtx" and set(names[:-1]) == {"video/H264"}
    assert [c.mimeType for c in preferences("audio", "opus")] == ["audio/opus"]


def _aiortcs(payload: bytes) -> bytes | str:
    try:
        return aiortcs_vp8_depayload(payload)
    except ValueError as exc:
        return str(exc)


def _ours(payload: bytes) -> bytes | str:
    try:
        return vp8_depayload(payload)
    except ValueError as exc:
        return str(exc)


def test_vp8_depayload_gives_what_aiortcs_gives() -> None:
    """Every descriptor shape (X, I with short and long picture ids, L, T, K) and every
    truncation of it: the same data, or the same error."""
    descriptors = []
    for x, i, long_id, ell, t, k in itertools.product((0, 1), repeat=6):
        if not x and (i or long_id or ell or t or k):
            continue
        if not i and long_id:
            continue
        head = bytes([0x10 | (0x80 if x else 0)])  # S, and X when extended
        if x:
            head += bytes([(0x80 if i else 0) | (0x40 if ell else 0) | (0x20 if t else 0)
                           | (0x10 if k else 0)])  # fmt: skip
        if i:
            head += b"\x81\x23" if long_id else b"\x17"
        if ell:
            head += b"\x05"
        if t or k:
            head += b"\xa3"
        descriptors.append(head)
    rng = random.Random(3)
    frame = bytes(rng.randrange(256) for _ in range(40))
    checked = 0
    for head in descriptors:
        payload = head + frame
        for cut in range(len(head) + 2):
            assert _ours(payload[:cut]) == _aiortcs(payload[:cut]), (payload[:cut].hex(), cut)
            checked += 1
        assert vp8_depayload(payload) == frame
    for _ in range(2000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))
        assert _ours(payload) == _aiortcs(payload), payload.hex()
    assert checked > 100


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80"])
def test_vp8_depayload_refuses_a_truncated_descriptor(payload: bytes) -> None:
    with pytest.raises(ValueError):
        vp8_depayload(payload)


def test_vp8_packetizer_makes_aiortcs_payloads() -> None:
    """The same payloads and timestamps as aiortc's ``Vp8Encoder.pack``, for frames of every
    size around a packet's edge and picture ids on every boundary (7/15 bits, the wrap)."""
    rng = random.Random(4)
    ours, aiortcs = Vp8Packetizer(), Vp8Encoder()
    time_base = fractions.Fraction(1, 90_000)
    for picture_id in (0, 1, 127, 128, 255, 256, 32_766, 32_767):
        ours.picture_id = aiortcs.picture_id = picture_id
        for size in (0, 1, 1295, 1296, 1297, 2592, 2593, 6000, 40_000):
            packet = av.Packet(rng.randbytes(size))
            packet.pts, packet.time_base = rng.randrange(1 << 32), time_base
            assert ours.pack(packet) == aiortcs.pack(packet), (picture_id, size)
            assert ours.picture_id == aiortcs.picture_id
    ours.picture_id = 32_767
    assert ours.pack(packet)[0][0][:4] == b"\x90\x80\xff\xff"  # S bit, then the 15-bit id
    first, second = ours.pack(packet)[0][:2]
    assert (first[:4], second[:4]) == (b"\x90\x80\x80\x00", b"\x80\x80\x80\x00")  # wrapped
