"""A live consultation survives the server: killed, down for seconds, restarted on the same data.

The server runs as a real process (``endolink serve``) on a fixed port with its own data
directory; the pages are real Chromium pages (clinic publishing the fake camera, surgeon
watching). The 60 s variant and repeated runs are ``python -m bench.recovery``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.common import free_port
from bench.recovery import (
    CLINIC_LOST_TEXT,
    SURGEON_LOST_TEXT,
    create_consultation,
    start_stream,
    wait_moving,
)
from bench.serverproc import ServerProcess

from .conftest import Browser, LiveServer, chromium, notice_shown, playwright_api, record_notice

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

DOWN_S = 7.0
HONEST_WITHIN_MS = 3_000
MOVING_WITHIN_S = 5.0
PHONE = {"width": 390, "height": 844}
ROLES = ("clinic", "surgeon")

BANNER_JS = """document.querySelector('[data-testid="notices"] [data-key="link"]')?.textContent"""
CLINIC_TOLD = f"""() => {{
  const q = (id) => document.querySelector(`[data-testid="${{id}}"]`);
  return ({BANNER_JS} || "").includes("{CLINIC_LOST_TEXT}")
    && !q("not-sent-badge").hidden
    && q("stats").dataset.reaching === "false";
}}"""
SURGEON_TOLD = f"""() => {{
  const q = (id) => document.querySelector(`[data-testid="${{id}}"]`);
  const rec = q("recording-indicator");
  return ({BANNER_JS} || "").includes("{SURGEON_LOST_TEXT}")
    && (rec.hidden || rec.dataset.state === "unknown")
    && q("presence").textContent.includes("reconnecting")
    && q("publisher-state").dataset.state === "unknown";
}}"""


def banner(page):  # type: ignore[no-untyped-def]
    return page.locator('[data-testid="notices"] [data-key="link"]')


@dataclass
class Running:
    server: ServerProcess
    links: dict[str, str]
    "Invite links of a consultation with consent on record."


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, tmp_path / "server.log")
    links = create_consultation(server.data_dir, port)
    server.start()
    await server.wait_accepting()
    try:
        yield Running(server, links)
    finally:
        server.stop()
        print("\n--- server log ---\n" + server.log_path.read_text(errors="replace")[-4000:])


async def test_pages_say_what_happens_and_come_back_within_seconds_after_a_server_restart(
    running: Running, tmp_path: Path
) -> None:
    server = running.server
    async with chromium(tmp_path) as browser:
        clinic = await browser.open(running.links["clinic"], "clinic", window=True)
        surgeon = await browser.open(running.links["surgeon"], "surgeon", window=True)
        await start_stream(clinic)
        await wait_moving(surgeon, 15)
        talk = surgeon.get_by_test_id("talk-state")
        await surgeon.get_by_test_id("talk-toggle").click()
        await expect(talk).to_have_attribute("data-state", "on", timeout=10_000)
        recording = surgeon.get_by_test_id("recording-indicator")
        await expect(recording).to_have_attribute("data-state", "recording", timeout=5_000)

        killed = time.monotonic()
        console_before = len(browser.console)
        server.kill()

        # Within 3 s both pages say what is known, in plain words, one banner each.
        await asyncio.gather(
            clinic.wait_for_function(CLINIC_TOLD, timeout=HONEST_WITHIN_MS),
            surgeon.wait_for_function(SURGEON_TOLD, timeout=HONEST_WITHIN_MS),
        )
        told_s = time.monotonic() - killed
        assert told_s <= HONEST_WITHIN_MS / 1000
        await expect(banner(clinic)).to_contain_text(CLINIC_LOST_TEXT)
        await expect(banner(surgeon)).to_contain_text(SURGEON_LOST_TEXT)
        await expect(surgeon.get_by_test_id("remote-overlay")).to_contain_text(SURGEON_LOST_TEXT)
        for page in (clinic, surgeon):
            assert await page.locator('[data-testid="notices"] .notice').count() == 1
        await expect(talk).to_contain_text("the clinic cannot hear you")

        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))
        # Probing about once a second: the console gets a bounded trickle, not a flood.
        outage_lines = len(browser.console) - console_before
        assert outage_lines <= 4 * DOWN_S, browser.console[console_before:]

        # "Reconnected." shows for 4 s from each page's own reconnection, which may come well
        # before the picture moves: each page records every text its banner shows from now on.
        for page in (surgeon, clinic):
            await record_notice(page, "link")
        server.start()
        answered = await server.wait_accepting()
        moving = await wait_moving(surgeon, 20)
        print(f"\nhonest states within {told_s:.2f} s; picture moving {moving - answered:.2f} s")
        assert moving - answered <= MOVING_WITHIN_S
        for page in (surgeon, clinic):
            await notice_shown(page, "link", "Reconnected.", timeout=25_000)
        await expect(clinic.get_by_test_id("not-sent-badge")).to_be_hidden()
        await expect(recording).not_to_have_attribute("data-state", "unknown")
        await expect(surgeon.get_by_test_id("publisher-state")).to_have_attribute(
            "data-state", "live"
        )
        await expect(talk).to_have_attribute("data-state", "on", timeout=5_000)
        await clinic.wait_for_function(TALKBACK_CONNECTED, timeout=5_000)
        for page in (surgeon, clinic):
            await expect(banner(page)).to_have_count(0, timeout=8_000)


TALKBACK_CONNECTED = "() => window.endolink.talkbackPc?.connectionState === 'connected'"

CUT_CLINIC_MEDIA = """() => {
  // The clinic's network dies: media stops, no DELETE (a crash, not a Stop).
  for (const sender of window.endolink.publishPc.getSenders()) sender.replaceTrack(null);
}"""


async def test_the_surgeon_tells_a_stopped_stream_from_a_lost_one_at_phone_size(
    live_server: LiveServer, browser: Browser
) -> None:
    cid = (await live_server.consultation(consent=True)).id
    link = {role: live_server.url(role, live_server.token(role, cid)) for role in ROLES}
    clinic = await browser.open(link["clinic"], "clinic")
    surgeon = await browser.open(link["surgeon"], "surgeon", window=True)
    await surgeon.set_viewport_size(PHONE)
    overlay = surgeon.get_by_test_id("remote-overlay")

    await start_stream(clinic)
    await wait_moving(surgeon, 15)
    await clinic.get_by_test_id("stop-stream").click()
    await expect(banner(surgeon)).to_have_text("The clinic ended the stream.", timeout=5_000)
    await expect(overlay).to_contain_text("The clinic ended the stream.")
    await assert_within_phone_width(surgeon)

    await start_stream(clinic)
    await wait_moving(surgeon, 15)
    await expect(banner(surgeon)).to_have_count(0, timeout=5_000)
    await clinic.evaluate(CUT_CLINIC_MEDIA)
    lost = "The clinic’s connection was lost — reconnecting"
    await expect(banner(surgeon)).to_contain_text(lost, timeout=6_000)
    await expect(overlay).to_contain_text(lost)
    assert await surgeon.locator('[data-testid="notices"] .notice').count() == 1
    await assert_within_phone_width(surgeon)


async def assert_within_phone_width(page) -> None:  # type: ignore[no-untyped-def]
    box = await banner(page).bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box


async def test_a_participant_whose_connection_broke_shows_as_reconnecting(
    live_server: LiveServer, browser: Browser
) -> None:
    """The surgeon's room connection breaks (the page's own "reconnecting" close, as after a
    network change): the clinic reads "reconnecting…", not "offline", until it is back."""
    expect = playwright_api.expect
    consultation = await live_server.consultation(consent=True)
    cid = consultation.id
    clinic = await browser.open(
        live_server.url("clinic", live_server.token("clinic", cid)), "clinic"
    )
    chip = clinic.get_by_test_id("surgeon-presence")
    await expect(chip).to_have_attribute("data-state", "offline")
    surgeon = live_server.token("surgeon", cid)
    url = f"{live_server.base_url.replace('http', 'ws', 1)}/ws/{cid}"
    headers = {"Authorization": f"Bearer {surgeon}"}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers=headers)
        await expect(chip).to_have_attribute("data-state", "online")
        await ws.close(code=4000, message=b"reconnecting")
        await expect(chip).to_have_attribute("data-state", "reconnecting")
        row = clinic.locator('#presence li[data-role="surgeon"]')
        await expect(row).to_contain_text("reconnecting…")
        ws = await http.ws_connect(url, headers=headers)
        await expect(chip).to_have_attribute("data-state", "online")
        await expect(row).not_to_contain_text("reconnecting")
        await ws.close()
        await expect(chip).to_have_attribute(
            "data-state", "offline"
        )  # closed on purpose: gone at once
