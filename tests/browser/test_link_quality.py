"""The link in one word beside the numbers: stats.js's linkQuality() run in the browser over
conditions on each side of every limit, and the live pages showing "good" on loopback."""

from __future__ import annotations

import pytest

from .conftest import Browser, LiveServer, playwright_api
from .test_annotations import open_consultation

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

QUALITY = """
async (cases) => {
  const { linkQuality } = await import("/static/js/stats.js");
  return cases.map((stats) => linkQuality(stats));
}
"""

CASES = [
    ({"rtt_ms": 20, "loss_pct": 0, "jitter_ms": 2, "fps": 30}, {"level": "good", "reason": None}),
    ({"rtt_ms": 150, "loss_pct": 1, "jitter_ms": 30, "fps": 20}, {"level": "good", "reason": None}),
    ({"rtt_ms": 220, "loss_pct": 0, "fps": 30}, {"level": "fair", "reason": "rtt_ms"}),
    ({"rtt_ms": 40, "loss_pct": 3, "fps": 30}, {"level": "fair", "reason": "loss_pct"}),
    ({"rtt_ms": 40, "jitter_ms": 45, "fps": 30}, {"level": "fair", "reason": "jitter_ms"}),
    ({"rtt_ms": 40, "fps": 15}, {"level": "fair", "reason": "fps"}),
    ({"rtt_ms": 450, "loss_pct": 0}, {"level": "poor", "reason": "rtt_ms"}),
    ({"rtt_ms": 40, "loss_pct": 8}, {"level": "poor", "reason": "loss_pct"}),
    ({"jitter_ms": 90}, {"level": "poor", "reason": "jitter_ms"}),
    ({"rtt_ms": 40, "fps": 4}, {"level": "poor", "reason": "fps"}),
    ({"rtt_ms": 220, "loss_pct": 9, "fps": 15}, {"level": "poor", "reason": "loss_pct"}),
    ({"fps": None, "rtt_ms": None}, None),
    ({}, None),
]


async def test_link_quality_words_follow_round_trip_loss_jitter_and_frame_rate(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await browser.open(live_server.url(""), "landing")
    got = await page.evaluate(QUALITY, [stats for stats, _ in CASES])
    assert got == [expected for _, expected in CASES]


async def test_the_live_pages_call_a_loopback_link_good(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, _ = await open_consultation(live_server, browser)
    # Each page's own link, and the other's as it reports it (beside its numbers).
    for page, block in ((surgeon, "stats"), (clinic, "stats"), (surgeon, "remote-stats")):
        badge = page.get_by_test_id(block).get_by_test_id("link-quality").first
        await expect(badge).to_have_attribute("data-quality", "good", timeout=15_000)
        await expect(badge).to_have_text("Good link")
