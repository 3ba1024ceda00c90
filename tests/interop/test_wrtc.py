"""libwebrtc through @roamhq/wrtc (npm; libwebrtc built into the package) against a real
``endolink serve``: it publishes VP8 that an aiortc viewer decodes in order, plays the relay's VP8
with the stamps intact, and is refused with a readable 422 on an H.264 consultation (this
libwebrtc has no H.264)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from tests.interop.support import frames_in_order, increasing, result, served
from tests.peers import publisher

pytestmark = pytest.mark.timeout(90)

FRAMES = 90
CLIENT = "libwebrtc via @roamhq/wrtc 0.10 (npm)"


@pytest.mark.interop(client=CLIENT, role="publish", codec="VP8")
async def test_wrtc_publishes_vp8(tmp_path: Path) -> None:
    async with served(tmp_path, "VP8") as s:
        client = s.node("wrtc.js", Role.CLINIC, "publish", s.endpoint("whip"), "30")
        await frames_in_order(s, FRAMES, (640, 480), client.output)


@pytest.mark.interop(client=CLIENT, role="play", codec="VP8")
async def test_wrtc_plays_vp8(tmp_path: Path) -> None:
    async with served(tmp_path, "VP8") as s:
        async with publisher(s.endpoint("whip"), s.token(Role.CLINIC), audio=False):
            client = s.node("wrtc.js", Role.SURGEON, "play", s.endpoint("whep"), "20", str(FRAMES))
            seen = await asyncio.to_thread(result, client, 40)
    assert seen["status"] == 201 and seen["connected"], seen
    assert seen["frames"] >= FRAMES, seen
    assert increasing(seen["counters"]), seen["counters"]
    assert (seen["width"], seen["height"]) == (1280, 720)


async def test_wrtc_is_told_in_words_that_an_h264_consultation_needs_h264(tmp_path: Path) -> None:
    async with served(tmp_path, "H264") as s:
        client = s.node("wrtc.js", Role.CLINIC, "publish", s.endpoint("whip"), "5")
        refused = await asyncio.to_thread(result, client, 30)
    assert refused["status"] == 422, refused  # RFC 9725 §4.4.3: an offer not taken whole
    assert "H264" in refused["reason"] or "H.264" in refused["reason"], refused
    assert "Traceback" not in s.log_text()
