"""A planned restart is said in words: the server's ``restarting`` message (sent on SIGTERM just
before the sockets close with 1001) makes a live page show "The server is restarting…" in its
language, and the notice goes once the page is back in the room.

The server here keeps running, so the page is back within a fraction of a second: the notice is
caught by a MutationObserver in the page rather than by polling, which could miss it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from signaling.keys import HUB
from signaling.ws.messages import Restarting

from .conftest import Browser, LiveServer, notice_shown, playwright_api, record_notice

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

CATALOGUES = Path(__file__).resolve().parents[2] / "web" / "i18n"


@pytest.mark.parametrize("language", ["en", "ko"])
async def test_the_page_says_the_server_is_restarting_and_clears_it_when_back(
    browser: Browser, live_server: LiveServer, language: str
) -> None:
    text = json.loads((CATALOGUES / f"{language}.json").read_text())["room.serverRestarting"]
    consultation = await live_server.consultation(consent=True)
    token = live_server.token(Role.SURGEON, consultation.id)
    page = await browser.open(live_server.url(f"surgeon?lang={language}", token), "surgeon")
    room = page.get_by_test_id("room-state")
    await expect(room).to_have_attribute("data-state", "connected")

    await record_notice(page, "restarting")
    await live_server.app[HUB].close_all(1001, "server restarting", farewell=Restarting())
    await notice_shown(page, "restarting", text, timeout=5_000)
    assert await page.evaluate("() => window.noticeTexts.restarting") == [text]
    # The page reconnects and the notice goes.
    await expect(room).to_have_attribute("data-state", "connected", timeout=15_000)
    notice = page.locator('[data-testid="notices"] [data-key="restarting"]')
    await expect(notice).to_have_count(0, timeout=15_000)
