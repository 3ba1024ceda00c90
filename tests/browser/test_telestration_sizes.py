"""The laser pointer and labels at the size a surgeon needs: the laser is a large ring in the
author's colour with dark outlines that stays while the pointer moves (well past a second), and
a label takes the toolbar's text size on the other page's canvas and in the burned-in picture."""

from __future__ import annotations

import time

import numpy as np
import pytest

from relay.overlay import draw_bgr
from signaling.keys import RELAY

from .conftest import Browser, LiveServer
from .test_annotations import GREEN, pointer_radius, surgeon_with_tool, wait_marks

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

# Opaque pixels of the overlay canvas near `color`, near black and white, and the box (CSS px)
# of the coloured ones.
CANVAS_PIXELS = """
(color) => {
  const c = document.querySelector('[data-testid="annotation-canvas"]');
  const box = c.getBoundingClientRect();
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let colored = 0, dark = 0, white = 0, top = Infinity, bottom = -1, left = Infinity, right = -1;
  for (let i = 0; i < d.length; i += 4) {
    const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
    if (d[i + 3] > 200 && r + g + b < 60) dark += 1;
    if (d[i + 3] < 250) continue;
    if (r > 235 && g > 235 && b > 235) white += 1;
    if (Math.abs(r - color[0]) + Math.abs(g - color[1]) + Math.abs(b - color[2]) > 40) continue;
    colored += 1;
    const p = i / 4, x = p % c.width, y = Math.floor(p / c.width);
    top = Math.min(top, y); bottom = Math.max(bottom, y);
    left = Math.min(left, x); right = Math.max(right, x);
  }
  const scale = c.height / box.height;
  return {colored, dark, white, height: colored ? (bottom - top + 1) / scale : 0,
          width: colored ? (right - left + 1) / scale : 0};
}
"""


async def test_the_laser_is_a_large_outlined_ring_that_stays_while_it_moves(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, s_pic, c_pic = await surgeon_with_tool(live_server, browser, "pointer")
    samples = []
    started = time.monotonic()
    # 2.5 s of slow circling, the clinic's canvas read every ~0.25 s.
    for step in range(26):
        angle = step / 26 * 2 * np.pi
        await surgeon.mouse.move(
            *s_pic.page_xy(0.5 + 0.2 * np.cos(angle), 0.5 + 0.2 * np.sin(angle))
        )
        await surgeon.wait_for_timeout(100)
        if step >= 4 and step % 2 == 0:
            samples.append(await clinic.evaluate(CANVAS_PIXELS, list(GREEN)))
    moved_s = time.monotonic() - started
    assert moved_s > 2.0
    ring = 2 * pointer_radius(c_pic)
    for sample in samples:
        assert sample["colored"] > 50, samples  # never faded while moving
        assert sample["dark"] > 50 and sample["white"] > 10, sample  # outline and core
        assert sample["height"] >= 0.9 * ring, (sample, ring)
    print(f"laser ring {samples[-1]['height']:.0f} px on a {c_pic.height:.0f} px picture")


async def test_the_text_size_sets_the_label_height_on_the_page_and_burned_in(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation, clinic, surgeon, s_pic, c_pic = await surgeon_with_tool(
        live_server, browser, "text"
    )
    board = live_server.app[RELAY].router(consultation.id, "VP8").board
    shares: dict[str, tuple[float, float]] = {}
    for size_id, size in (("small", 0.03), ("large", 0.08)):
        await surgeon.get_by_test_id(f"text-size-{size_id}").click()
        await surgeon.mouse.click(*s_pic.page_xy(0.1, 0.5))
        await surgeon.get_by_test_id("annotation-text-input").fill("HH")
        await surgeon.get_by_test_id("annotation-text-input").press("Enter")
        [mark] = await wait_marks(clinic, 1)
        assert mark["size"] == size and mark["width"] == 0.008  # the line width is untouched
        drawn = await clinic.evaluate(CANVAS_PIXELS, list(GREEN))
        # Burned in: the server's copy drawn by the rendition's code on a 640×360 frame.
        frame = np.zeros((360, 640, 3), np.uint8)
        draw_bgr(frame, board.visible(time.time()))
        rows = np.nonzero((frame[:, :, 1] > 128).any(axis=1))[0]
        shares[size_id] = (drawn["height"] / c_pic.height, (rows.max() - rows.min() + 1) / 360)
        await surgeon.get_by_test_id("undo").click()
        await wait_marks(clinic, 0)
    print("label cap height / picture height (page, burned in):", shares)
    for size_id, size in (("small", 0.03), ("large", 0.08)):
        page_share, burned_share = shares[size_id]
        assert page_share == pytest.approx(size, rel=0.2), shares
        assert burned_share == pytest.approx(size, rel=0.2), shares
