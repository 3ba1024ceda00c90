"""The pages on phones and tablets (portrait and landscape, touch) and on a desktop: nothing
overflows sideways, every drawing tool sits inside the viewport once the toolbar is open, the
video takes the room the screen has, and the replay player never overlaps the recordings list."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from signaling.keys import RECORDINGS, SETTINGS
from tests.replay_support import make_recording

from .conftest import Browser, LiveServer, chromium, playwright_api
from .test_annotations import open_consultation

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
  const box = (el) => el.getBoundingClientRect().toJSON();
  const inside = (b) => b.width > 0 && b.height > 0 && b.left >= -0.5 && b.top >= -0.5
    && b.right <= vw + 0.5 && b.bottom <= vh + 0.5;
  const bar = '[data-testid="annotation-toolbar"]';
  const tools = [...document.querySelectorAll(`${bar} button, ${bar} select`)]
    .filter((el) => !el.closest('[hidden]'));
  const outside = tools.filter((el) => !inside(box(el))).map((el) => el.dataset.testid || el.id);
  // The element really on top at the centre of each tool: it can be tapped.
  const covered = tools.filter((el) => { const b = box(el);
    const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
    return !(hit && (hit === el || el.contains(hit))); }).map((el) => el.dataset.testid || el.id);
  const video = videoId ? document.getElementById(videoId) : null;
  return {vw, vh, scrollWidth: document.documentElement.scrollWidth, outside, covered,
          video: video ? box(video) : null, tools: tools.map((el) => el.dataset.testid || el.id)};
}
"""

# Both boxes (viewport px) and whether they intersect.
APART = """
([a, b]) => {
  const [p, q] = [a, b].map((s) => document.querySelector(s).getBoundingClientRect());
  const overlap = p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom;
  return {overlap, a: [p.left, p.top, p.right, p.bottom], b: [q.left, q.top, q.right, q.bottom],
          scrollWidth: document.documentElement.scrollWidth, vw: window.innerWidth};
}
"""

# Inside the viewport and the element on top at its centre (so a tap reaches it).
TAPPABLE = """
(testid) => {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  const b = el.getBoundingClientRect();
  const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
  return b.width > 0 && b.left >= 0 && b.top >= 0 && b.right <= window.innerWidth
    && b.bottom <= window.innerHeight && !!hit && (hit === el || el.contains(hit));
}
"""

SEEKED_TO = """
(t) => { const v = document.querySelector('[data-testid="replay-video"]');
         return !v.seeking && Math.abs(v.currentTime - t) < 0.25; }
"""

DRAWING = ["tool-pen", "tool-arrow", "tool-circle", "tool-rect", "tool-text", "tool-pointer"]
STYLE = [f"color-{c}" for c in ("green", "yellow", "cyan", "blue", "magenta", "white")] + [
    "width-thin",
    "width-medium",
    "width-thick",
    "text-size-small",
    "text-size-medium",
    "text-size-large",
    "fade",
    "undo",
]
EVERY_TOOL = {
    # "On the tissue" shows with a tool that can anchor: the surgeon starts with the pen
    "surgeon": [*DRAWING, "anchored", *STYLE, "clear", "freeze", "snapshot"],
    "clinic": [*DRAWING, *STYLE],
}


@contextlib.asynccontextmanager
async def touch_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """A chromium that is a phone: touch events and the mobile viewport."""
    phone = {
        "has_touch": True,
        "is_mobile": True,
        "viewport": {"width": PHONE[0], "height": PHONE[1]},
    }
    async with chromium(tmp_path / "touch", **phone) as harness:
        yield harness


async def resize(page, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Turns or changes the screen; waits two frames for the layout (media queries, observers)."""
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    await page.evaluate(
        "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )


async def open_toolbar(page, touch: bool) -> None:  # type: ignore[no-untyped-def]
    """Opens the toolbar where it is folded (small screens)."""
    toggle = page.get_by_test_id("tools-toggle")
    if await toggle.is_visible() and await toggle.get_attribute("aria-expanded") != "true":
        assert await page.evaluate(TAPPABLE, "tools-toggle")
        await (toggle.tap() if touch else toggle.click())
        await expect(toggle).to_have_attribute("aria-expanded", "true")


def assert_video_share(video: dict, size: tuple[int, int]) -> float:
    axis, share = VIDEO_SHARE[size]
    got = video[axis] / size[0 if axis == "width" else 1]
    assert got >= share, (size, axis, got, video)
    return got


async def check_live_page(page, name: str, video_id: str, size, touch: bool) -> str:  # type: ignore[no-untyped-def]
    """Every check at one size; returns a line of measurements."""
    await resize(page, size)
    await open_toolbar(page, touch)
    m = await page.evaluate(LAYOUT, video_id)
    assert m["scrollWidth"] <= size[0], (name, size, m["scrollWidth"])
    assert m["tools"] == EVERY_TOOL[name], (name, size, m["tools"])
    assert m["outside"] == [] and m["covered"] == [], (name, size, m)
    share = assert_video_share(m["video"], size)
    if size == PHONE_LANDSCAPE:  # turned sideways: the whole picture is brought into view
        assert abs(m["video"]["top"]) < 1 and abs(m["video"]["bottom"] - size[1]) < 1, m["video"]
    if await page.get_by_test_id("chat-toggle").is_visible():  # chat: a sheet on small screens
        assert await page.evaluate(TAPPABLE, "chat-toggle"), (name, size)
        chat = page.get_by_test_id("chat-toggle")
        await (chat.tap() if touch else chat.click())
        assert await page.evaluate(TAPPABLE, "chat-input"), (name, size)
        await (chat.tap() if touch else chat.click())
    else:
        assert await page.evaluate(TAPPABLE, "chat-input"), (name, size)
    box = m["video"]
    return f"{name} {size[0]}x{size[1]}: video {box['width']:.0f}x{box['height']:.0f} ({share:.0%})"


async def live_pages(live_server: LiveServer, browser: Browser) -> dict[str, object]:
    """The clinic streaming and the surgeon watching, each in its own window."""
    _, clinic, surgeon, _ = await open_consultation(live_server, browser)
    return {"clinic": clinic, "surgeon": surgeon}


VIDEO_IDS = {"clinic": "local-preview", "surgeon": "remote-video"}


async def test_live_pages_on_phones_and_tablets_either_way_round_with_touch(
    live_server: LiveServer, tmp_path: Path
) -> None:
    async with touch_browser(tmp_path) as phone:
        pages = await live_pages(live_server, phone)
        lines = []
        for size in TOUCH_SIZES:
            for name, page in pages.items():
                lines.append(await check_live_page(page, name, VIDEO_IDS[name], size, touch=True))
        # The folded toolbar works by touch: a tool picked on a phone is the one drawn with.
        surgeon = pages["surgeon"]
        await resize(surgeon, PHONE)
        await surgeon.get_by_test_id("tool-arrow").tap()
        await expect(surgeon.get_by_test_id("tool-arrow")).to_have_attribute("aria-pressed", "true")
        # Its words follow a language switch.
        await surgeon.evaluate("async () => (await import('/static/js/i18n.js')).setLanguage('ko')")
        await expect(surgeon.get_by_test_id("tools-toggle")).to_have_text("도구")
        large = surgeon.get_by_test_id("text-size-large")
        await expect(large).to_have_attribute("aria-label", "큰 글자")
    print("\n" + "\n".join(lines))


async def test_live_pages_on_a_desktop(live_server: LiveServer, browser: Browser) -> None:
    pages = await live_pages(live_server, browser)
    for name, page in pages.items():
        print(await check_live_page(page, name, VIDEO_IDS[name], DESKTOP, touch=False))
        # wide enough: the toolbar is never folded
        await expect(page.get_by_test_id("tools-toggle")).to_be_hidden()


async def test_replay_player_and_list_never_overlap(
    live_server: LiveServer, tmp_path: Path
) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title="Replay on a phone")
    await make_recording(
        app[SETTINGS].data_dir, app[RECORDINGS].index, consultation.id, title=consultation.title
    )
    link = live_server.url("replay", live_server.token(Role.SURGEON, consultation.id))
    async with touch_browser(tmp_path) as phone:
        page = await phone.open(link, "replay")
        item = page.get_by_test_id("recording-item").first
        await item.get_by_role("button").tap()
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=\"replay-video\"]').readyState >= 2"
        )
        for size in (*TOUCH_SIZES, DESKTOP):
            await resize(page, size)
            m = await page.evaluate(APART, [".recordings-panel", "#player"])
            assert not m["overlap"], (size, m)
            assert m["scrollWidth"] <= size[0], (size, m)
            # the one scrubber and its play button are on screen once scrolled to
            await page.get_by_test_id("play-toggle").scroll_into_view_if_needed()
            assert await page.evaluate(TAPPABLE, "play-toggle"), size
            video = await page.get_by_test_id("replay-video").bounding_box()
            assert video and video["x"] >= 0 and video["x"] + video["width"] <= size[0] + 0.5
            print(f"replay {size[0]}x{size[1]}: list {m['a']} player {m['b']}")

        # One scrubber: the video has no controls of its own; a tap or a drag on the time line
        # seeks (the 4 s recording: 50 % → 2 s, 75 % → 3 s), the button beside it plays.
        await resize(page, PHONE)
        video = page.get_by_test_id("replay-video")
        assert await video.evaluate("(v) => v.controls") is False
        track = page.locator("#timeline-track")
        await track.scroll_into_view_if_needed()
        box = await track.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        await page.touchscreen.tap(box["x"] + box["width"] * 0.5, y)
        await page.wait_for_function(SEEKED_TO, arg=2.0)
        await page.mouse.move(box["x"] + box["width"] * 0.5, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=8)
        await page.mouse.up()
        await page.wait_for_function(SEEKED_TO, arg=3.0)
        await video.evaluate("(v) => { v.muted = true; }")
        await page.get_by_test_id("play-toggle").tap()
        await expect(page.get_by_test_id("play-toggle")).to_have_attribute("aria-pressed", "true")
        await page.wait_for_function(
            "() => document.querySelector('#replay-video').currentTime > 3.2"
        )


async def test_landing_and_join_pages_fit_every_size(
    live_server: LiveServer, tmp_path: Path
) -> None:
    async with touch_browser(tmp_path) as phone:
        landing = await phone.open(live_server.url(""), "landing")
        join = await phone.open(f"{live_server.base_url}/j/AAAAAAAAAAAAAA", "join")
        await expect(join.get_by_test_id("session-error")).to_be_visible()
        for size in (*TOUCH_SIZES, DESKTOP):
            for page in (landing, join):
                await resize(page, size)
                width = await page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= size[0], (page.url, size, width)
