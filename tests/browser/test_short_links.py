"""Short invite links (``/j/<code>``) in a real browser: the right page opens with video and room
working as with a token link, the address bar keeps the short link (never a token), a reload
opens it again, and expired, withdrawn or unknown links say so in plain words."""

from __future__ import annotations

import time

import pytest

from signaling.auth.grants import Role
from signaling.auth.invite_codes import new_code
from signaling.keys import INVITES

from .conftest import Browser, LiveServer, playwright_api
from .test_pages import assert_video_plays, start_clinic_stream

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
IDENTITY = """
() => fetch("/api/session", {
  headers: {Authorization: `Bearer ${sessionStorage.getItem("endolink.token.surgeon")}`},
}).then((r) => r.json()).then((session) => session.identity)
"""


async def open_at(browser: Browser, url: str, name: str, size: tuple[int, int]):
    """A tab of ``size`` (set before the page loads), then ``url``."""
    tab = await browser.open("about:blank", name)
    await tab.set_viewport_size({"width": size[0], "height": size[1]})
    await tab.goto(url)
    return tab


async def assert_address_is(tab, link: str) -> None:
    await tab.wait_for_function("(link) => location.href === link", arg=link, timeout=10_000)
    assert "token" not in tab.url


@pytest.mark.parametrize("size", list(SIZES))
async def test_short_links_open_the_right_pages_and_survive_a_reload(
    live_server: LiveServer, browser: Browser, size: str
) -> None:
    consultation = await live_server.consultation(consent=True)
    clinic_link = (await live_server.short_link(Role.CLINIC, consultation.id)).link
    surgeon_link = (await live_server.short_link(Role.SURGEON, consultation.id)).link

    clinic = await open_at(browser, clinic_link, "clinic", SIZES[size])
    await expect(clinic.get_by_test_id("consent-recorded")).to_be_visible()
    await assert_address_is(clinic, clinic_link)
    surgeon = await open_at(browser, surgeon_link, "surgeon", SIZES[size])
    await expect(surgeon.get_by_test_id("role")).to_have_text("Surgeon")
    await assert_address_is(surgeon, surgeon_link)
    await expect(clinic.get_by_test_id("surgeon-presence")).to_have_attribute(
        "data-state", "online"
    )

    clicked = await start_clinic_stream(clinic)
    await assert_video_plays(surgeon, f"surgeon by short link ({size})", clicked)

    # A reload (or the bookmarked address) opens the consultation again, as the same person.
    identity = await surgeon.evaluate(IDENTITY)
    reloaded = time.monotonic()
    await surgeon.reload()
    await assert_address_is(surgeon, surgeon_link)
    # (printed as "after Start": here it is after the reload)
    await assert_video_plays(surgeon, f"surgeon after reload ({size})", reloaded)
    assert await surgeon.evaluate(IDENTITY) == identity
    await expect(clinic.get_by_test_id("surgeon-presence")).to_have_attribute(
        "data-state", "online"
    )
    if size == "phone":
        overflow = await surgeon.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        print(f"surgeon page at 390x844: {overflow} px sideways overflow")


async def test_a_replay_short_link_opens_the_recordings(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True)
    link = (await live_server.short_link(Role.SURGEON, consultation.id, page="replay")).link
    tab = await open_at(browser, link, "replay", SIZES["desktop"])
    await expect(tab.locator("#app")).to_be_visible()
    await expect(tab.get_by_test_id("session-error")).to_be_hidden()
    await assert_address_is(tab, link)


@pytest.mark.parametrize(
    ("kind", "title", "detail"),
    [
        ("expired", "This link has expired.", "ask the consultation coordinator for a new one"),
        ("withdrawn", "This link was withdrawn.", "ask the consultation coordinator for a new one"),
        ("unknown", "This link is not known.", "copied whole"),
    ],
)
async def test_a_link_that_no_longer_works_says_why(
    live_server: LiveServer, browser: Browser, kind: str, title: str, detail: str
) -> None:
    consultation = await live_server.consultation(consent=True)
    book = live_server.app[INVITES]
    invite = await live_server.short_link(Role.CLINIC, consultation.id)
    link = invite.link
    if kind == "expired":  # as if the link had aged past its expiry
        _, code = await book.add(
            consultation.id, Role.CLINIC, "clinic", "clinic-aged", int(time.time()) - 1
        )
        link = f"{live_server.base_url}/j/{code}"
    elif kind == "withdrawn":
        await book.revoke(invite.id)
    else:
        link = f"{live_server.base_url}/j/{new_code()}"
    for size in SIZES.values():
        tab = await open_at(browser, link, f"{kind}-{size[0]}", size)
        error = tab.get_by_test_id("session-error")
        await expect(error).to_be_visible()
        await expect(error).to_have_attribute("role", "alert")
        await expect(error.locator("#fatal-title")).to_have_text(title)
        await expect(error).to_contain_text(detail, ignore_case=True)
        assert tab.url == link
        await tab.close()
