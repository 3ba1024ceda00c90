"""Anchored marks ("on the tissue") in real browsers: the surgeon draws on the tissue, the pages
apply the server's ``placements`` to the frame they show (the surgeon's through its
``media-clock``, the clinic's through the capture time of its preview), a lost mark greys, and
the replay moves the mark as the logged placements moved it live.

The placements here are sent through the server's hub at the live relay pts (and the clinic's
capture time of it, from its RTCP sender reports), as the tracker sends them, with a known
motion; each round also carries a placement of a frame 10 s ahead, which a page that maps the
frame it shows must not apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import pytest

from relay.router import Router
from signaling.keys import HUB, RELAY
from signaling.ws.messages import ServerMessage
from tests.replay_support import at, stroke

from .conftest import Browser, LiveServer, playwright_api
from .test_annotations import (
    GREEN,
    drag,
    lerp,
    open_consultation,
    picture,
    select_tool,
    wait_clear,
    wait_color,
    wait_marks,
)
from .test_marks import open_recording
from .test_replay import is_green, pixel_at, wait_for

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

GREY = (0x9E, 0x9E, 0x9E)  # drawing.js LOST_COLOR
SHIFT = (0.2, 0.1)
AHEAD_SHIFT = (-0.2, -0.25)
AHEAD_PTS = 10 * 90_000
RATE_HZ = 20


@dataclass(frozen=True)
class PlacementsMessage(ServerMessage):
    """The ``placements`` message of docs/architecture.md, as the relay's tracker sends it."""

    TYPE = "placements"
    pts: int
    capture_ms: float | None
    marks: list[dict[str, Any]]


def _placed(mark: dict[str, Any], shift: tuple[float, float], lost: bool) -> dict[str, Any]:
    m = [1.0, 0.0, shift[0], 0.0, 1.0, shift[1]]
    return {"author": mark["author"], "id": mark["id"], "m": m, "confidence": 0.9, "lost": lost}


async def _send_placements(live_server: LiveServer, cid: str, state: dict[str, Any]) -> None:
    """At ``RATE_HZ`` while running: the mark's placement on the relay's latest frame, and one
    of a frame 10 s ahead (which no page shows yet)."""
    router = live_server.app[RELAY].find(cid)
    assert isinstance(router, Router)
    hub = live_server.app[HUB]
    while True:
        pts = router.media_pts()
        mark = state["mark"]
        if pts is not None:
            marks = [_placed(mark, SHIFT, state["lost"])] if state["anchored"] else []
            hub.broadcast(cid, PlacementsMessage(pts, router.capture_ms(pts), marks))
            if marks:
                ahead = pts + AHEAD_PTS
                future = [_placed(mark, AHEAD_SHIFT, False)]
                hub.broadcast(cid, PlacementsMessage(ahead, router.capture_ms(ahead), future))
        await asyncio.sleep(1 / RATE_HZ)


def _moved(
    points: list[tuple[float, float]], shift: tuple[float, float]
) -> list[tuple[float, float]]:
    return [(x + shift[0], y + shift[1]) for x, y in points]


async def test_an_anchored_mark_follows_its_placement_on_both_pages_and_greys_when_lost(
    live_server: LiveServer, browser: Browser
) -> None:
    sent: list[dict[str, Any]] = []

    def watch(page: Any) -> None:
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(json.loads(f))))

    browser.context.on("page", watch)  # type: ignore[attr-defined]
    consultation, clinic, surgeon, _ = await open_consultation(live_server, browser)
    cid = consultation.id
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    await select_tool(surgeon, "arrow")
    await expect(surgeon.get_by_test_id("anchored")).to_have_attribute("aria-pressed", "true")
    tail, head = (0.3, 0.45), (0.5, 0.45)
    await drag(surgeon, s_pic, [tail, head])
    (mark,) = await wait_marks(clinic, 1)
    added = [m for m in sent if m.get("type") == "annotation" and m.get("op") == "add"]
    assert added and added[0]["annotation"]["anchored"] is True, added
    router = live_server.app[RELAY].find(cid)
    assert router is not None and router.media_pts() is not None
    frame_pts = added[0].get("frame_pts")
    # the page had no placements yet: it maps the frame it showed through its media clock alone
    assert isinstance(frame_pts, int) and abs(router.media_pts() - frame_pts) < 3 * 90_000, added

    shaft = [lerp(tail, head, t) for t in (0.2, 0.5, 0.8)]
    state: dict[str, Any] = {"mark": mark, "anchored": True, "lost": False}
    sending = asyncio.ensure_future(_send_placements(live_server, cid, state))
    try:
        for page, pic in ((surgeon, s_pic), (clinic, c_pic)):
            await wait_color(page, pic, _moved(shaft, SHIFT), GREEN, timeout=10_000)
            await wait_clear(page, pic, shaft)
            await wait_clear(page, pic, _moved(shaft, AHEAD_SHIFT))
        state["lost"] = True
        for page, pic in ((surgeon, s_pic), (clinic, c_pic)):
            await wait_color(page, pic, _moved(shaft, SHIFT), GREY)
            await page.wait_for_function(
                "() => document.querySelector('[data-testid=\"annotation-canvas\"]')"
                ".dataset.lost === '1'"
            )
        state["anchored"] = False  # the last anchored mark went: drawn as sent again
        for page, pic in ((surgeon, s_pic), (clinic, c_pic)):
            await wait_color(page, pic, shaft, GREEN)
            await wait_clear(page, pic, _moved(shaft, SHIFT))
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending


async def test_the_clinic_draws_as_sent_unless_it_asks_for_the_tissue(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, _, _ = await open_consultation(live_server, browser)
    anchored = clinic.get_by_test_id("anchored")
    await select_tool(clinic, "pen")
    await expect(anchored).to_have_attribute("aria-pressed", "false")
    await select_tool(clinic, "text")
    await expect(anchored).to_be_hidden()
    await select_tool(clinic, "circle")
    await anchored.click()
    await expect(anchored).to_have_attribute("aria-pressed", "true")


def _is_grey(rgba: list[int]) -> bool:
    r, g, b, a = rgba
    return a > 200 and all(abs(c - GREY[0]) < 30 for c in (r, g, b))


async def test_the_replay_moves_an_anchored_mark_as_its_placements_did_live(
    live_server: LiveServer, browser: Browser
) -> None:
    """The stroke runs along y = 0.5; from 1.5 s the placements (logged like the live ones) move
    it down by 0.2, from 3 s it lost its place there, from 4 s nothing is anchored any more."""
    mark = {"author": "surgeon-test", "id": "m1"}

    def entries(made):  # type: ignore[no-untyped-def]
        placed = [
            at(made, 1.5 + i / 10, op="placements", by=None, marks=[_placed(mark, (0, 0.2), False)])
            for i in range(15)
        ]
        return [
            at(made, 1.0, op="add", by="surgeon-test", annotation={**stroke(), "anchored": True}),
            *placed,
            at(made, 3.0, op="placements", by=None, marks=[_placed(mark, (0, 0.2), True)]),
            at(made, 4.0, op="placements", by=None, marks=[]),
        ]

    page, _ = await open_recording(live_server, browser, entries, segments=(6.0,))
    ready = "() => document.querySelector('[data-testid=\"replay-video\"]').readyState >= 2"
    await wait_for(page, ready)
    on_stroke, moved = (0.5, 0.5), (0.5, 0.7)
    for t, green_at, grey_at, clear_at in [
        (1.2, on_stroke, None, moved),
        (2.0, moved, None, on_stroke),
        (3.5, None, moved, on_stroke),
        (4.5, on_stroke, None, moved),
    ]:
        if green_at is not None:
            sample = await pixel_at(page, t, green_at)
            assert is_green(sample["rgba"]), (t, sample)
        if grey_at is not None:
            sample = await pixel_at(page, t, grey_at)
            assert _is_grey(sample["rgba"]), (t, sample)
        sample = await pixel_at(page, t, clear_at)
        assert sample["rgba"][3] == 0, (t, sample)
