"""libwebrtc through @roamhq/wrtc (npm; libwebrtc built into the package) against a real
``endolink serve``: it publishes VP8 that an aiortc viewer decodes in order, plays the relay's VP8
with the stamps intact, and is refused with a readable 406 on an H.264 consultation (this
libwebrtc has no H.264)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from tests.interop.support import increasing, node_client, result, served
from tests.peers import publisher, viewer, wait_until
from tests.processes import Process

pytestmark = pytest.mark.timeout(90)

FRAMES = 90
CLIENT = "libwebrtc via @roamhq/wrtc 0.10 (npm)"


@pytest.mark.interop(client=CLIENT, role="publish", codec="VP8")
async def test_wrtc_publishes_vp8(tmp_path: Path, processes: list[Process]) -> None:
    async with served(tmp_path, "VP8") as s:
        client = node_client(
            "wrtc.js",
            ["publish", s.endpoint("whip"), "30"],
            s.token(Role.CLINIC),
            tmp_path / "js.log",
        )
        processes.append(client)
        async with viewer(s.endpoint("whep"), s.token(Role.SURGEON), kinds=("video",)) as (
            _,
            _,
            received,
        ):
            arrived = await wait_until(lambda: len(received.counters) >= FRAMES, 25)
            assert arrived, (len(received.counters), client.output(), s.log_text()[-2000:])
    assert increasing(received.counters), received.counters
    assert received.sizes == {(640, 480)}


@pytest.mark.interop(client=CLIENT, role="play", codec="VP8")
async def test_wrtc_plays_vp8(tmp_path: Path, processes: list[Process]) -> None:
    async with served(tmp_path, "VP8") as s:
        async with publisher(s.endpoint("whip"), s.token(Role.CLINIC), audio=False):
            client = node_client(
                "wrtc.js",
                ["play", s.endpoint("whep"), "20", str(FRAMES)],
                s.token(Role.SURGEON),
                tmp_path / "js.log",
            )
            processes.append(client)
            seen = await asyncio.to_thread(result, client, 40)
    assert seen["status"] == 201 and seen["connected"], seen
    assert seen["frames"] >= FRAMES, seen
    assert increasing(seen["counters"]), seen["counters"]
    assert (seen["width"], seen["height"]) == (1280, 720)


async def test_wrtc_is_told_in_words_that_an_h264_consultation_needs_h264(
    tmp_path: Path, processes: list[Process]
) -> None:
    async with served(tmp_path, "H264") as s:
        client = node_client(
            "wrtc.js",
            ["publish", s.endpoint("whip"), "5"],
            s.token(Role.CLINIC),
            tmp_path / "js.log",
        )
        processes.append(client)
        refused = await asyncio.to_thread(result, client, 30)
    assert refused["status"] == 406, refused
    assert "H264" in refused["reason"] or "H.264" in refused["reason"], refused
    assert "Traceback" not in s.log_text()
