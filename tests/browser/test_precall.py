"""The clinic's pre-call check in a real Chromium with its fake camera and microphone: the meter
hears the fake microphone's beeps, the speaker chime is confirmed, the network test measures a
round trip and both throughputs against the real server, and a result line says ready / ready
with warnings / not ready without ever disabling Start. Re-run, fold away, and at 390×844 (in
Mongolian) no sideways overflow.

Screenshots go to ``$ENDOLINK_SCREENSHOTS`` (default: the test's tmp dir); paths are printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from signaling.auth.grants import Role

from .conftest import Browser, LiveServer, playwright_api
from .test_chat import SIDEWAYS_OVERFLOW, shot_dir

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

FINISHED = """
() => { const r = window.endolink.precall; return r && ["ok", "warn", "bad"].includes(r.result); }
"""
PANEL_BOX = """
() => {
  const r = document.querySelector('[data-testid="precall"]').getBoundingClientRect();
  return {left: r.left, right: r.right, vw: document.documentElement.clientWidth};
}
"""


async def open_clinic(
    browser: Browser, live_server: LiveServer, size: tuple[int, int], lang: str | None = None
) -> Any:
    consultation = await live_server.consultation(consent=True)
    token = live_server.token(Role.CLINIC, consultation.id)
    page = await browser.open("about:blank", "clinic", window=True)
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    query = f"?lang={lang}" if lang else ""
    await page.goto(f"{live_server.base_url}/clinic{query}#token={token}")
    await expect(page.get_by_test_id("start-stream")).to_be_enabled(timeout=15_000)  # camera open
    return page


async def run_check(page: Any) -> dict[str, Any]:
    """Runs the whole check (opening the folded panel runs it the first time), confirms the
    chime, and returns the page's figures."""
    panel = page.get_by_test_id("precall")
    if await panel.get_attribute("open") is None:
        await expect(page.get_by_test_id("precall-chip")).to_have_text("not run")
        await page.locator("#precall summary").click()
    else:
        await page.get_by_test_id("precall-run").click()
    await expect(page.get_by_test_id("precall-speaker")).to_have_attribute("data-tone", "idle")
    await expect(page.get_by_test_id("precall-mic")).to_have_attribute(
        "data-tone", "ok", timeout=10_000
    )
    await page.get_by_test_id("precall-play").click()
    await page.get_by_test_id("precall-heard").click()
    await page.wait_for_function(FINISHED, timeout=30_000)
    figures: dict[str, Any] = await page.evaluate("() => window.endolink.precall")
    return figures


async def test_the_whole_check_runs_on_the_clinic_page_and_never_blocks_the_stream(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    page = await open_clinic(browser, live_server, (1440, 900))
    result = page.get_by_test_id("precall-result")
    figures = await run_check(page)
    print(f"pre-call check at 1440x900: {figures}")
    assert figures["micPeak"] > 0  # the fake microphone's beeps reached the analyser
    assert figures["rttMs"] > 0
    assert figures["downloadKbps"] > 0 and figures["uploadKbps"] > 0
    meter = page.get_by_test_id("precall-mic-meter")
    assert int(await meter.get_attribute("aria-valuenow") or "0") >= 0
    await expect(page.get_by_test_id("precall-mic")).to_have_text(
        "Sound heard: the microphone works."
    )
    await expect(page.get_by_test_id("precall-speaker")).to_have_attribute("data-tone", "ok")
    await expect(page.get_by_test_id("precall-rtt")).to_contain_text("Round trip")
    await expect(page.get_by_test_id("precall-download")).to_contain_text("Mbit/s")
    # On loopback the upload is far above what HD video needs.
    await expect(page.get_by_test_id("precall-upload")).to_contain_text("enough for HD video")
    await expect(result).to_have_text(
        # The fake camera may deliver less than 1280 wide: then the camera is a warning.
        re.compile(r"^(Ready: everything|Ready, with warnings: Camera\.)")
    )
    await expect(page.get_by_test_id("start-stream")).to_be_enabled()
    assert await page.evaluate(SIDEWAYS_OVERFLOW) <= 0
    path = shot_dir(tmp_path) / "precall-1440x900-en.png"
    await page.screenshot(path=str(path))
    print(f"screenshot: {path}")

    # Run again: new figures, the speaker asks again until confirmed.
    again = await run_check(page)
    assert again["runs"] == 2 and again["rttMs"] > 0

    # Starting the stream folds the check away; it opens again on a click.
    await page.get_by_test_id("start-stream").click()
    await expect(page.get_by_test_id("precall")).not_to_have_attribute("open", "")
    await expect(page.get_by_test_id("precall-chip")).to_be_visible()
    await page.locator("#precall summary").click()
    await expect(page.get_by_test_id("precall-result")).to_be_visible()


async def test_the_check_fits_a_phone_in_mongolian(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    page = await open_clinic(browser, live_server, (390, 844), lang="mn")
    await expect(page.get_by_test_id("precall-chip")).to_have_text("шалгаагүй")
    await page.locator("#precall summary").click()
    await expect(page.get_by_test_id("precall-run")).to_have_text("Дахин шалгах", timeout=30_000)
    figures = await run_check(page)
    assert figures["micPeak"] > 0 and figures["uploadKbps"] > 0
    await expect(page.get_by_test_id("precall-upload")).to_contain_text("Мбит/с")
    await expect(page.get_by_test_id("precall-result")).to_contain_text("Бэлэн")
    await page.get_by_test_id("precall").scroll_into_view_if_needed()
    assert await page.evaluate(SIDEWAYS_OVERFLOW) <= 0
    box = await page.evaluate(PANEL_BOX)
    assert box["left"] >= 0 and box["right"] <= box["vw"], box
    path = shot_dir(tmp_path) / "precall-390x844-mn.png"
    await page.get_by_test_id("precall").screenshot(path=str(path))
    print(f"screenshot: {path}")


async def test_a_silent_microphone_is_said_plainly_and_is_a_warning_not_a_gate(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await open_clinic(browser, live_server, (1440, 900))
    # A disabled track sends silence: a muted or dead microphone, as the analyser sees it.
    await page.evaluate(
        "() => document.querySelector('#local-preview').srcObject.getAudioTracks()"
        ".forEach((track) => { track.enabled = false; })"
    )
    await page.locator("#precall summary").click()
    await expect(page.get_by_test_id("precall-mic")).to_have_text(
        re.compile(r"^No sound heard for 4 seconds\."), timeout=10_000
    )
    await page.get_by_test_id("precall-play").click()
    await page.get_by_test_id("precall-heard").click()
    await page.wait_for_function(FINISHED, timeout=30_000)
    figures = await page.evaluate("() => window.endolink.precall")
    assert figures["micPeak"] == 0 and figures["result"] == "warn", figures
    await expect(page.get_by_test_id("precall-result")).to_contain_text(
        re.compile(r"^Ready, with warnings: (Camera, )?Microphone\. You can start the stream\.")
    )
    await expect(page.get_by_test_id("start-stream")).to_be_enabled()
