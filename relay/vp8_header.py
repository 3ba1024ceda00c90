"""Vp8Header: what a VP8 frame changes in its decoder, read from the frame header (RFC 6386,
sections 9 and 19.2) without decoding the frame.

The guards' decoder (``relay.decoded``) must decode every frame a later frame depends on, but not
the others. A VP8 inter frame that refreshes no reference buffer (last, golden, altref), copies
none, keeps its probability updates to itself and changes neither the segmentation nor the
loop-filter deltas leaves the decoder exactly as it found it: it can be skipped, and every later
frame still decodes bit-exact. Encoders with temporal layers make such frames on purpose — the
top layer of VP8 L1T3 (half of the frames), which browsers send when asked
(``scalabilityMode``) — so a server that only samples the picture a few times a second need not
decode them. A stream without such frames simply has none to skip.
"""

from __future__ import annotations

from dataclasses import dataclass

KEYFRAME_HEADER = 10
"Frame tag (3 bytes), start code (3) and dimensions (4) precede a keyframe's first partition."
INTERFRAME_HEADER = 3


class BoolDecoder:
    """RFC 6386's boolean entropy decoder (section 7.3), enough for the frame header."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 2
        self._value = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        self._range = 255
        self._bit_count = 0

    def bit(self, probability: int = 128) -> int:
        split = 1 + (((self._range - 1) * probability) >> 8)
        big_split = split << 8
        if self._value >= big_split:
            result = 1
            self._range -= split
            self._value -= big_split
        else:
            result = 0
            self._range = split
        while self._range < 128:
            self._value <<= 1
            self._range <<= 1
            self._bit_count += 1
            if self._bit_count == 8:
                self._bit_count = 0
                if self._pos < len(self._data):
                    self._value |= self._data[self._pos]
                self._pos += 1
        return result

    def literal(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = (value << 1) | self.bit()
        return value

    def flag_then(self, bits: int) -> int:
        """A flag, then ``bits`` of value and a sign bit when it is set (an optional delta)."""
        if self.bit():
            self.literal(bits + 1)
            return 1
        return 0


NO_DELTAS: tuple[int, ...] = (0,) * 8
"Loop-filter deltas (4 per reference frame, 4 per mode) as a keyframe resets them."


@dataclass(frozen=True)
class Vp8Header:
    keyframe: bool
    refreshes_state: bool
    "Decoding the frame changes what later frames decode against (references, probabilities, …)."
    lf_deltas: tuple[int, ...]
    "The loop-filter deltas in force after the frame (the decoder keeps them from frame to frame)."

    @property
    def droppable(self) -> bool:
        """Later frames decode the same whether or not this one was decoded."""
        return not self.keyframe and not self.refreshes_state


class Vp8Stream:
    """Reads the headers of one stream's frames in order, for the state they leave in the
    decoder they reach."""

    def __init__(self) -> None:
        self.lf_deltas = NO_DELTAS
        self._before = NO_DELTAS

    def droppable(self, frame: bytes) -> bool:
        header = parse(frame, self.lf_deltas)
        if header is None:
            return False
        self._before, self.lf_deltas = self.lf_deltas, header.lf_deltas
        return header.droppable

    def skipped(self) -> None:
        """The last frame did not reach the decoder (a higher temporal layer left out): what it
        changed is not in force there."""
        self.lf_deltas = self._before


def parse(frame: bytes, lf_deltas: tuple[int, ...] = NO_DELTAS) -> Vp8Header | None:
    """The header of one encoded VP8 frame, decoded after frames that left ``lf_deltas`` in
    force; None when the frame is too short to tell. Browsers resend the (unchanged) deltas with
    every frame: a frame that rewrites them with the values in force changes nothing."""
    if len(frame) < INTERFRAME_HEADER:
        return None
    keyframe = not frame[0] & 1
    start = KEYFRAME_HEADER if keyframe else INTERFRAME_HEADER
    if len(frame) <= start + 1:
        return None
    header = BoolDecoder(frame[start:])
    if keyframe:
        header.literal(2)  # color_space, clamping_type
        lf_deltas = NO_DELTAS
    changes = 0
    if header.bit():  # segmentation_enabled
        changes |= _segmentation(header)
    header.literal(1 + 6 + 3)  # filter_type, loop_filter_level, sharpness_level
    deltas = list(lf_deltas)
    if header.bit() and header.bit():  # loop_filter_adj_enable, mode_ref_lf_delta_update
        for i in range(len(deltas)):
            if header.bit():
                magnitude = header.literal(6)
                deltas[i] = -magnitude if header.bit() else magnitude
    if keyframe:
        return Vp8Header(keyframe=True, refreshes_state=True, lf_deltas=tuple(deltas))
    header.literal(2)  # log2_nbr_of_dct_partitions
    header.literal(7)  # y_ac_qi
    for _ in range(5):  # y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas
        header.flag_then(4)
    refresh_golden = header.bit()
    refresh_altref = header.bit()
    copy_to_golden = 0 if refresh_golden else header.literal(2)
    copy_to_altref = 0 if refresh_altref else header.literal(2)
    header.literal(2)  # sign_bias_golden, sign_bias_alternate
    refresh_entropy = header.bit()
    refresh_last = header.bit()
    changes |= refresh_golden | refresh_altref | copy_to_golden | copy_to_altref
    changes |= refresh_entropy | refresh_last
    changed = bool(changes) or tuple(deltas) != lf_deltas
    return Vp8Header(keyframe=False, refreshes_state=changed, lf_deltas=tuple(deltas))


def _segmentation(header: BoolDecoder) -> int:
    """Reads update_segmentation(); 1 when the frame changes the map or the segments' data."""
    update_map = header.bit()
    update_data = header.bit()
    if update_data:
        header.bit()  # segment_feature_mode
        for _ in range(4):
            header.flag_then(7)  # quantizer
        for _ in range(4):
            header.flag_then(6)  # loop filter level
    if update_map:
        for _ in range(3):
            if header.bit():
                header.literal(8)  # segment_prob
    return update_map | update_data
