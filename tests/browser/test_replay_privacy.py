"""The replay page in a real browser blurs a part filmed outside the body, says why in plain words,
shows the part on the timeline, and shows it unblurred only after the viewer asked and the server
audited it."""

from __future__ import annotations

import pytest

from recorder.manifest import OutOfBodySpan, write_manifest
from signaling.keys import AUDIT, HUB, RECORDINGS, SETTINGS
from signaling.ws.messages import PrivacyUpdate
from tests.replay_support import make_recording

from .conftest import Browser, LiveServer, playwright_api
from .test_replay import VIDEO_STATE, wait_for

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

SPAN = (2.0, 4.0)

SEEK_AND_STATE = """
async (t) => {
  const v = document.querySelector('[data-testid="replay-video"]');
  v.pause();
  v.currentTime = t;
  await new Promise((resolve) => v.addEventListener("seeked", resolve, { once: true }));
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  return { filter: getComputedStyle(v).filter, ...window.endolink.replay.privacy };
}
"""


async def test_a_part_outside_the_body_is_blurred_until_the_viewer_asks(
    live_server: LiveServer, browser: Browser
) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title="Privacy in replay")
    data = app[SETTINGS].data_dir
    made = await make_recording(
        data, app[RECORDINGS].index, consultation.id, title=consultation.title, segments=(6.0,)
    )
    made.manifest.out_of_body = [OutOfBodySpan(*SPAN)]
    write_manifest(made.directory, made.manifest)

    page = await browser.open(
        live_server.url("replay", live_server.token("surgeon", consultation.id)), "replay"
    )
    items = page.get_by_test_id("recordings-list").get_by_test_id("recording-item")
    await items.first.get_by_role("button").click()
    await wait_for(page, f"({VIDEO_STATE})().readyState >= 2")

    bar = page.get_by_test_id("timeline-privacy")
    await expect(bar).to_have_count(1)
    assert await bar.get_attribute("data-start") == "2.000"

    before = await page.evaluate(SEEK_AND_STATE, 1.0)
    assert not before["blurred"] and before["filter"] == "none"
    await expect(page.get_by_test_id("privacy-veil")).to_be_hidden()

    inside = await page.evaluate(SEEK_AND_STATE, 3.0)
    assert inside["blurred"] and "blur" in inside["filter"], inside
    veil = page.get_by_test_id("privacy-veil")
    await expect(veil).to_be_visible()
    await expect(page.get_by_test_id("privacy-text")).to_contain_text("outside the body")
    await expect(page.get_by_test_id("privacy-text")).to_contain_text("0:02")

    await page.get_by_test_id("privacy-reveal").click()
    await expect(veil).to_be_hidden()
    shown = await page.evaluate(SEEK_AND_STATE, 3.5)
    assert not shown["blurred"] and shown["filter"] == "none" and shown["revealed"] == [0]

    trail = await app[AUDIT].trail(consultation.id, 0, 500)
    reveals = [e for e in trail if "outside the body" in (e.detail or "")]
    assert len(reveals) == 1 and reveals[0].action == "replay"
    assert reveals[0].recording_id == made.id and "2.0 s to 4.0 s" in reveals[0].detail

    after = await page.evaluate(SEEK_AND_STATE, 5.0)
    assert not after["blurred"]


async def test_the_live_pages_say_when_the_camera_is_outside_the_body(
    live_server: LiveServer, browser: Browser
) -> None:
    """The words differ: the clinic is told the recording will blur it, the surgeon what may be
    seen. (The guard's verdict itself is tested with real frames in tests/recorder.)"""
    consultation = await live_server.consultation(consent=True)
    cid = consultation.id
    hub = live_server.app[HUB]
    pages = {
        role: await browser.open(live_server.url(role, live_server.token(role, cid)), role)
        for role in ("surgeon", "clinic")
    }
    for page in pages.values():
        await expect(page.get_by_test_id("room-state")).to_have_attribute("data-state", "connected")
    hub.broadcast(cid, PrivacyUpdate(True))
    surgeon = pages["surgeon"].locator(".notice[data-key='out-of-body']")
    clinic = pages["clinic"].locator(".notice[data-key='out-of-body']")
    await expect(surgeon).to_contain_text("outside the body")
    await expect(surgeon).to_contain_text("examination room")
    await expect(clinic).to_contain_text("blurred")
    hub.broadcast(cid, PrivacyUpdate(False))
    await expect(surgeon).to_have_count(0)
    await expect(clinic).to_have_count(0)
