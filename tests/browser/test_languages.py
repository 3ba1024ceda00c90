"""The pages in Korean and Mongolian in a real browser: no English left anywhere a clinician looks
(text, aria-labels, placeholders, titles, the tab title), the picker switches in place and is
remembered, and an unknown ``?lang=`` says so without breaking the page.

The check walks every visible text node and the labels of every visible element and fails on a
Latin word of three letters or more that is not in ALLOWED (the product name, units, browser
names, commands) or in the names this test itself gave (consultation title, consent name).
Device names the browser reports (the fake camera) and code samples are not the page's words.
"""

from __future__ import annotations

import re

import pytest

from signaling.auth.grants import Role
from signaling.keys import RECORDINGS, SETTINGS
from tests.replay_support import at, make_recording, stroke, write_log

from .conftest import Browser, LiveServer, playwright_api
from .test_pages import assert_video_plays, start_clinic_stream

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SCRIPTS = {"ko": "[\\uac00-\\ud7a3]", "mn": "[\\u0400-\\u04ff]"}
ALLOWED = {
    "EndoLink",
    "kbit",
    "HD",
    "USB",
    "https",
    "Ctrl",
    "Enter",
    "Esc",
    "API",
    "DICOM",  # the names of the hospital's record formats (the landing page's patient section)
    "FHIR",
    "Chrome",
    "Edge",
    "Firefox",
    "Safari",
    "English",  # the picker's own name for English
}
# Names and ids this test (and tests/replay_support.py) made, in Latin letters on purpose.
TITLE = "Kim Lee"
MADE_HERE = {"Kim", "Lee", "Dr", "Paper", "Test", "clinic-test", "surgeon-test"}
# The participants' names: not conftest's role-named links ("Surgeon" reads as English text).
NAMES = {Role.CLINIC: "Dr Lee", Role.SURGEON: "Dr Kim"}
FILE_NAME = re.compile(r"^[\w-]+\.(json|mp4|webm|mkv|ogg|png|zip):?$")

# Every piece of text a person sees or hears from a screen reader: visible text nodes, and the
# aria-label / placeholder / title / alt of visible elements, plus the tab title. Skipped:
# code samples, the browser's own device names, the language picker's option names.
SEEN_TEXT = """
() => {
  const skip = (el) =>
    el.closest("code, pre, .language-picker, #camera-select, #mic-select, #talk-mic");
  const seen = (el) => el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (el && node.textContent.trim() && !skip(el) && seen(el)) out.push(node.textContent.trim());
  }
  for (const el of document.body.querySelectorAll("[aria-label], [placeholder], [title], [alt]")) {
    if (skip(el) || !seen(el)) continue;
    for (const attr of ["aria-label", "placeholder", "title", "alt"]) {
      const value = el.getAttribute(attr);
      if (value) out.push(value);
    }
  }
  out.push(document.title);
  return out;
}
"""


async def english_on(page, language: str) -> list[str]:
    """The seen strings with a Latin word (3+ letters) not allowed; asserts the script is there."""
    texts: list[str] = await page.evaluate(SEEN_TEXT)
    allowed = ALLOWED | MADE_HERE
    found = []
    for text in texts:
        for token in text.split():
            if any(ch.isdigit() for ch in token) or token in MADE_HERE or FILE_NAME.match(token):
                continue  # ids, sizes, codecs (VP8), times; names made here; file names
            words = [w for w in _latin_words(token) if w not in allowed]
            if words:
                found.append(text)
                break
    joined = " ".join(texts)
    assert re.search(SCRIPTS[language], joined), f"no {language} script on the page: {joined[:300]}"
    return found


def _latin_words(token: str) -> list[str]:
    words, word = [], ""
    for ch in token + " ":
        if "a" <= ch.lower() <= "z":
            word += ch
        else:
            if len(word) >= 3:
                words.append(word)
            word = ""
    return words


async def assert_no_english(page, language: str, where: str) -> None:
    found = await english_on(page, language)
    assert not found, f"{where} in {language}: English left: {found}"


@pytest.mark.parametrize("language", ["ko", "mn"])
async def test_live_pages_have_no_english(
    live_server: LiveServer, browser: Browser, language: str
) -> None:
    consultation = await live_server.consultation(consent=True, title=TITLE)
    clinic = await browser.open(
        f"{live_server.base_url}/clinic?lang={language}#token="
        + live_server.token(Role.CLINIC, consultation.id, name=NAMES[Role.CLINIC]),
        "clinic",
    )
    surgeon = await browser.open(
        f"{live_server.base_url}/surgeon?lang={language}#token="
        + live_server.token(Role.SURGEON, consultation.id, name=NAMES[Role.SURGEON]),
        "surgeon",
    )
    await expect(clinic.locator("html")).to_have_attribute("lang", language)
    await expect(clinic.get_by_test_id("consent-recorded")).to_be_visible()
    # Before the stream: the waiting states.
    await expect(surgeon.get_by_test_id("remote-overlay")).to_be_visible()
    await assert_no_english(surgeon, language, "surgeon waiting")
    clicked = await start_clinic_stream(clinic)
    await assert_video_plays(surgeon, f"surgeon ({language})", clicked)
    await expect(clinic.get_by_test_id("remote-stats")).not_to_be_empty(timeout=5_000)
    await clinic.get_by_test_id("chat-phrases").locator("button").first.click()
    await expect(surgeon.get_by_test_id("chat-log").locator("li")).to_have_count(1)
    await assert_no_english(clinic, language, "clinic live")
    await assert_no_english(surgeon, language, "surgeon watching")


@pytest.mark.parametrize("language", ["ko", "mn"])
async def test_replay_with_a_recording_open_has_no_english(
    live_server: LiveServer, browser: Browser, language: str
) -> None:
    app = live_server.app
    consultation = await live_server.consultation(consent=True, title=TITLE)
    data = app[SETTINGS].data_dir
    made = await make_recording(
        data, app[RECORDINGS].index, consultation.id, title=TITLE, segments=(3.0,)
    )
    write_log(
        data,
        consultation.id,
        [at(made, 1.0, op="add", by="surgeon-test", annotation=stroke())],
    )
    page = await browser.open(
        f"{live_server.base_url}/replay?lang={language}#token="
        + live_server.token("surgeon", consultation.id, name=NAMES[Role.SURGEON]),
        "replay",
    )
    await page.get_by_test_id("recording-item").first.get_by_role("button").click()
    await expect(page.get_by_test_id("integrity")).to_have_attribute("data-state", "ok")
    await expect(page.get_by_test_id("timeline-marker")).not_to_have_count(0)
    await assert_no_english(page, language, "replay")


@pytest.mark.parametrize("language", ["ko", "mn"])
async def test_join_error_and_landing_pages_have_no_english(
    live_server: LiveServer, browser: Browser, language: str
) -> None:
    page = await browser.open(f"{live_server.base_url}/j/abcd-efgh-jkmn?lang={language}", "join")
    await expect(page.get_by_test_id("session-error")).to_be_visible()
    await assert_no_english(page, language, "join error")
    await page.goto(f"{live_server.base_url}/?lang={language}")
    await expect(page.locator("html")).to_have_attribute("lang", language)
    await assert_no_english(page, language, "landing page")
    # A page opened without its link: the error panel.
    await page.goto(f"{live_server.base_url}/surgeon?lang={language}")
    await expect(page.get_by_test_id("session-error")).to_be_visible()
    await assert_no_english(page, language, "surgeon without link")


async def test_the_picker_switches_in_place_and_is_remembered(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True, title=TITLE)
    clinic = await browser.open(
        live_server.url(
            "clinic", live_server.token(Role.CLINIC, consultation.id, name=NAMES[Role.CLINIC])
        ),
        "clinic",
    )
    surgeon = await browser.open(
        live_server.url(
            "surgeon", live_server.token(Role.SURGEON, consultation.id, name=NAMES[Role.SURGEON])
        ),
        "surgeon",
    )
    await start_clinic_stream(clinic)
    await expect(surgeon.get_by_test_id("publisher-state")).to_have_attribute("data-state", "live")
    await expect(surgeon.locator("html")).to_have_attribute("lang", "en")
    await surgeon.evaluate("() => (window.__sameDocument = true)")

    picker = surgeon.get_by_test_id("language-picker")
    await picker.select_option("mn")
    await expect(surgeon.locator("html")).to_have_attribute("lang", "mn")
    assert await surgeon.evaluate("() => window.__sameDocument === true"), "the page reloaded"
    await expect(surgeon.get_by_test_id("talk-toggle")).to_have_text("Эмнэлэгтэй ярих")
    await assert_no_english(surgeon, "mn", "surgeon after switching to mn")
    # Dynamic text written before the switch (chips, presence, toolbar, stats) is in mn too;
    # text written after it as well.
    await surgeon.get_by_test_id("talk-toggle").click()
    await expect(surgeon.get_by_test_id("talk-state")).to_have_attribute("data-state", "on")
    await assert_no_english(surgeon, "mn", "surgeon talking in mn")

    await surgeon.reload()
    await expect(surgeon.locator("html")).to_have_attribute("lang", "mn")
    await expect(surgeon.get_by_test_id("language-picker")).to_have_value("mn")
    await expect(surgeon.get_by_test_id("fullscreen")).to_have_text("Бүтэн дэлгэц")

    await surgeon.get_by_test_id("language-picker").select_option("ko")
    await expect(surgeon.get_by_test_id("fullscreen")).to_have_text("전체 화면")
    await surgeon.get_by_test_id("language-picker").select_option("en")
    await expect(surgeon.get_by_test_id("fullscreen")).to_have_text("Full screen")


async def test_an_unknown_language_code_is_reported_and_the_page_works(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True, title=TITLE)
    token = live_server.token(Role.SURGEON, consultation.id, name=NAMES[Role.SURGEON])
    page = await browser.open(f"{live_server.base_url}/surgeon?lang=xx#token={token}", "surgeon")
    notice = page.get_by_test_id("language-notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("“xx”")
    await expect(notice).to_contain_text("English")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.get_by_test_id("room-state")).to_have_attribute("data-state", "connected")

    # With Korean chosen earlier, the notice is in Korean and the page stays Korean.
    await page.get_by_test_id("language-picker").select_option("ko")
    await expect(notice).to_be_hidden()
    page = await browser.open(f"{live_server.base_url}/?lang=<b>zz</b>", "landing")
    notice = page.get_by_test_id("language-notice")
    await expect(notice).to_contain_text("“<b>zz</b>”")
    await expect(notice).to_contain_text("한국어")
    await expect(page.locator("html")).to_have_attribute("lang", "ko")
    # Not a language even though every JavaScript object has it.
    await page.goto(f"{live_server.base_url}/?lang=toString")
    await expect(page.get_by_test_id("language-notice")).to_contain_text("“toString”")
    await expect(page.locator("html")).to_have_attribute("lang", "ko")
