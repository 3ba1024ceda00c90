"""``FrameBuffer``, the one bounded buffer between a source and the session that sends it: on
real libx264 packets, a reader that comes late starts on a keyframe and can decode everything
it gets (whole GOPs are dropped, never a frame inside one); decoded frames keep the newest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from client.buffer import MAX_GOP, FrameBuffer
from client.testpattern import TestPatternTrack
from tests.clips import stamped_clip

GOP = 10
PARAMETER_SETS: list[bytes | None] = [None]


def packets(tmp_path: Path, frames: int, gop: int = GOP) -> list[av.Packet[Any]]:
    """A camera's H.264 packets: Constrained Baseline, a keyframe every ``gop`` frames (their
    SPS/PPS, which MP4 keeps apart, go to ``decodes`` — a viewer gets them in band)."""
    options = {"profile": "baseline", "g": str(gop), "keyint_min": str(gop), "preset": "ultrafast"}
    clip = stamped_clip(tmp_path / "camera.mp4", frames, "H264", options=options)
    with av.open(str(clip)) as container:
        PARAMETER_SETS[0] = container.streams.video[0].codec_context.extradata
        return [p for p in container.demux(video=0) if p.size]


async def drain(buffer: FrameBuffer) -> list[Any]:
    items = []
    while not buffer.empty():
        items.append(await buffer.get())
    return items


def decodes(items: list[av.Packet[Any]]) -> int:
    """Frames a fresh decoder (a new viewer) makes of ``items``, raising on a broken reference."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = PARAMETER_SETS[0]
    decoder.options = {"err_detect": "explode"}
    frames = [frame for packet in items for frame in decoder.decode(packet)]
    return len(frames) + len(decoder.decode(None))


async def test_a_late_reader_starts_on_the_newest_keyframe(tmp_path: Path) -> None:
    camera = packets(tmp_path, 3 * GOP + 5)
    buffer = FrameBuffer(2)
    for packet in camera:
        buffer.put(packet)
    kept = await drain(buffer)
    assert [p.is_keyframe for p in kept] == [True] + [False] * 4
    assert [p.pts for p in kept] == [p.pts for p in camera[3 * GOP :]]
    assert decodes(kept) == 5


async def test_the_gop_being_read_is_kept_whole_however_far_behind_the_reader_is(
    tmp_path: Path,
) -> None:
    camera = packets(tmp_path, 2 * GOP)
    buffer = FrameBuffer(2)
    buffer.put(camera[0])
    read = [await buffer.get()]  # the reader took the keyframe, then fell behind
    for packet in camera[1:GOP]:
        buffer.put(packet)
    assert len(read + await drain(buffer)) == GOP
    for packet in camera[GOP:]:
        buffer.put(packet)
    assert decodes(await drain(buffer)) == GOP  # from the next keyframe on


async def test_a_gop_too_long_to_hold_is_dropped_and_the_next_keyframe_awaited(
    tmp_path: Path,
) -> None:
    camera = packets(tmp_path, MAX_GOP + 20, gop=MAX_GOP + 10)
    buffer = FrameBuffer(2)
    for packet in camera:
        buffer.put(packet)
    kept = await drain(buffer)
    assert kept and kept[0].is_keyframe and kept[0].pts == camera[MAX_GOP + 10].pts
    assert decodes(kept) == len(kept) == 10


async def test_decoded_frames_keep_the_newest_and_the_end_is_never_dropped() -> None:
    pattern = TestPatternTrack(64, 36)
    buffer = FrameBuffer(2)
    for i in range(10):
        buffer.put(pattern.frame(i, 0))
    buffer.put(None)
    buffer.put(pattern.frame(10, 0))
    kept = await drain(buffer)
    assert kept[1:] == [None] or kept[-2:] == [None, kept[-1]]
    assert None in kept and len(kept) <= 3
