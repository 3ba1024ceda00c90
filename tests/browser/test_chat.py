"""Chat that is seen, in a real browser: the clinic page shows the chat log without scrolling at
1440×900 with several messages; a late joiner reads the history; on a phone (390×844) the Chat
button carries the unread count, opens the panel and clears it, with no sideways overflow.

Screenshots of each size go to ``$ENDOLINK_SCREENSHOTS`` (default: the test's tmp dir); their
paths are printed (``-s``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from signaling.keys import RECORDINGS, SETTINGS
from tests.replay_support import at, make_recording, write_log

from .conftest import Browser, LiveServer, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

SURGEON_LINES = [
    "Advance slowly, 5 cm",
    "Stop there",
    "Biopsy the lesion at 3 o'clock",
    "Two samples please",
    "Now withdraw",
    "Check the sigmoid on the way out",
]

LOG_IN_VIEW = """
() => {
  const log = document.querySelector('[data-testid="chat-log"]');
  const r = log.getBoundingClientRect();
  const inside = (b) => b.top >= r.top - 1 && b.bottom <= r.bottom + 1 && b.height > 0;
  const shown = [...log.children].filter((li) => inside(li.getBoundingClientRect())).length;
  return {top: r.top, bottom: r.bottom, height: r.height, left: r.left, right: r.right,
          vw: innerWidth, vh: innerHeight, shown};
}
"""
SIDEWAYS_OVERFLOW = (
    "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
)


def shot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("ENDOLINK_SCREENSHOTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def open_page(browser: Browser, live_server: LiveServer, role: Role, cid: str, size, name):
    """A live page at ``size`` once its room is open (the history has arrived by then)."""
    page = await browser.open("about:blank", name, window=True)
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    await page.goto(live_server.url(str(role), live_server.token(role, cid)))
    await expect(page.get_by_test_id("room-state")).to_have_attribute("data-state", "connected")
    return page


async def say(page, text: str) -> None:
    await page.get_by_test_id("chat-input").fill(text)
    await page.get_by_test_id("chat-send").click()


async def test_the_clinic_sees_the_chat_and_its_history_without_scrolling_at_1440x900(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    consultation = await live_server.consultation(consent=False)  # the tallest sidebar
    surgeon = await open_page(
        browser, live_server, Role.SURGEON, consultation.id, (1440, 900), "surgeon"
    )
    for text in SURGEON_LINES:
        await say(surgeon, text)
    await expect(surgeon.get_by_test_id("chat-log").locator("li")).to_have_count(len(SURGEON_LINES))

    clinic = await open_page(
        browser, live_server, Role.CLINIC, consultation.id, (1440, 900), "clinic"
    )
    log = clinic.get_by_test_id("chat-log")
    await expect(log.locator("li")).to_have_count(len(SURGEON_LINES))  # the late joiner's history
    await expect(log.locator("li").last).to_contain_text("Check the sigmoid on the way out")
    await expect(log.locator("li").first).to_contain_text("Surgeon")
    box = await clinic.evaluate(LOG_IN_VIEW)
    print(f"\nclinic 1440x900 chat log: {box}")
    assert box["top"] >= 0 and box["bottom"] <= box["vh"] and box["right"] <= box["vw"], box
    assert box["height"] >= 200 and box["shown"] >= 4, box
    assert await clinic.evaluate("() => scrollY") == 0
    await expect(clinic.get_by_test_id("chat-toggle")).to_be_hidden()  # nothing to open here
    await expect(clinic.get_by_test_id("consent-form")).to_be_visible()

    # quick phrases: one click sends, the surgeon gets it with a notice over the video only if
    # the chat is out of sight (here it is in sight: no notice, no count)
    await clinic.get_by_test_id("chat-phrases").get_by_role("button", name="Scope in").click()
    await expect(surgeon.get_by_test_id("chat-log").locator("li").last).to_contain_text("Scope in")
    await expect(surgeon.get_by_test_id("chat-notice")).to_be_hidden()
    await expect(clinic.get_by_test_id("chat-notice")).to_be_hidden()  # never for one's own
    path = shot_dir(tmp_path) / "chat-clinic-1440x900.png"
    await clinic.screenshot(path=str(path))
    print(f"screenshot: {path}")


async def test_on_a_phone_the_chat_button_counts_unread_and_opening_clears_it(
    live_server: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    consultation = await live_server.consultation(consent=True)
    clinic = await open_page(
        browser, live_server, Role.CLINIC, consultation.id, (390, 844), "clinic"
    )
    surgeon = await open_page(
        browser, live_server, Role.SURGEON, consultation.id, (1440, 900), "surgeon"
    )
    toggle, unread = clinic.get_by_test_id("chat-toggle"), clinic.get_by_test_id("chat-unread")
    await expect(toggle).to_be_in_viewport()
    await expect(clinic.get_by_test_id("chat-log")).to_be_hidden()
    await expect(unread).to_be_hidden()

    await say(surgeon, "Please move the scope back 2 cm")
    await expect(unread).to_have_text("1")
    notice = clinic.get_by_test_id("chat-notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("Please move the scope back 2 cm")
    await say(surgeon, "Hold it there")
    await expect(unread).to_have_text("2")
    assert await clinic.evaluate(SIDEWAYS_OVERFLOW) <= 0
    directory = shot_dir(tmp_path)
    await clinic.screenshot(path=str(directory / "chat-clinic-390x844-unread.png"))

    await toggle.click()
    log = clinic.get_by_test_id("chat-log")
    await expect(log).to_be_in_viewport()
    await expect(unread).to_be_hidden()
    await expect(notice).to_be_hidden()
    await expect(log.locator("li")).to_have_count(2)
    await expect(clinic.get_by_test_id("chat-input")).to_be_in_viewport()
    phrase = clinic.get_by_test_id("chat-phrases").get_by_role("button", name="Ready")
    await expect(phrase).to_be_in_viewport()
    await phrase.click()
    await expect(log.locator("li").last).to_contain_text("Ready")
    await expect(unread).to_be_hidden()  # one's own message never counts
    assert await clinic.evaluate(SIDEWAYS_OVERFLOW) <= 0
    await clinic.screenshot(path=str(directory / "chat-clinic-390x844-open.png"))

    # while open a new message is read at once; closed again, the count starts afresh
    await say(surgeon, "Good")
    await expect(log.locator("li")).to_have_count(4)
    await expect(unread).to_be_hidden()
    await toggle.click()
    await expect(log).to_be_hidden()
    await say(surgeon, "Withdraw")
    await expect(unread).to_have_text("1")
    print(f"\nscreenshots: {directory}/chat-clinic-390x844-*.png")


async def test_the_surgeon_page_shows_the_chat_at_1440x900(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True)
    surgeon = await open_page(
        browser, live_server, Role.SURGEON, consultation.id, (1440, 900), "surgeon"
    )
    box = await surgeon.evaluate(LOG_IN_VIEW)
    assert box["top"] >= 0 and box["bottom"] <= box["vh"] and box["height"] >= 200, box


async def test_the_replay_page_lists_the_chat_at_its_time_and_a_click_seeks_there(
    live_server: LiveServer, browser: Browser
) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title="Chat replay")
    cid, data = consultation.id, app[SETTINGS].data_dir
    made = await make_recording(data, app[RECORDINGS].index, cid, segments=(5.0,))
    said = {"text": "Biopsy here", "name": "Dr. Kim", "role": "surgeon"}
    write_log(data, cid, [at(made, 3.0, op="chat", by="surgeon-test", **said)])
    page = await browser.open(
        live_server.url("replay", live_server.token("surgeon", cid)), "replay"
    )
    await page.get_by_test_id("recording-item").first.get_by_role("button").click()

    line = page.get_by_test_id("replay-chat-log").locator("li")
    await expect(line).to_have_count(1)
    await expect(line).to_contain_text("0:03 Dr. Kim")
    await expect(line).to_contain_text("Biopsy here")
    marker = page.get_by_test_id("timeline").locator(".timeline-marker[data-kind='chat']")
    await expect(marker).to_have_count(1)
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=\"replay-video\"]').readyState >= 2"
    )
    await line.get_by_role("button").click()
    await page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=\"replay-video\"]');"
        " return !v.seeking && Math.abs(v.currentTime - 3.0) < 0.05; }"
    )
