"""Names and devices in a real browser: a link without a name asks once (bad names get a plain
reason, nothing else is disturbed) and remembers it; presence and marks show names; the same
link on two devices keeps both live and shows one person with two devices; a second clinic
device does not take the feed over."""

from __future__ import annotations

import pytest

from signaling.auth.grants import Role

from .conftest import Browser, LiveServer, playwright_api
from .test_annotations import GREEN, drag, picture, select_tool, wait_color, wait_marks, wait_ready
from .test_pages import (
    COUNT_FRAMES_1S,
    VIDEO_HAS_FRAMES,
    start_clinic_stream,
)

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TYPED = "Dr 김 Дуран"
WARD = "Ward 3 нар"


async def test_a_link_without_a_name_asks_once_and_names_show_in_presence_and_on_marks(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True)
    clinic = await browser.open(
        live_server.url("clinic", live_server.token(Role.CLINIC, consultation.id, name=WARD)),
        "clinic",
    )
    await start_clinic_stream(clinic)
    await expect(clinic.get_by_test_id("name-dialog")).to_have_count(0)  # its link has a name
    surgeon_url = live_server.url(
        "surgeon", live_server.token(Role.SURGEON, consultation.id, name="")
    )
    surgeon = await browser.open(surgeon_url, "surgeon", window=True)

    dialog = surgeon.get_by_test_id("name-dialog")
    await expect(dialog).to_be_visible()
    field, ok, problem = (
        surgeon.get_by_test_id(t) for t in ("name-input", "name-ok", "name-problem")
    )
    await field.fill("   ")
    await ok.click()
    await expect(problem).to_have_text("Please type your name.")
    await field.fill("x" * 65)
    await ok.click()
    await expect(problem).to_have_text("Your name can be at most 64 characters long.")
    await expect(clinic.get_by_test_id("presence")).not_to_contain_text("x" * 65)
    await field.fill(f"  {TYPED}  ")
    await ok.click()
    await expect(dialog).to_have_count(0)

    await expect(clinic.get_by_test_id("presence")).to_contain_text(TYPED)
    await expect(surgeon.get_by_test_id("presence")).to_contain_text(WARD)
    await expect(surgeon.get_by_test_id("presence")).to_contain_text(TYPED)

    # A mark carries its author's name to every page, drawn beside it.
    await wait_ready(surgeon)
    await wait_ready(clinic)
    s_pic, c_pic = await picture(surgeon, "remote-video"), await picture(clinic, "local-preview")
    await select_tool(surgeon, "pen")
    stroke = [(0.5, 0.5), (0.7, 0.6)]
    await drag(surgeon, s_pic, stroke)
    await wait_color(clinic, c_pic, [(0.6, 0.55)], GREEN)
    (mark,) = await wait_marks(clinic, 1)
    assert mark["author_name"] == TYPED
    tag = await clinic.evaluate(
        """([x, y]) => {
          const c = document.querySelector('[data-testid="annotation-canvas"]');
          const r = c.getBoundingClientRect(), k = c.width / r.width;
          const at = [(x - r.left - 20) * k, (y - r.top - 12) * k];
          return [...c.getContext("2d").getImageData(at[0], at[1], 1, 1).data];
        }""",
        list(c_pic.page_xy(*stroke[0])),
    )
    assert tag[3] > 0, f"no name tag up and left of the mark's start: {tag}"

    # Reloaded: the name is remembered, no second question.
    await surgeon.reload()
    await wait_ready(surgeon)
    await expect(surgeon.get_by_test_id("name-dialog")).to_have_count(0)
    await expect(clinic.get_by_test_id("presence")).to_contain_text(TYPED)
    assert await surgeon.evaluate("localStorage.getItem('endolink.name')") == TYPED


async def test_the_same_link_on_two_devices_keeps_both_live_as_one_person(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation = await live_server.consultation(consent=True)
    clinic_link = (await live_server.short_link(Role.CLINIC, consultation.id, name=WARD)).link
    surgeon_link = (await live_server.short_link(Role.SURGEON, consultation.id, name="Dr Kim")).link
    clinic = await browser.open(clinic_link, "clinic")
    await start_clinic_stream(clinic)
    laptop = await browser.open(surgeon_link, "laptop", window=True)
    await laptop.wait_for_function(VIDEO_HAS_FRAMES, arg="remote-video", timeout=15_000)
    tablet = await browser.open(surgeon_link, "tablet", window=True)
    await tablet.wait_for_function(VIDEO_HAS_FRAMES, arg="remote-video", timeout=15_000)

    presence = clinic.get_by_test_id("presence")
    surgeon_entry = presence.locator('li[data-role="surgeon"]')
    await expect(surgeon_entry).to_have_count(1)
    await expect(surgeon_entry).to_contain_text("Dr Kim")
    await expect(surgeon_entry.get_by_test_id("devices")).to_have_text("2 devices")
    # Both still live a while later: nobody was thrown out.
    await laptop.wait_for_timeout(1500)
    for device in (laptop, tablet):
        await expect(device.get_by_test_id("publisher-state")).to_have_attribute(
            "data-state", "live"
        )
        await expect(device.get_by_test_id("room-state")).to_have_attribute(
            "data-state", "connected"
        )
        await expect(device.locator("body")).not_to_contain_text("replaced by a newer connection")
        await expect(device.locator("body")).not_to_contain_text("Reload with a valid link")
    # Both pictures move (frames keep arriving on each device). How smooth they are is
    # test_pages' concern; here three pages and the server share two cores.
    for device, label in ((laptop, "laptop"), (tablet, "tablet")):
        seen = [
            (await device.evaluate(COUNT_FRAMES_1S, "remote-video"))["frames"] for _ in range(3)
        ]
        print(f"surgeon {label}: frames per 1 s with both devices live: {seen}")
        assert max(seen) > 0, f"surgeon {label}: the picture stands still: {seen}"

    # Drawing on the tablet reaches the laptop as the same person's mark.
    await wait_ready(tablet)
    await wait_ready(laptop)
    t_pic = await picture(tablet, "remote-video")
    await select_tool(tablet, "pen")
    await drag(tablet, t_pic, [(0.3, 0.3), (0.5, 0.4)])
    (on_laptop,) = await wait_marks(laptop, 1)
    assert on_laptop["author_name"] == "Dr Kim"

    # A second clinic device watches: it cannot take the stream over from the first.
    second = await browser.open(clinic_link, "clinic 2")
    await expect(second.get_by_test_id("start-stream")).to_be_disabled(timeout=10_000)
    await expect(second.locator("body")).to_contain_text(
        "already streaming the endoscope from another device"
    )
    await expect(clinic.get_by_test_id("connection-state")).to_have_attribute(
        "data-state", "connected"
    )
    await expect(laptop.get_by_test_id("publisher-state")).to_have_attribute("data-state", "live")
