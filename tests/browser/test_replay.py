"""The replay page in a real browser: it lists a recording, plays it through a media token with
Range seeking, and draws a known mark on the overlay at its time and not before; the live pages
show the recording indicator the server announces."""

from __future__ import annotations

import time

import pytest

from recorder.recordings import RecordingState
from signaling.keys import HUB, RECORDINGS, SETTINGS
from signaling.ws.messages import RecordingUpdate
from tests.replay_support import at, make_recording, stroke, write_log

from .conftest import Browser, LiveServer, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

MARK_ADD, MARK_REMOVE = 2.0, 4.0

VIDEO_STATE = """
() => {
  const v = document.querySelector('[data-testid="replay-video"]');
  return {readyState: v.readyState, currentTime: v.currentTime, duration: v.duration,
          paused: v.paused, width: v.videoWidth, seeking: v.seeking, src: v.currentSrc};
}
"""

# The overlay pixel at normalised frame position (nx, ny), with the picture rectangle computed
# here from the element box and the frame size (object-fit: contain), not taken from the page.
OVERLAY_PIXEL = """
([nx, ny]) => {
  const v = document.querySelector('[data-testid="replay-video"]');
  const c = document.querySelector('[data-testid="replay-overlay"]');
  const vb = v.getBoundingClientRect(), cb = c.getBoundingClientRect();
  const scale = Math.min(vb.width / v.videoWidth, vb.height / v.videoHeight);
  const w = v.videoWidth * scale, h = v.videoHeight * scale;
  const x = vb.left + (vb.width - w) / 2 + nx * w - cb.left;
  const y = vb.top + (vb.height - h) / 2 + ny * h - cb.top;
  const px = Math.round(x * c.width / cb.width), py = Math.round(y * c.height / cb.height);
  const d = c.getContext("2d").getImageData(px, py, 1, 1).data;
  return {rgba: Array.from(d), t: parseFloat(c.dataset.t), marks: c.dataset.marks};
}
"""


async def wait_for(page, script: str, arg=None, timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
    """Polls ``script`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script, arg)
        if value:
            return value
        await page.wait_for_timeout(50)
    raise AssertionError(f"timed out; last value {value!r}")


async def pixel_at(page, t: float, point: tuple[float, float] = (0.5, 0.5)) -> dict:
    """Seek to recording time ``t`` (paused) and read the overlay at ``point`` (normalised; by
    default where the stroke runs)."""
    await page.evaluate(
        "(t) => { const v = document.querySelector('[data-testid=\"replay-video\"]');"
        " v.pause(); v.currentTime = t; }",
        t,
    )
    return await wait_for(
        page,
        f"""() => {{
          const v = document.querySelector('[data-testid="replay-video"]');
          const c = document.querySelector('[data-testid="replay-overlay"]');
          if (v.seeking || Math.abs(v.currentTime - {t}) > 0.05) return null;
          if (Math.abs(parseFloat(c.dataset.t) - v.currentTime) > 0.05) return null;
          return ({OVERLAY_PIXEL})({list(point)});
        }}""",
    )


def is_green(rgba: list[int]) -> bool:
    r, g, b, a = rgba
    return a > 200 and g > 180 and r < 80 and b < 160


async def test_the_replay_page_lists_plays_seeks_and_draws_marks_in_sync(
    live_server: LiveServer, browser: Browser
) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title="Replay in a browser")
    cid = consultation.id
    data = app[SETTINGS].data_dir
    made = await make_recording(
        data, app[RECORDINGS].index, cid, title=consultation.title, segments=(5.0,)
    )
    write_log(
        data,
        cid,
        [
            at(made, MARK_ADD, op="add", by="surgeon-test", annotation=stroke()),
            at(made, MARK_REMOVE, op="remove", by="surgeon-test", id="m1"),
        ],
    )
    link = live_server.url("replay", live_server.token("surgeon", cid))
    page = await browser.open(link, "replay")

    items = page.get_by_test_id("recordings-list").get_by_test_id("recording-item")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Replay in a browser")
    await expect(items.first).to_contain_text("Dr. Test")
    await expect(items.first.locator("img.thumb")).to_have_js_property("complete", True)
    assert await items.first.locator("img.thumb").evaluate("(img) => img.naturalWidth") == 320
    assert "#token" not in page.url and "token=" not in page.url

    await items.first.get_by_role("button").click()
    await wait_for(page, f"({VIDEO_STATE})().readyState >= 2")
    video = await page.evaluate(VIDEO_STATE)
    assert abs(video["duration"] - 5.0) < 0.3 and video["width"] == 320
    assert "/media/1?t=" in video["src"]
    await expect(page.get_by_test_id("integrity")).to_have_attribute("data-state", "ok")

    # it plays (muted autoplay is allowed by the test browser's policy)
    await page.evaluate(
        "() => { const v = document.querySelector('[data-testid=\"replay-video\"]');"
        " v.muted = true; return v.play(); }"
    )
    await wait_for(page, f"({VIDEO_STATE})().currentTime > 0.5")
    # the surgeon's talk-back plays along in its own <audio>, on the video's clock
    talkback = await wait_for(
        page,
        "() => { const s = window.endolink.replay.talkback;"
        " return s && !s.paused && Math.abs(s.drift) < 0.3 ? s : null; }",
    )
    assert abs(talkback["drift"]) < 0.3

    # the timeline has the mark's marker; clicking it jumps there and the mark is drawn
    marker = page.get_by_test_id("timeline").locator(".timeline-marker[data-kind='annotation']")
    await expect(marker).to_have_count(1)
    await page.evaluate("() => document.querySelector('[data-testid=\"replay-video\"]').pause()")
    await marker.click()
    jumped = await wait_for(
        page,
        f"""() => {{ const s = ({VIDEO_STATE})();
            return !s.seeking && Math.abs(s.currentTime - {MARK_ADD}) < 0.05 ? s : null; }}""",
    )
    assert abs(jumped["currentTime"] - MARK_ADD) < 0.05

    # seek (Range requests) around the mark: present near its time, absent well before/after
    for t, present in [(2.5, True), (0.5, False), (3.8, True), (1.5, False), (4.6, False)]:
        sample = await pixel_at(page, t)
        assert is_green(sample["rgba"]) is present, (t, sample)
    state = await page.evaluate("() => window.endolink.replay")
    assert state["recording"] == made.id and state["segment"] == 1

    # hiding marks (and filtering by author) clears the overlay
    sample = await pixel_at(page, 3.0)
    assert is_green(sample["rgba"])
    await page.get_by_test_id("author-toggle").uncheck()
    await wait_for(page, f"({OVERLAY_PIXEL})([0.5, 0.5]).rgba[3] === 0")
    await page.get_by_test_id("author-toggle").check()
    await wait_for(page, f"({OVERLAY_PIXEL})([0.5, 0.5]).rgba[3] > 200")
    await page.get_by_test_id("toggle-annotations").uncheck()
    await wait_for(page, f"({OVERLAY_PIXEL})([0.5, 0.5]).rgba[3] === 0")
    await page.get_by_test_id("toggle-annotations").check()

    # the annotated export runs with a progress bar and ends with a download link
    await expect(page.get_by_test_id("download")).to_be_enabled()
    await page.get_by_test_id("export-annotated").click()
    await expect(page.get_by_test_id("export-download")).to_be_visible(timeout=30_000)
    assert await page.get_by_test_id("export-progress").evaluate("(p) => p.value") == 100


async def test_the_live_pages_show_the_recording_indicator(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True)
    cid = consultation.id
    page = await browser.open(live_server.url("surgeon", live_server.token("surgeon", cid)), "s")
    await expect(page.get_by_test_id("room-state")).to_have_attribute("data-state", "connected")
    indicator = page.get_by_test_id("recording-indicator")
    await expect(indicator).to_be_hidden()
    hub = live_server.app[HUB]

    def recording(state: str, reason: str | None = None) -> RecordingUpdate:
        return RecordingUpdate(RecordingState(state), "r", reason, 1)

    hub.broadcast(cid, recording("recording"))
    await expect(indicator).to_be_visible()
    await expect(indicator).to_have_attribute("data-state", "recording")
    hub.broadcast(cid, recording("paused"))
    await expect(indicator).to_have_attribute("data-state", "paused")
    hub.broadcast(cid, recording("stopped", "low-disk"))
    await expect(indicator).to_contain_text("disk is full")
    hub.broadcast(cid, recording("stopped", "feed-offline"))
    await expect(indicator).to_be_hidden()
