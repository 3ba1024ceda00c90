"""Marks belong to their picture, in real browsers: when the clinic stops and starts again the
surgeon's marks leave every live canvas and the burned-in rendition (pixels checked), the surgeon
restores them with one click; the replay of the earlier session still shows them; a freeze ends
when the surgeon who froze leaves; an export shows the time left and can be cancelled."""

from __future__ import annotations

import hashlib
import time

import pytest

from signaling.keys import RECORDINGS, SETTINGS
from tests.peers import viewer, wait_until
from tests.replay_support import at, make_recording, stroke, write_log

from . import test_annotations as live
from .conftest import Browser, LiveServer, playwright_api
from .test_pages import start_clinic_stream
from .test_replay import is_green, pixel_at, wait_for

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

STROKE = [(0.3, 0.5), (0.5, 0.5), (0.7, 0.5)]
MAGENTA = (0xFF, 0x40, 0xFF)
"Drawn in magenta: Chromium's fake camera picture is mostly green."
ON_STROKE = [(0.4, 0.5), (0.6, 0.5)]


class BurnedIn:
    """The frames of the annotated rendition: is the stroke's magenta burned in where it runs?"""

    def __init__(self) -> None:
        self.samples: list[tuple[float, bool]] = []

    def __call__(self, frame) -> None:  # type: ignore[no-untyped-def]
        rgb = frame.to_ndarray(format="rgb24")
        h, w = rgb.shape[:2]
        y, x = int(0.5 * h), int(0.5 * w)
        patch = rgb[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 3).astype(int)
        magenta = any(r > 180 and b > 180 and g < 140 for r, g, b in patch)
        self.samples.append((time.monotonic(), magenta))

    def since(self, t: float) -> list[bool]:
        return [magenta for at_, magenta in self.samples if at_ >= t]

    def first_clean(self, t: float) -> float | None:
        """When the first frame without the stroke arrived after ``t``."""
        return next((at_ for at_, magenta in self.samples if at_ >= t and not magenta), None)


async def test_a_new_stream_archives_the_marks_everywhere_and_restore_brings_them_back(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation, clinic, surgeon, surgeon_token = await live.open_consultation(
        live_server, browser
    )
    cid = consultation.id
    s_pic = await live.picture(surgeon, "remote-video")
    c_pic = await live.picture(clinic, "local-preview")
    await live.select_tool(surgeon, "pen")
    await surgeon.get_by_test_id("color-magenta").click()
    await live.drag(surgeon, s_pic, STROKE)
    await live.wait_color(clinic, c_pic, ON_STROKE, MAGENTA)
    restore = surgeon.get_by_test_id("restore-marks")
    await expect(restore).to_be_hidden()

    burned = BurnedIn()
    endpoint = f"{live_server.base_url}/whep/{cid}?annotated=1"
    async with viewer(endpoint, surgeon_token, kinds=("video",)) as (_, _, received):
        received.on_video.append(burned)
        assert await wait_until(lambda: any(burned.since(0)), 15), "stroke never burned in"

        # Stop, then Start again: a new stream session
        await clinic.get_by_test_id("stop-stream").click()
        await expect(clinic.get_by_test_id("start-stream")).to_be_enabled(timeout=10_000)
        await start_clinic_stream(clinic)
        for page, pic in ((surgeon, s_pic), (clinic, c_pic)):
            await live.wait_clear(page, pic, ON_STROKE, timeout=10_000)
        await expect(restore).to_be_visible()
        await expect(surgeon.get_by_test_id("annotation-status")).to_contain_text("put away")
        archived_at = time.monotonic()
        # aiortc's jitter buffer hands over a frame when the next one's first packet arrives: the
        # old session's last frame (marks and all) comes out when the new picture starts. The new
        # session begins at its first frame: none of them may carry the old marks.
        assert await wait_until(lambda: burned.first_clean(archived_at) is not None, 20)
        new_picture = burned.first_clean(archived_at)
        assert await wait_until(lambda: len(burned.since(new_picture)) >= 30, 20)
        assert burned.since(archived_at).count(True) <= 1, "old marks on more than the last frame"
        assert not any(burned.since(new_picture)), "old marks burned into the new session"

        await restore.click()
        for page, pic in ((surgeon, s_pic), (clinic, c_pic)):
            await live.wait_color(page, pic, ON_STROKE, MAGENTA, timeout=10_000)
        await expect(restore).to_be_hidden()
        restored_at = time.monotonic()
        assert await wait_until(lambda: any(burned.since(restored_at)), 15), "not burned in"


async def test_the_freeze_ends_everywhere_when_the_surgeon_who_froze_leaves(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, _ = await live.open_consultation(live_server, browser)
    await surgeon.get_by_test_id("freeze").click()
    await expect(clinic.get_by_test_id("frozen-badge")).to_be_visible(timeout=8_000)
    await surgeon.close()  # the surgeon leaves (the page goes: an explicit leave)
    await expect(clinic.get_by_test_id("frozen-badge")).to_be_hidden(timeout=5_000)
    await expect(clinic.get_by_text("the surgeon who froze it has left")).to_be_visible()


async def open_recording(live_server: LiveServer, browser: Browser, entries, **recording):  # type: ignore[no-untyped-def]
    """A consultation with one recording (``make_recording`` arguments) and the annotation log
    ``entries(made)``, open on the replay page; returns the page and the recording."""
    app = live_server.app
    consultation = await live_server.consultation(consent=True)
    data = app[SETTINGS].data_dir
    made = await make_recording(data, app[RECORDINGS].index, consultation.id, **recording)
    write_log(data, consultation.id, entries(made))
    token = live_server.token("surgeon", consultation.id)
    page = await browser.open(live_server.url("replay", token), "replay")
    await page.get_by_test_id("recording-item").first.get_by_role("button").click()
    return page, made


async def test_the_replay_shows_the_marks_on_the_session_they_were_drawn_on(
    live_server: LiveServer, browser: Browser
) -> None:
    def entries(made):  # type: ignore[no-untyped-def]
        return [
            at(made, 1.0, op="add", by="surgeon-test", annotation=stroke()),
            at(made, 2.5, op="archive", by=None, count=1),
            at(made, 4.0, op="restore", by="surgeon-test", annotations=[stroke()]),
        ]

    page, _ = await open_recording(live_server, browser, entries, segments=(6.0,))
    ready = "() => document.querySelector('[data-testid=\"replay-video\"]').readyState >= 2"
    await wait_for(page, ready)
    for t, present in [(1.8, True), (3.2, False), (0.5, False), (4.8, True)]:
        sample = await pixel_at(page, t)
        assert is_green(sample["rgba"]) is present, (t, sample)


@pytest.mark.timeout(240)  # making the recording is slow on a loaded 2-core machine
async def test_an_export_shows_the_time_left_and_can_be_cancelled(
    live_server: LiveServer, browser: Browser
) -> None:
    def entries(made):  # type: ignore[no-untyped-def]
        return [at(made, 1.0, op="add", by="surgeon-test", annotation=stroke())]

    # 30 s at 720p (1 s encoded once and repeated): still running when cancelled.
    page, made = await open_recording(
        live_server, browser, entries, segments=(30.0,), size=(1280, 720), loop_s=1.0
    )
    files = sorted(made.directory.glob("*.webm"))
    original = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    await expect(page.get_by_test_id("download")).to_be_enabled()
    await page.get_by_test_id("export-annotated").click()
    state = page.get_by_test_id("export-state")
    await expect(state).to_contain_text("left", timeout=30_000)  # "about N seconds left"
    cancel = page.get_by_test_id("export-cancel")
    await expect(cancel).to_be_visible()
    await cancel.click()
    await expect(state).to_have_text(
        "Export cancelled. No file was made and the recording is unchanged.", timeout=10_000
    )
    await expect(cancel).to_be_hidden()
    await expect(page.get_by_test_id("export-download")).to_be_hidden()
    await expect(page.get_by_test_id("export-annotated")).to_be_enabled()
    exports = made.directory / "exports"
    assert [p.suffix for p in exports.iterdir()] == [".json"]  # no MP4, no partial file
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == original
