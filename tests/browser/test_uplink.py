"""The clinic's picture follows its uplink (web/js/uplink.js): the level choice run in Chromium over
sequences of rates (the same cases as client/uplink.py's), the encoding each level asks for, and
the live clinic page reporting its uplink every second, with its notice exactly while limited."""

from __future__ import annotations

import pytest

from .conftest import Browser, LiveServer
from .test_annotations import open_consultation

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

CHOOSE = """
async (sequences) => {
  const { LevelChooser } = await import("/static/js/uplink.js");
  return sequences.map((samples) => {
    const chooser = new LevelChooser();
    return samples.map(([at, kbps]) => chooser.update(kbps, at).name);
  });
}
"""

CASES = [
    # The first rate picks its level at once.
    ([[0, 2000]], ["720p"]),
    ([[0, 900]], ["540p"]),
    ([[0, 400]], ["360p"]),
    ([[0, 150]], ["low"]),
    # A fall steps down after 1.5 s, straight to the level that fits.
    ([[0, 2000], [1, 400], [1.75, 420], [2.5, 410]], ["720p", "720p", "720p", "360p"]),
    # A dip shorter than the hold changes nothing.
    ([[0, 1000], [1, 300], [2, 900], [3, 300], [4, 900]], ["540p"] * 5),
    # Up one level after 4 s with a 15 % margin; exactly at the need is not enough.
    ([[0, 200], *[[t, 350] for t in range(1, 8)]], ["low"] * 8),
    (
        [[0, 200], *[[t, 3000] for t in range(1, 16)]],
        ["low"] * 5 + ["360p"] * 5 + ["540p"] * 5 + ["720p"],
    ),
    # Between levels, the level held stays (hysteresis).
    ([[0, 900], *[[t, 1600] for t in range(1, 10)]], ["540p"] * 10),
    ([[0, 2000], *[[t, 1600] for t in range(1, 10)]], ["720p"] * 10),
]

ENCODINGS = """
async () => {
  const { LEVELS, encodingFor } = await import("/static/js/uplink.js");
  return LEVELS.map((level) => [level.name, encodingFor(level, 720), encodingFor(level, 360)]);
}
"""


async def test_the_level_follows_rate_sequences_and_each_level_scales_down_never_up(
    live_server: LiveServer, browser: Browser
) -> None:
    """The pure part, in the browser that runs it: levels chosen over sequences of rates (with
    hysteresis), and the encoding each level asks of a 720p and a 360p camera."""
    page = await browser.open(live_server.url(""), "landing")
    chosen = await page.evaluate(CHOOSE, [samples for samples, _ in CASES])
    assert chosen == [expected for _, expected in CASES]
    got = {name: (hd, sd) for name, hd, sd in await page.evaluate(ENCODINGS)}
    assert got["720p"][0] == {"scaleResolutionDownBy": 1, "maxBitrate": 2_500_000}
    assert got["540p"][0] == {"scaleResolutionDownBy": 720 / 540, "maxBitrate": 2_250_000}
    assert got["360p"][0] == {"scaleResolutionDownBy": 2, "maxBitrate": 1_200_000}
    assert got["low"][0] == {"scaleResolutionDownBy": 720 / 270, "maxBitrate": 525_000}
    assert got["540p"][1]["scaleResolutionDownBy"] == 1  # a 360p camera is never upscaled


async def test_the_streaming_clinic_reports_its_uplink_every_second(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, _, _ = await open_consultation(live_server, browser)
    events = await clinic.evaluate(
        """() => new Promise((resolve) => {
          const seen = [];
          window.addEventListener("endolink:uplink", (e) => seen.push(e.detail));
          setTimeout(() => resolve(seen), 3500);
        })"""
    )
    assert 2 <= len(events) <= 5
    assert all(set(e) == {"kbps", "level"} for e in events)
    assert all(e["level"] in ("720p", "540p", "360p", "low") for e in events if e["level"])
    assert any(isinstance(e["kbps"], int) and e["kbps"] > 0 for e in events)
    # Read at one instant: the word about the upload is there exactly while the link makes the
    # picture smaller (on a loaded test machine aiortc's estimate may well say so on loopback).
    state = await clinic.evaluate(
        """() => ({debug: window.endolink.uplink, notice: document.querySelector(
                       "#picture-notes [data-key=uplink]")?.textContent})"""
    )
    assert state["debug"]["applied"] == state["debug"]["level"]
    if state["debug"]["limited"]:
        assert "upload" in state["notice"]
    else:
        assert state["notice"] is None
