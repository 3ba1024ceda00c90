"""Which VP8 frames a decoder may skip, checked by decoding: every frame the header calls
droppable is skipped by a second decoder, and every other frame must come out of both decoders
bit-exact.

``data/chromium-vp8-l1t3.ivf``: the first 24 frames (from its keyframe) that Debian's Chromium 156
sent from the clinic page with ``scalabilityMode`` L1T3 (640×360, the synthetic endoscopy of
``client/endoscopy.py``), as the relay received them. Its top-layer frames refresh no buffer, keep
their probabilities to themselves and resend the loop-filter deltas in force.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

from relay.codecs import Dependencies
from relay.vp8_header import NO_DELTAS, Vp8Stream, parse
from tests.relay.test_codecs import VP8_DELTA, VP8_KEY

CHROMIUM_L1T3 = Path(__file__).parent / "data" / "chromium-vp8-l1t3.ivf"


def read_ivf(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux() if p.size]


def decode_skipping(frames: list[bytes], codec: str) -> tuple[int, int]:
    """(frames skipped, frames decoded bit-exact against a decoder that decodes them all)."""
    decoder = "vp8" if codec == "VP8" else "h264"
    full: dict[int, np.ndarray] = {}
    kept: dict[int, np.ndarray] = {}
    dependencies = Dependencies(codec)
    skipped = 0
    for pictures, skip in ((full, False), (kept, True)):
        context = av.CodecContext.create(decoder, "r")
        packets = []
        for index, frame in enumerate(frames):
            if skip and dependencies.droppable(frame):
                skipped += 1
                continue
            packet = av.Packet(frame)
            packet.pts = index
            packets.append(packet)
        for packet in [*packets, None]:
            for picture in context.decode(packet):
                assert isinstance(picture, av.VideoFrame) and picture.pts is not None
                pictures[picture.pts] = picture.to_ndarray()
    assert len(full) == len(frames)
    exact = sum(np.array_equal(picture, full[pts]) for pts, picture in kept.items())
    return skipped, exact


def test_chromium_l1t3_top_layer_is_skipped_and_the_rest_decodes_bit_exact() -> None:
    frames = read_ivf(CHROMIUM_L1T3)
    assert len(frames) == 24 and parse(frames[0]) is not None and parse(frames[0]).keyframe  # type: ignore[union-attr]
    skipped, exact = decode_skipping(frames, "VP8")
    assert skipped == 12, "the top layer: every other frame"
    assert exact == len(frames) - skipped


def test_chromium_resends_loop_filter_deltas_and_a_change_of_them_is_not_droppable() -> None:
    frames = read_ivf(CHROMIUM_L1T3)
    stream = Vp8Stream()
    droppable = [stream.droppable(frame) for frame in frames]
    assert stream.lf_deltas != NO_DELTAS, "Chromium's frames carry loop-filter deltas"
    top = frames[droppable.index(True)]
    assert parse(top, stream.lf_deltas).droppable  # type: ignore[union-attr]
    assert not parse(top, NO_DELTAS).droppable, "deltas that differ from those in force"  # type: ignore[union-attr]


def encode(encoder_name: str, options: dict[str, str], count: int) -> list[bytes]:
    """``count`` frames of a moving random picture (320×180), encoded and flushed."""
    encoder = av.CodecContext.create(encoder_name, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 180, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = options
    base = np.random.default_rng(7).integers(0, 255, (220, 360, 3), dtype=np.uint8)
    frames = []
    for index in range(count):
        image = np.ascontiguousarray(base[index : index + 180, index : index + 320])
        picture = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        picture.pts = index
        frames += [bytes(p) for p in encoder.encode(picture)]
    return frames + [bytes(p) for p in encoder.encode(None)]


def test_a_stream_without_layers_has_nothing_to_skip() -> None:
    frames = encode("libvpx", {"deadline": "realtime", "lag-in-frames": "0"}, 20)
    skipped, exact = decode_skipping(frames, "VP8")
    assert skipped == 0 and exact == len(frames) == 20


def test_h264_non_reference_frames_are_skipped_and_the_rest_decodes_bit_exact() -> None:
    options = {"bframes": "2", "b-pyramid": "none", "preset": "veryfast", "threads": "1"}
    frames = encode("libx264", options, 24)
    skipped, exact = decode_skipping(frames, "H264")
    assert skipped >= 8, "the B-frames"
    assert exact == len(frames) - skipped


def test_short_or_garbled_frames_are_never_droppable() -> None:
    dependencies = Dependencies("VP8")
    for frame in (b"", b"\x01", VP8_DELTA[:4]):
        assert parse(frame) is None and not dependencies.droppable(frame)
    assert isinstance(dependencies.droppable(bytes(range(256)) * 4), bool), "never raises"
    assert not dependencies.droppable(VP8_KEY), "a keyframe is never skipped"
    assert not Dependencies("opus").droppable(b"\x00" * 10)


def test_a_frame_left_out_leaves_the_deltas_in_force_where_they_were() -> None:
    frames = read_ivf(CHROMIUM_L1T3)
    stream = Vp8Stream()
    stream.droppable(frames[0])
    in_force = stream.lf_deltas
    changed = bytes(frames[1])  # parse() reads it against other deltas: they "change"
    stream.lf_deltas = NO_DELTAS
    assert not stream.droppable(changed) and stream.lf_deltas == in_force
    stream.skipped()
    assert stream.lf_deltas == NO_DELTAS, "the decoder never saw the frame that set them"
