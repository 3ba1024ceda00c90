from __future__ import annotations

from relay.codecs import h264_nal_types, is_keyframe, preferences, vp8_dimensions

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
