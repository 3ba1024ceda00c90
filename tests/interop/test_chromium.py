"""Debian's Chromium (libwebrtc, through EndoLink's own pages) against a real ``endolink serve``:
the clinic page publishes the stamped test pattern from Chromium's fake camera, an aiortc viewer
decodes the stamps in order, and the surgeon page plays the same feed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from bench.browser_publish import with_camera, write_y4m
from bench.common import NAMED_LINKS, free_port
from bench.serverproc import endolink
from tests.peers import viewer, wait_until
from tests.processes import Server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CLIENT = "Chromium (Debian) via EndoLink's pages"
FRAMES = 60
"Stamped frames the aiortc viewer decodes from Chromium's publication."
PLAYED = 30
"Frames the surgeon page's player decodes (a second of video: it plays)."
LOOP = 120
"Frames in the fake camera's y4m before it starts again (its counters wrap at 120)."
VIDEO_SHOWN_JS = "() => document.querySelector('[data-testid=remote-video]')?.videoWidth > 0"
FRAMES_DECODED_JS = """() => {
  const pc = window.endolink && window.endolink.playerPc;
  if (!pc) return 0;
  return pc.getStats().then((report) => {
    let decoded = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded;
    });
    return decoded;
  });
}"""


def marks(codec: str, name: str) -> object:
    return pytest.param(
        codec,
        marks=[
            pytest.mark.interop(client=CLIENT, role="publish", codec=name),
            pytest.mark.interop(client=CLIENT, role="play", codec=name),
        ],
    )


@pytest.mark.parametrize("codec", [marks("VP8", "VP8"), marks("H264", "H.264")])
async def test_chromium_publishes_and_plays(codec: str, tmp_path: Path) -> None:
    y4m = tmp_path / "scope.y4m"
    await asyncio.to_thread(write_y4m, y4m)
    data, port = tmp_path / "data", free_port()
    create = ("consult", "create", "--consent-by", "b", "--codec", codec, "--json", *NAMED_LINKS)
    created = json.loads(await asyncio.to_thread(endolink, data, port, *create))
    cid, links = created["id"], created["links"]
    token = (
        await asyncio.to_thread(
            endolink, data, port, "token", "--consultation", cid, "--role", "surgeon"
        )
    ).strip()
    server = Server(data, tmp_path / "server.log", port=port)
    try:
        await asyncio.to_thread(server.wait_ready)
        async with async_playwright() as pw:
            browser = await with_camera(pw, y4m)
            try:
                clinic, surgeon = await browser.new_page(), await browser.new_page()
                await clinic.goto(links["clinic"])
                await clinic.wait_for_selector("[data-testid=start-stream]:not([disabled])")
                await clinic.click("[data-testid=start-stream]")
                original = f"{server.url}/whep/{cid}?quality=original"  # the clinic's own frames
                async with viewer(original, token, kinds=("video",)) as (
                    _,
                    _,
                    received,
                ):
                    arrived = await wait_until(lambda: len(received.counters) >= FRAMES, 25)
                    assert arrived, len(received.counters)
                await surgeon.goto(links["surgeon"])
                await surgeon.wait_for_function(VIDEO_SHOWN_JS, timeout=20000)
                assert await played(surgeon, PLAYED)
            finally:
                await browser.close()
    finally:
        await asyncio.to_thread(server.stop)
    steps = [(b - a) % LOOP for a, b in zip(received.counters, received.counters[1:], strict=False)]
    assert all(0 < step < 10 for step in steps), received.counters
    # The clinic page keeps the frame rate and lets the picture shrink when its uplink estimate
    # or its CPU cannot carry 720p (web/js/uplink.js, "maintain-framerate"): any size of the
    # camera's 16:9 picture up to 1280×720 is what Chromium may send.
    assert received.sizes, "no picture"
    assert all(w <= 1280 and h <= 720 and abs(w / h - 16 / 9) < 0.02 for w, h in received.sizes)


async def played(page: Page, frames: int) -> bool:
    """The surgeon page's player decoded ``frames`` video frames within 30 s."""
    for _ in range(300):
        if await page.evaluate(FRAMES_DECODED_JS) >= frames:
            return True
        await asyncio.sleep(0.1)
    return False
