"""Codec facts the forwarding path needs: keyframe detection and codec preferences.

The relay never decodes, so it reads just enough of the bitstream to know where a viewer may
start: a VP8 keyframe (frame tag P bit 0 and start code ``9d 01 2a``) or an H.264 access unit that
carries an IDR slice (NAL type 5; browsers send SPS/PPS with it). The guards' decoder also asks
which frames no later frame depends on (``Dependencies``), to leave them undecoded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from aiortc import RTCRtpCodecCapability, RTCRtpReceiver
from aiortc.codecs.vpx import PACKET_MAX as VP8_PACKET_MAX
from aiortc.codecs.vpx import Vp8Encoder

from . import vp8_header

VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
AUDIO_CODEC = "opus"
VIDEO_CODECS = ("VP8", "H264")

H264_IDR = 5
H264_SLICES = range(1, 6)
"NAL unit types of coded slices (non-IDR 1-4, IDR 5)."
VP8_PICTURE_ID = struct.Struct("!H")


class TemporalLayer(NamedTuple):
    """A frame's temporal layer as its sender labelled it (VP8: RFC 7741's TID and Y bits)."""

    tid: int
    "0 is the base layer; a frame never depends on a frame of a higher layer."
    sync: bool
    "The frame depends on base-layer frames only: a decoder may start this layer here."


def vp8_temporal_layer(payload: bytes) -> TemporalLayer | None:
    """The temporal layer in a VP8 RTP payload descriptor (RFC 7741, 4.2); None without one."""
    if len(payload) < 2 or not payload[0] & 0x80:  # X: no extension octet
        return None
    extension, at = payload[1], 2
    if extension & 0x80 and at < len(payload):  # I: picture id of 7 or 15 bits
        at += 2 if payload[at] & 0x80 else 1
    if extension & 0x40:  # L: TL0PICIDX
        at += 1
    if not extension & 0x20 or at >= len(payload):  # T: no TID
        return None
    return TemporalLayer(payload[at] >> 6, bool(payload[at] & 0x20))


def vp8_depayload(payload: bytes) -> bytes:
    """The VP8 data in an RTP payload: what follows its descriptor (RFC 7741, 4.2). aiortc's
    ``vp8_depayload`` without building (and re-serialising) a descriptor object per packet: the
    same bytes, and ``ValueError`` for the same truncated descriptors."""
    size = len(payload)
    if size < 1:
        raise ValueError("VPX descriptor is too short")
    at = 1
    if payload[0] & 0x80:  # X: an extension octet
        if size < 2:
            raise ValueError("VPX descriptor has truncated extended bits")
        extension, at = payload[1], 2
        if extension & 0x80:  # I: picture id of 7 or 15 bits
            if size < at + 1:
                raise ValueError("VPX descriptor has truncated PictureID")
            if payload[at] & 0x80:
                if size < at + 2:
                    raise ValueError("VPX descriptor has truncated long PictureID")
                at += 2
            else:
                at += 1
        if extension & 0x40:  # L: TL0PICIDX
            if size < at + 1:
                raise ValueError("VPX descriptor has truncated TL0PICIDX")
            at += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            if size < at + 1:
                raise ValueError("VPX descriptor has truncated T/K")
            at += 1
    return payload[at:]


class Vp8Packetizer(Vp8Encoder):
    """aiortc's VP8 packetizer (its ``pack``; nothing is encoded) with the same payloads, made
    without a descriptor object serialised per packet: one header for the first packet of a
    frame and one for the others, a 15-bit picture id in both (RFC 7741, 4.2)."""

    @classmethod
    def _packetize(cls, buffer: bytes, picture_id: int) -> list[bytes]:
        picture = VP8_PICTURE_ID.pack(0x8000 | picture_id)
        first, rest = b"\x90\x80" + picture, b"\x80\x80" + picture
        size = VP8_PACKET_MAX - len(first)
        return [
            (rest if at else first) + buffer[at : at + size] for at in range(0, len(buffer), size)
        ]


def is_keyframe(codec: str, frame: bytes) -> bool:
    if codec == "VP8":
        return len(frame) >= 6 and not frame[0] & 0x01 and frame[3:6] == b"\x9d\x01\x2a"
    if codec == "H264":
        return H264_IDR in h264_nal_types(frame)
    return True  # audio: every frame is independently decodable


class Dependencies:
    """Which frames of one stream, read in order, no later frame depends on: a decoder may skip
    them and decode the rest bit-exact (VP8: ``relay.vp8_header``; H.264: every slice has
    ``nal_ref_idc`` 0)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._vp8 = vp8_header.Vp8Stream() if codec == "VP8" else None

    def droppable(self, frame: bytes) -> bool:
        """Call for every frame of the stream, in order (VP8 carries state from frame to frame)."""
        if self._vp8 is not None:
            return self._vp8.droppable(frame)
        if self.codec == "H264":
            slices = [h for h in h264_nal_headers(frame) if h & 0x1F in H264_SLICES]
            return bool(slices) and not any(h & 0x60 for h in slices)
        return False

    def skipped(self) -> None:
        """The frame last passed to ``droppable`` was not decoded although later frames may
        depend on it (they are left out too): forget what it changed."""
        if self._vp8 is not None:
            self._vp8.skipped()


def h264_nal_headers(frame: bytes) -> list[int]:
    """The NAL unit header bytes of an Annex-B access unit (aiortc's depayloader emits
    Annex-B)."""
    headers: list[int] = []
    i = frame.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(frame):
        headers.append(frame[i + 3])
        i = frame.find(b"\x00\x00\x01", i + 3)
    return headers


def h264_nal_types(frame: bytes) -> set[int]:
    """NAL unit types of an Annex-B access unit."""
    return {h & 0x1F for h in h264_nal_headers(frame)}


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
