"""A page whose consultation's links are withdrawn says so in plain words and stops trying."""

from __future__ import annotations

import pytest

from signaling.keys import REVOCATIONS, STORE

from .conftest import Browser, LiveServer, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


async def test_the_surgeon_page_says_its_links_were_withdrawn(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True, title="Withdrawn")
    page = await browser.open(
        live_server.url("surgeon", live_server.token("surgeon", consultation.id)), "surgeon"
    )
    chip = page.get_by_test_id("room-state")
    await expect(chip).to_have_attribute("data-state", "connected", timeout=10_000)
    await live_server.app[STORE].revoke_access(consultation.id)
    await live_server.app[REVOCATIONS].refresh()
    notices = page.get_by_test_id("notices")
    await expect(notices).to_contain_text(
        "access to this consultation was withdrawn", timeout=5_000
    )
    await expect(notices).to_contain_text("Ask the consultation coordinator for a new link")
    await expect(chip).to_have_attribute("data-state", "closed")
    browser.console.clear()  # the refusals that follow the withdrawal are the expected ones
