"""The replay page logs off after a time without interaction: playback stops, both tokens are
forgotten, and the page says why in plain words."""

from __future__ import annotations

from dataclasses import replace

import pytest

from signaling.keys import RECORDINGS, SETTINGS
from signaling.settings import Settings
from tests.replay_support import make_recording

from .conftest import Browser, LiveServer, playwright_api
from .test_replay import VIDEO_STATE, wait_for

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

IDLE_S = 3.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, replay_idle_s=IDLE_S)


async def test_an_idle_replay_page_logs_off(live_server: LiveServer, browser: Browser) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title="Idle replay")
    await make_recording(
        app[SETTINGS].data_dir, app[RECORDINGS].index, consultation.id, segments=(5.0,)
    )
    page = await browser.open(
        live_server.url("replay", live_server.token("surgeon", consultation.id)), "replay"
    )
    items = page.get_by_test_id("recordings-list").get_by_test_id("recording-item")
    await items.first.get_by_role("button").click()
    await wait_for(page, f"({VIDEO_STATE})().readyState >= 2")
    assert await page.evaluate("() => window.endolink.replay.mediaTokenExpiresAt") is not None

    # Moving the mouse keeps it; then nothing for IDLE_S logs it off.
    for _ in range(3):
        await page.wait_for_timeout(IDLE_S * 1000 / 2)
        await page.mouse.move(10, 10)
        await page.mouse.move(20, 20)
    assert await page.get_by_test_id("replay-video").is_visible()
    await page.evaluate("() => document.querySelector('[data-testid=\"replay-video\"]').pause()")

    fatal = page.locator("#fatal")
    await expect(fatal).to_be_visible(timeout=(IDLE_S + 3) * 1000)
    await expect(fatal).to_contain_text("Logged off after inactivity")
    await expect(fatal).to_contain_text("Open your link again")
    video = page.get_by_test_id("replay-video")
    assert await video.get_attribute("src") is None
    assert await video.evaluate("(v) => v.paused")
    assert await page.evaluate("() => window.endolink.replay.mediaTokenExpiresAt") is None
    stored = await page.evaluate("() => Object.keys(sessionStorage)")
    assert not [key for key in stored if "replay" in key], stored
