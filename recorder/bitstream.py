"""Just enough bitstream reading to describe a recorded video track without decoding it: the
picture size of a VP8 keyframe (its frame header) or of an H.264 access unit (its SPS).

Containers need the size in their track header, and the manifest reports it; decoding a frame to
learn it would cost ~10 ms of CPU per segment for a fact the first bytes already state.
"""

from __future__ import annotations

from relay.codecs import h264_nal_types, vp8_dimensions

H264_SPS = 7
H264_PPS = 8
_H264_SLICES = {1, 5}
"NAL unit types of a coded picture (non-IDR and IDR slices)."
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def video_dimensions(codec: str, frame: bytes) -> tuple[int, int] | None:
    """Width and height announced by a keyframe, or None if the frame does not say."""
    if codec == "VP8":
        return vp8_dimensions(frame)
    if codec == "H264":
        return h264_dimensions(frame)
    raise ValueError(f"unsupported video codec {codec!r}")


def h264_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Picture size from the first SPS of an Annex-B access unit (cropping applied)."""
    if H264_SPS not in h264_nal_types(frame):
        return None
    for nal in _annexb_nals(frame):
        if nal and nal[0] & 0x1F == H264_SPS:
            try:
                return _sps_dimensions(_unescape(nal[1:]))
            except IndexError:
                return None  # truncated SPS
    return None


def length_prefixed_to_annexb(sample: bytes) -> bytes:
    """An MP4 sample (NAL units each after a 4-byte length) as an Annex-B access unit."""
    out, i = bytearray(), 0
    while i + 4 <= len(sample):
        size = int.from_bytes(sample[i : i + 4], "big")
        out += b"\x00\x00\x00\x01" + sample[i + 4 : i + 4 + size]
        i += 4 + size
    return bytes(out)


def h264_profile_level(frame: bytes) -> tuple[int, int] | None:
    """``(profile_idc, level_idc)`` of the first SPS of an Annex-B access unit: what the stream
    itself says it is (a recorded MP4's header may not, docs/recording.md)."""
    for nal in _annexb_nals(frame):
        if len(nal) >= 4 and nal[0] & 0x1F == H264_SPS:
            return nal[1], nal[3]
    return None


def h264_has_picture(frame: bytes) -> bool:
    """Whether an Annex-B access unit holds a picture (not only parameter sets or SEI)."""
    return not _H264_SLICES.isdisjoint(h264_nal_types(frame))


def h264_parameter_sets(frame: bytes) -> bytes:
    """The first SPS and PPS of an Annex-B access unit, as Annex-B (start codes in front), or
    ``b""`` unless it carries both: what an MP4's header (avcC) is built from."""
    found: dict[int, bytes] = {}
    for nal in _annexb_nals(frame):
        if nal and nal[0] & 0x1F in (H264_SPS, H264_PPS):
            found.setdefault(nal[0] & 0x1F, b"\x00\x00\x00\x01" + nal)
    if len(found) < 2:
        return b""
    return found[H264_SPS] + found[H264_PPS]


def _annexb_nals(frame: bytes) -> list[bytes]:
    starts = []
    i = frame.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = frame.find(b"\x00\x00\x01", i + 3)
    if not starts:
        return []
    ends = [s - 3 for s in starts[1:]] + [len(frame)]
    return [frame[s:e].rstrip(b"\x00") for s, e in zip(starts, ends, strict=True)]


def _unescape(payload: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00)."""
    return payload.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._data[self._pos >> 3]
        value = (byte >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise IndexError("invalid Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _sps_dimensions(rbsp: bytes) -> tuple[int, int]:
    """ITU-T H.264 7.3.2.1.1, as far as the frame size."""
    r = _Bits(rbsp)
    profile_idc = r.bits(8)
    r.bits(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = r.bit()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    pic_order_cnt_type = r.ue()
    if pic_order_cnt_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        r.bit()  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_map_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        crop_x = 1 if chroma_array_type == 0 else (2 if chroma_array_type in (1, 2) else 1)
        crop_y = (1 if chroma_array_type in (0, 3) else (2 if chroma_array_type == 1 else 1)) * (
            2 - frame_mbs_only
        )
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last, following = 8, 8
    for _ in range(size):
        if following:
            following = (last + r.se() + 256) % 256
        last = following or last
