"""Codec facts the forwarding path needs: keyframe detection and codec preferences.

The relay never decodes, so it reads just enough of the bitstream to know where a viewer may
start: a VP8 keyframe (frame tag P bit 0 and start code ``9d 01 2a``) or an H.264 access unit that
carries an IDR slice (NAL type 5; browsers send SPS/PPS with it).
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability, RTCRtpReceiver

VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
AUDIO_CODEC = "opus"
VIDEO_CODECS = ("VP8", "H264")

H264_IDR = 5


def is_keyframe(codec: str, frame: bytes) -> bool:
    if codec == "VP8":
        return len(frame) >= 6 and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"
    if codec == "H264":
        return H264_IDR in h264_nal_types(frame)
    return True  # audio: every frame is independently decodable


def h264_nal_types(frame: bytes) -> set[int]:
    """NAL unit types of an Annex-B access unit (aiortc's depayloader emits Annex-B)."""
    types: set[int] = set()
    i = frame.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(frame):
        types.add(frame[i + 3] & 0x1F)
        i = frame.find(b"\x00\x00\x01", i + 3)
    return types


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (None for inter frames)."""
    if not is_keyframe("VP8", frame) or len(frame) < 10:
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height


def preferences(kind: str, codec: str) -> list[RTCRtpCodecCapability]:
    """Codec preferences that pin a transceiver to ``codec`` (plus its RTX), so the publisher and
    every viewer of a consultation use the same codec and packets can pass through untouched."""
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None
    wanted = codec.lower()
    chosen = [c for c in capabilities.codecs if c.mimeType.lower() == f"{kind}/{wanted}"]
    rtx = [c for c in capabilities.codecs if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen + rtx


def clock_rate(kind: str) -> int:
    return VIDEO_CLOCK_RATE if kind == "video" else AUDIO_CLOCK_RATE
