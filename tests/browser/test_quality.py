"""Picture quality on the surgeon page, in Debian chromium at phone and desktop sizes: an
automatic move to a rung shows the plain-words notice and badge (and the video becomes the rung),
and the picker's 360p re-opens the WHEP session with ``?quality=360p``: a 640×360 video.

The publisher is an aiortc 1280×720 test pattern (``tests.peers.publisher``) on loopback. The
automatic move is triggered on the server, through the viewer's own Selector (``want``), as its
feedback would: an uncapped browser on loopback never needs one (the capped-link move is
tests/relay/test_quality_flow.py's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import quality
from relay.ladder import Quality
from relay.peer import PeerRole
from relay.selector import Selector
from signaling.auth.grants import Role
from signaling.keys import RELAY
from tests.peers import publisher

from .conftest import LiveServer, chromium, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
PLAYS_ON = """
() => new Promise((resolve) => {
  // Resolves with the frames shown, as soon as 11 are (or after 5 s): a frozen video fails, a
  // slow box only takes longer.
  const v = document.querySelector('[data-testid="remote-video"]');
  let frames = 0;
  const tick = () => {
    frames += 1;
    if (frames > 10) resolve(frames);
    else v.requestVideoFrameCallback(tick);
  };
  v.requestVideoFrameCallback(tick);
  setTimeout(() => resolve(frames), 5000);
})
"""
VIDEO_IS = """
([w, h]) => {
  const v = document.querySelector('[data-testid="remote-video"]');
  return !!v && v.readyState >= 2 && v.videoWidth === w && v.videoHeight === h;
}
"""


def _selectors(live_server: LiveServer, cid: str) -> list[Selector]:
    """The automatic-mode tracks of the consultation's viewers (a page that re-connected may
    still have its previous session for a moment)."""
    router = live_server.app[RELAY].find(cid)
    assert router is not None
    viewers = [p for p in router.peers.values() if p.role is PeerRole.VIEWER]
    tracks = [t.sender.track for p in viewers for t in p.pc.getTransceivers()]
    return [track for track in tracks if isinstance(track, Selector)]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_an_automatic_move_is_told_and_the_picker_pins_360p(
    live_server: LiveServer,
    tmp_path: Path,
    size: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loopback never congests: after its hold the policy would try the original again, and the
    # 360p state under test would end while the test is still reading it.
    monkeypatch.setattr(quality, "HOLD_S", 600.0)
    consultation = await live_server.consultation(consent=True)
    cid = consultation.id
    viewport = {"viewport": {"width": size[0], "height": size[1]}}
    async with chromium(tmp_path, **viewport) as browser:
        page = await browser.open(
            live_server.url("surgeon", live_server.token(Role.SURGEON, cid)), "surgeon"
        )
        async with publisher(
            f"{live_server.base_url}/whip/{cid}", live_server.token(Role.CLINIC, cid)
        ):
            await moved_then_pinned(live_server, page, cid, size)
        await page.close()
    assert not browser.page_errors, browser.page_errors


async def moved_then_pinned(  # type: ignore[no-untyped-def]
    live_server: LiveServer, page, cid: str, size: tuple[int, int]
) -> None:
    """In automatic mode, moved to 360p by the relay (told); then 360p pinned by the picker."""
    await page.wait_for_function(VIDEO_IS, arg=[1280, 720], timeout=20_000)
    picker = page.get_by_test_id("quality")
    await expect(picker).to_have_value("auto")
    await expect(picker.locator("option")).to_have_text(
        ["Automatic", "Original", "Medium (540p)", "Low (360p)"]
    )
    badge = page.get_by_test_id("quality-badge")
    await expect(badge).to_be_hidden()

    # the relay moves this viewer (automatic mode) to 360p: the page says so in plain words
    selectors = _selectors(live_server, cid)
    assert selectors
    for selector in selectors:
        selector.want(Quality.P360, "connection")
    notice = page.locator('#picture-notes [data-key="quality"]')
    await expect(notice).to_contain_text(
        "Reduced picture quality for your connection (360p)", timeout=15_000
    )
    await expect(badge).to_have_text("Reduced quality: 360p")
    await page.wait_for_function(VIDEO_IS, arg=[640, 360], timeout=15_000)
    switch = next(s for selector in selectors for s in selector.switches)
    frames = await page.evaluate(PLAYS_ON)
    moved_ms = 1000 * (switch.done_at - switch.asked_at)
    print(f"\n{size}: moved in {moved_ms:.0f} ms")
    assert frames > 10, f"the video did not play on after the move: {frames} frames in 5 s"

    # the picker pins 360p: a new WHEP session with ?quality=360p, 640×360 frames
    with_quality = []
    page.on("request", lambda r: "quality=" in r.url and with_quality.append(r.url))
    await picker.select_option("360p")
    await page.wait_for_function(VIDEO_IS, arg=[640, 360], timeout=20_000)
    assert any("quality=360p" in url for url in with_quality), with_quality
    await expect(notice).to_be_hidden()  # pinned: no "for your connection" notice
    await expect(badge).to_have_text("Reduced quality: 360p")
