"""The pages on phones and tablets (portrait and landscape, touch) and on a desktop: nothing
overflows sideways, every drawing tool sits inside the viewport once the toolbar is open, the
video takes the room the screen has, and the replay player never overlaps the recordings list."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.keys import RECORDINGS, SETTINGS
from tests.replay_support import make_recording

from .conftest import Browser, LiveServer, chromium, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

PHONE, PHONE_LANDSCAPE = (390, 844), (844, 390)
TABLET, TABLET_LANDSCAPE = (768, 1024), (1024, 768)
DESKTOP = (1440, 900)
TOUCH_SIZES = (PHONE, PHONE_LANDSCAPE, TABLET, TABLET_LANDSCAPE)

# The video's share of the viewport, by size: on a phone in landscape it fills the height; in
# portrait it spans the width (16:9 then sets its height); elsewhere most of the screen.
VIDEO_SHARE = {
    PHONE: ("width", 0.9),
    PHONE_LANDSCAPE: ("height", 0.95),
    TABLET: ("width", 0.9),
    TABLET_LANDSCAPE: ("height", 0.65),
    DESKTOP: ("width", 0.65),
}

LAYOUT = """
(videoId) => {
  const vw = window.innerWidth, vh = window.innerHeight;
  const box = (el) => { const b = el.getBoundingClientRect();
    return {left: b.left, top: b.top, right: b.right, bottom: b.bottom, width: b.width, height: b.height}; };
  const inside = (b) => b.width > 0 && b.height > 0 && b.left >= -0.5 && b.top >= -0.5
    && b.right <= vw + 0.5 && b.bottom <= vh + 0.5;
  const tools = [...document.querySelectorAll('[data-testid="annotation-toolbar"] button, [data-testid="annotation-toolbar"] select')]
    .filter((el) => !el.closest('[hidden]'));
  const outside = tools.filter((el) => !inside(box(el))).map((el) => el.dataset.testid || el.id);
  // The element really on top at the centre of each tool: it can be tapped.
  const covered = tools.filter((el) => { const b = box(el);
    const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
    return !(hit && (hit === el || el.contains(hit))); }).map((el) => el.dataset.testid || el.id);
  const video = document.getElementById(videoId);
  return {vw, vh, scrollWidth: document.documentElement.scrollWidth, tools: tools.length,
          outside, covered, video: video ? box(video) : null,
          testids: tools.map((el) => el.dataset.testid || el.id)};
}
"""


@contextlib.asynccontextmanager
async def touch_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """A chromium that is a phone: touch events and the mobile viewport."""
    async with chromium(tmp_path / "touch", has_touch=True, is_mobile=True, viewport={"width": 390, "height": 844}) as harness:
        yield harness


async def open_toolbar(page) -> None:  # type: ignore[no-untyped-def]
    """Opens the collapsible toolbar where it is collapsed (small screens)."""
    toggle = page.get_by_test_id("tools-toggle")
    if await toggle.is_visible() and await toggle.get_attribute("aria-expanded") != "true":
        await toggle.tap()


async def layout(page, video_id: str, size: tuple[int, int]) -> dict:  # type: ignore[no-untyped-def]
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    await page.wait_for_timeout(150)  # one layout after the resize (media queries, observers)
    await open_toolbar(page)
    await page.wait_for_timeout(100)
    return await page.evaluate(LAYOUT, video_id)


async def test_probe(live_server: LiveServer, tmp_path: Path) -> None:
    consultation = await live_server.consultation(consent=True)
    cid = consultation.id
    async with touch_browser(tmp_path) as phone:
        for name, vid in (("surgeon", "remote-video"), ("clinic", "local-preview")):
            page = await phone.open(live_server.url(name, live_server.token(name, cid)), name)
            await expect(page.get_by_test_id("room-state")).to_contain_text("connected")
            for size in TOUCH_SIZES:
                m = await layout(page, vid, size)
                await page.screenshot(path=f"/tmp/wt-layout/{name}-{size[0]}x{size[1]}.png")
                print(name, size, m)
