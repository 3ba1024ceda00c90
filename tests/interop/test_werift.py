"""werift (npm, WebRTC written in TypeScript) against a real ``endolink serve``, VP8 and H.264.
werift has no encoder or decoder: publishing, it forwards RTP that FFmpeg encodes from the stamped
pattern (``tests.interop.encoder rtp``) under its own ICE, DTLS and SRTP, and an aiortc viewer
decodes the stamps in order; playing, it reassembles the relay's RTP into frames that are decoded
here, stamps in order, at the publisher's size."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from client.testpattern import read_stamp
from signaling.auth.grants import Role
from tests.interop.support import (
    frames_in_order,
    increasing,
    python_module,
    result,
    served,
)
from tests.peers import publisher
from tests.processes import Process, clean_env

pytestmark = pytest.mark.timeout(90)

FRAMES = 90
CLIENT = "werift 0.24 (npm, TypeScript)"


def interop(role: str) -> list[object]:
    """The codecs, each marked as proving ``role`` for werift."""
    return [
        pytest.param(codec, marks=pytest.mark.interop(client=CLIENT, role=role, codec=name))
        for codec, name in (("VP8", "VP8"), ("H264", "H.264"))
    ]


@pytest.mark.parametrize("codec", interop("publish"))
async def test_werift_publishes(codec: str, tmp_path: Path, processes: list[Process]) -> None:
    async with served(tmp_path, codec) as s:
        client = s.node("werift.js", Role.CLINIC, "publish", s.endpoint("whip"), codec, "40")
        address = (await asyncio.to_thread(client.wait_for, "rtp ", 20)).split()[1]
        source = Process(
            python_module("tests.interop.encoder", "rtp", address, codec, "30"),
            tmp_path / "encoder.log",
            clean_env(),
        )
        processes.append(source)
        await asyncio.to_thread(source.wait_for, "opened", 30)  # FFmpeg loads slowly under load
        await frames_in_order(s, FRAMES, (640, 480), client.output)


@pytest.mark.parametrize("codec", interop("play"))
async def test_werift_plays(codec: str, tmp_path: Path) -> None:
    out = tmp_path / ("frames.ivf" if codec == "VP8" else "frames.h264")
    async with served(tmp_path, codec) as s:
        async with publisher(s.endpoint("whip"), s.token(Role.CLINIC), audio=False):
            play = ("play", s.endpoint("whep"), codec, "20", str(FRAMES), str(out))
            client = s.node("werift.js", Role.SURGEON, *play)
            seen = await asyncio.to_thread(result, client, 40)
    assert seen["status"] == 201 and seen["connected"], seen
    assert seen["frames"] >= FRAMES and seen["keyframes"] >= 1, seen
    counters, sizes = await asyncio.to_thread(decoded, out)
    assert len(counters) >= FRAMES - 1, (len(counters), seen)  # the script drops broken frames
    assert increasing(counters), counters
    assert sizes == {(1280, 720)}


def decoded(path: Path) -> tuple[list[int], set[tuple[int, int]]]:
    """Stamp counters and sizes of every frame FFmpeg decodes from what werift received."""
    counters: list[int] = []
    sizes: set[tuple[int, int]] = set()
    with av.open(str(path), format="ivf" if path.suffix == ".ivf" else "h264") as container:
        for frame in container.decode(video=0):
            counters.append(read_stamp(frame)[0])
            sizes.add((frame.width, frame.height))
    return counters, sizes
