"""An RTP packet's header parsed in few calls (aiortc 1.16.0's ``RtpPacket.parse``, same result).

aiortc parses a packet in about a dozen Python calls: the packet's constructor (which builds a
``HeaderExtensions`` it then throws away), ``HeaderExtensionsMap.get`` (another
``HeaderExtensions``), ``unpack_header_extensions`` (a list of slices), a ``struct.unpack`` per
extension value. The relay parses every packet a clinic sends (~200 a second), where each call
costs several times what it costs in a tight loop. ``parse_rtp`` builds the same ``RtpPacket``
with the same fields, from the same extension ids (read from aiortc's map, which renegotiation
may reconfigure), and raises what aiortc raises, with its messages, for the same malformed input.
"""

from __future__ import annotations

import struct

from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

FIXED = struct.Struct("!BBHLL")
"V/P/X/CC, M/PT, sequence number, timestamp, SSRC."
FIXED_LENGTH = 12
WORD = struct.Struct("!L")
PROFILE = struct.Struct("!HH")
ONE_BYTE = 0xBEDE
TWO_BYTE = 0x1000


def parse_rtp(data: bytes, extensions_map: HeaderExtensionsMap) -> RtpPacket:
    """``RtpPacket.parse(data, extensions_map)``, in fewer calls (see the module doc)."""
    if len(data) < FIXED_LENGTH:
        raise ValueError(f"RTP packet length is less than {FIXED_LENGTH} bytes")
    first, second, sequence_number, timestamp, ssrc = FIXED.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    pos = FIXED_LENGTH + 4 * (first & 0x0F)
    if len(data) < pos:
        raise ValueError("RTP packet has truncated CSRC")

    packet = RtpPacket.__new__(RtpPacket)
    packet.version = 2
    packet.marker = second >> 7
    packet.payload_type = second & 0x7F
    packet.sequence_number = sequence_number
    packet.timestamp = timestamp
    packet.ssrc = ssrc
    packet.csrc = (
        [WORD.unpack_from(data, at)[0] for at in range(FIXED_LENGTH, pos, 4)]
        if first & 0x0F
        else []
    )
    packet.padding_size = 0

    if first & 0x10:
        if len(data) < pos + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        profile, words = PROFILE.unpack_from(data, pos)
        pos += 4
        end = pos + 4 * words
        if len(data) < end:
            raise ValueError("RTP packet has truncated extension value")
        packet.extensions = _extensions(extensions_map, profile, data[pos:end])
        pos = end
    else:
        packet.extensions = HeaderExtensions()

    if first & 0x20:
        padding = data[-1]
        if not padding or padding > len(data) - pos:
            raise ValueError("RTP packet padding length is invalid")
        packet.padding_size = padding
        packet.payload = data[pos:-padding]
    else:
        packet.payload = data[pos:]
    return packet


def _extensions(map_: HeaderExtensionsMap, profile: int, value: bytes) -> HeaderExtensions:
    """aiortc's ``HeaderExtensionsMap.get`` over ``unpack_header_extensions``, in one loop."""
    ids: HeaderExtensions = map_._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
    values = HeaderExtensions()
    one_byte = profile == ONE_BYTE
    if not one_byte and profile != TWO_BYTE:
        return values  # aiortc: no extension it knows how to split
    size, pos = len(value), 0
    failed: Exception | None = None
    while pos < size:
        if not value[pos]:  # padding
            pos += 1
            continue
        if one_byte:
            x_id, length = value[pos] >> 4, (value[pos] & 0x0F) + 1
            pos += 1
            if size < pos + length:
                raise ValueError("RTP one-byte header extension value is truncated")
        else:
            if size < pos + 2:
                raise ValueError("RTP two-byte header extension is truncated")
            x_id, length = value[pos], value[pos + 1]
            pos += 2
            if size < pos + length:
                raise ValueError("RTP two-byte header extension value is truncated")
        x_value = value[pos : pos + length]
        pos += length
        if failed is not None:
            continue
        try:  # HeaderExtensionsMap.get: the first matching id wins, in its order
            if x_id == ids.mid:
                values.mid = x_value.decode("utf8")
            elif x_id == ids.repaired_rtp_stream_id:
                values.repaired_rtp_stream_id = x_value.decode("ascii")
            elif x_id == ids.rtp_stream_id:
                values.rtp_stream_id = x_value.decode("ascii")
            elif x_id == ids.abs_send_time:
                values.abs_send_time = WORD.unpack(b"\x00" + x_value)[0]
            elif x_id == ids.transmission_offset:
                values.transmission_offset = struct.unpack("!l", x_value + b"\x00")[0] >> 8
            elif x_id == ids.audio_level:
                level = struct.unpack("!B", x_value)[0]
                values.audio_level = (level & 0x80 == 0x80, level & 0x7F)
            elif x_id == ids.transport_sequence_number:
                values.transport_sequence_number = struct.unpack("!H", x_value)[0]
        except (struct.error, UnicodeDecodeError) as exc:
            failed = exc  # raised once all are split: aiortc splits them before it decodes one
    if failed is not None:
        raise failed
    return values
