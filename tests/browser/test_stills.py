"""Stills mode in real browsers: the surgeon asks for stills (or the clinic's uplink reports stay
low), the clinic sends the sharpest recent frame of its camera as a JPEG, every page shows it as
the frozen picture, the surgeon draws on it, sound keeps flowing, and video comes back.

The `endolink:uplink` events uplink.js sends are dispatched here by hand (plan §5), so the link
decisions run on exactly the reports the page would get; the page's own follower stays live (it
tunes the sender and yields it to stills mode) with its reports silenced. Desktop and phone
(390×844) sizes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from signaling.auth.grants import Role

from .conftest import Browser, LiveServer, chromium, playwright_api
from .test_annotations import GREEN, drag, open_consultation, picture, select_tool, wait_color
from .test_small_screens import open_toolbar

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}

STILL_SHOWN = """
() => {
  const a = window.endolink && window.endolink.annotations;
  const still = document.querySelector('[data-testid="frozen-frame"]');
  return !!a && a.frozenShown && a.frozenSnapshot !== null && !!still
    && still.dataset.snapshot === a.frozenSnapshot;
}
"""

# The frozen canvas: its size, and the mean and spread of its grey levels (a real picture, not
# a blank canvas).
FROZEN_CANVAS = """
() => {
  const c = document.querySelector('[data-testid="frozen-frame"]');
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let sum = 0, squares = 0, n = 0;
  for (let i = 0; i < d.length; i += 16) {
    const g = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += g; squares += g * g; n += 1;
  }
  const mean = sum / n;
  return {width: c.width, height: c.height, mean, spread: Math.sqrt(squares / n - mean * mean),
          snapshot: c.dataset.snapshot};
}
"""

# Audio packets received on the surgeon's endoscope connection, and whether its audio track is live.
AUDIO_IN = """
async () => {
  const pc = window.endolink.playerPc;
  const track = pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === "audio");
  let packets = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived;
  });
  return {live: !!track && track.readyState === "live", packets};
}
"""

VIDEO_ENCODING = """
() => {
  const pc = window.endolink.publishPc;
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
  const e = sender.getParameters().encodings[0];
  return {scale: e.scaleResolutionDownBy ?? 1, maxBitrate: e.maxBitrate ?? null,
          maxFramerate: e.maxFramerate ?? null};
}
"""

# The encoding uplink.js asks for at the level it holds (what the sender returns to after stills).
UPLINK_ENCODING = """
async () => {
  const {LEVELS, encodingFor} = await import("/static/js/uplink.js");
  const debug = window.endolink.uplink;
  const level = LEVELS.find((l) => l.name === debug.applied);
  const v = document.querySelector('[data-testid="local-preview"]');
  const e = encodingFor(level, v.videoHeight);
  return {scale: e.scaleResolutionDownBy, maxBitrate: e.maxBitrate, maxFramerate: null,
          yielded: debug.yielded};
}
"""

# Reports `kbps` as uplink.js would, every 250 ms, for `ms`.
REPORT_UPLINK = """
({kbps, ms}) => new Promise((resolve) => {
  const started = performance.now();
  const timer = setInterval(() => {
    window.dispatchEvent(new CustomEvent("endolink:uplink", {detail: {kbps, level: "low"}}));
    if (performance.now() - started >= ms) { clearInterval(timer); resolve(); }
  }, 250);
})
"""

# Focus measure: a detailed picture and blurred copies of it; returns each one's score.
FOCUS_SCORES = """
async () => {
  const {scorePicture} = await import("/static/js/stills.js");
  const source = document.createElement("canvas");
  source.width = 1280; source.height = 720;
  const ctx = source.getContext("2d");
  ctx.fillStyle = "#a04030"; ctx.fillRect(0, 0, 1280, 720);
  for (let i = 0; i < 400; i += 1) {  // vessels: thin lines of varying shade
    ctx.strokeStyle = `rgb(${120 + (i * 37) % 120}, ${30 + (i * 17) % 60}, 40)`;
    ctx.lineWidth = 1 + (i % 3);
    ctx.beginPath();
    ctx.moveTo((i * 97) % 1280, (i * 53) % 720);
    ctx.lineTo((i * 211) % 1280, (i * 131) % 720);
    ctx.stroke();
  }
  const scratch = document.createElement("canvas");
  const scores = [];
  for (const blur of [4, 2, 0, 1, 6]) {
    const frame = document.createElement("canvas");
    frame.width = 1280; frame.height = 720;
    const f = frame.getContext("2d");
    f.filter = blur ? `blur(${blur}px)` : "none";
    f.drawImage(source, 0, 0);
    scores.push(scorePicture(frame, scratch));
  }
  return scores;
}
"""


async def report_uplink(clinic, kbps: float, ms: int) -> None:
    await clinic.evaluate(REPORT_UPLINK, {"kbps": kbps, "ms": ms})


async def still_on_both(clinic, surgeon, stored_size: tuple[int, int]) -> str:
    """Both pages show the same still, at the clinic camera's full resolution, not blank."""
    shown = []
    for page in (surgeon, clinic):
        await page.wait_for_function(STILL_SHOWN, timeout=15_000)
        await expect(page.get_by_test_id("frozen-badge")).to_contain_text("still picture")
        canvas = await page.evaluate(FROZEN_CANVAS)
        assert (canvas["width"], canvas["height"]) == stored_size
        assert canvas["spread"] > 5, "the still is a real picture"
        shown.append(canvas["snapshot"])
    assert shown[0] == shown[1]
    return shown[0]


async def audio_flows(surgeon) -> None:
    """More than 20 audio packets arrive (50 a second when it flows), within 10 s."""
    first = await surgeon.evaluate(AUDIO_IN)
    assert first["live"]
    for _ in range(40):
        await surgeon.wait_for_timeout(250)
        later = await surgeon.evaluate(AUDIO_IN)
        assert later["live"]
        if later["packets"] > first["packets"] + 20:
            return
    raise AssertionError("the clinic's sound stopped arriving")


async def back_to_video(clinic, surgeon) -> None:
    for page in (surgeon, clinic):
        await page.wait_for_function(
            "() => !window.endolink.annotations.frozenShown", timeout=15_000
        )
        await expect(page.get_by_test_id("frozen-frame")).to_be_hidden()
        await expect(page.get_by_test_id("notices")).not_to_contain_text("still pictures")
    frames = await surgeon.evaluate("() => window.endolink.framesRendered")
    await surgeon.wait_for_function(
        f"() => window.endolink.framesRendered > {frames} + 10", timeout=10_000
    )
    # The sender is uplink.js's again, at the level it holds now, without the trickle's 5 fps.
    await clinic.wait_for_function("() => window.endolink.uplink.applied !== null")
    expected = await clinic.evaluate(UPLINK_ENCODING)
    assert not expected.pop("yielded")
    assert await clinic.evaluate(VIDEO_ENCODING) == expected


async def camera_size(clinic) -> tuple[int, int]:
    size = await clinic.evaluate(
        "() => { const v = document.querySelector('[data-testid=\"local-preview\"]');"
        " return [v.videoWidth, v.videoHeight]; }"
    )
    return size[0], size[1]


@pytest.mark.parametrize("size", SIZES)
async def test_surgeon_asks_for_stills_draws_on_one_and_returns_to_video(
    live_server: LiveServer, tmp_path: Path, size: str
) -> None:
    async with chromium(tmp_path, viewport=SIZES[size]) as browser:
        await _requested_stills(live_server, browser)


async def _requested_stills(live_server: LiveServer, browser: Browser) -> None:
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    consultation, clinic, surgeon, surgeon_token = await open_consultation(live_server, browser)
    toggle = surgeon.get_by_test_id("stills-toggle")
    await expect(toggle).to_have_text("Ask for stills")
    asked = time.monotonic()
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await expect(toggle).to_have_text("Back to video")
    for page in (surgeon, clinic):
        await expect(page.get_by_test_id("notices")).to_contain_text("still pictures")
    camera = await camera_size(clinic)
    still_id = await still_on_both(clinic, surgeon, camera)
    shown_after = time.monotonic() - asked
    figures = await clinic.evaluate("() => window.endolink.stills")
    print(
        f"\nstill {camera[0]}x{camera[1]}: {figures['lastBytes']} bytes JPEG, upload "
        f"{figures['lastMs']} ms on loopback, shown {shown_after:.2f} s after asking"
    )
    trickle = await clinic.evaluate(VIDEO_ENCODING)  # video down to a trickle...
    assert trickle == {"scale": 4, "maxBitrate": 100_000, "maxFramerate": 5}
    assert (await clinic.evaluate("() => window.endolink.uplink"))["yielded"]  # ...left alone

    # The stored still is the JPEG both pages show.
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {surgeon_token}"}
        base = f"{live_server.base_url}/api/consultations/{consultation.id}/snapshots"
        async with http.get(f"{base}/{still_id}.jpg", headers=headers) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            jpeg = await response.read()
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert (decoded.shape[1], decoded.shape[0]) == camera

    # The surgeon draws on the still; the clinic sees the mark on it.
    await open_toolbar(surgeon, touch=False)  # folded on a phone
    await select_tool(surgeon, "rect")
    s_pic = await picture(surgeon, "frozen-frame")
    c_pic = await picture(clinic, "frozen-frame")
    await drag(surgeon, s_pic, [(0.3, 0.3), (0.6, 0.6)])
    await wait_color(clinic, c_pic, [(0.45, 0.3), (0.6, 0.45)], GREEN)
    await audio_flows(surgeon)

    # The next still, asked for: with a mark on the picture it waits for the surgeon (stills
    # that came before the mark replaced the picture by themselves).
    still_id = (await surgeon.evaluate(FROZEN_CANVAS))["snapshot"]
    await surgeon.get_by_test_id("stills-next").click()
    show = surgeon.get_by_test_id("stills-show")
    await expect(show).to_be_visible(timeout=10_000)
    assert (await surgeon.evaluate(FROZEN_CANVAS))["snapshot"] == still_id
    await show.click()
    await surgeon.wait_for_function(
        f"() => window.endolink.annotations.frozenSnapshot !== {still_id!r}"
        " && window.endolink.annotations.frozenShown",
        timeout=10_000,
    )

    await toggle.click()
    await expect(toggle).to_have_text("Ask for stills")
    await back_to_video(clinic, surgeon)


async def test_stills_follow_the_clinic_uplink_down_and_back_up(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation, clinic, surgeon, _ = await open_consultation(live_server, browser)
    await clinic.wait_for_function("() => window.endolink.uplink !== null")
    await clinic.evaluate("() => window.endolink.silenceUplinkReports()")
    link = {"kbps": 250}  # the stills' POSTs go through an emulated slow uplink

    async def throttled(route) -> None:  # type: ignore[no-untyped-def]
        body = route.request.post_data_buffer or b""
        await asyncio.sleep(len(body) * 8 / (link["kbps"] * 1000))
        await route.continue_()

    await clinic.route("**/api/consultations/*/stills", throttled)
    await report_uplink(clinic, 150, 3000)  # not yet sustained: still video
    assert not (await clinic.evaluate("() => window.endolink.stills"))["active"]
    await report_uplink(clinic, 150, 2600)
    await clinic.wait_for_function("() => window.endolink.stills.reason === 'link'")
    for page in (surgeon, clinic):
        await expect(page.get_by_test_id("notices")).to_contain_text("too slow for video")
    await still_on_both(clinic, surgeon, await camera_size(clinic))
    await audio_flows(surgeon)
    # Someone joining now sees the still (welcome); an observer gets no stills buttons.
    observer = await browser.open(
        live_server.url("surgeon", live_server.token(Role.OBSERVER, consultation.id)),
        "observer",
        window=True,  # a tab would hide the clinic's page (conftest.Browser.open)
    )
    await observer.wait_for_function(STILL_SHOWN, timeout=15_000)
    await expect(observer.get_by_test_id("notices")).to_contain_text("too slow for video")
    for testid in ("stills-toggle", "stills-next", "stills-show"):
        await expect(observer.get_by_test_id(testid)).to_be_hidden()
    await report_uplink(clinic, 380, 5600)  # between the thresholds: no decision
    figures = await clinic.evaluate("() => window.endolink.stills")
    assert figures["active"] and figures["lastBytes"] * 8 / figures["lastMs"] < 600  # slow stills
    await report_uplink(clinic, 1500, 7000)  # sustained 5 s, even with late timer ticks
    await back_to_video(clinic, surgeon)
    await clinic.unroute("**/api/consultations/*/stills")


# The link decision on the stills' own uploads (bytes, ms of each POST; a fixed clock `now`).
UPLOAD_VERDICTS = """
async () => {
  const {LinkWatch, SUSTAIN_MS} = await import("/static/js/stills.js");
  const watch = new LinkWatch();
  const verdicts = [];
  for (const [bytes, ms] of [[300_000, 8000], [300_000, 3000], [300_000, 8000], [300_000, 3000]]) {
    verdicts.push(watch.uploaded(bytes, ms, 1000));  // 300 kbit/s, 800 kbit/s, 300, 800: no
  }
  verdicts.push(watch.uploaded(300_000, 3000, 1000));  // the last two at 800 kbit/s: recovered
  verdicts.push(watch.uploaded(300_000, 3000, 1000));  // a new pair needed
  // The estimate still low after the trickle: it gets SUSTAIN_MS to climb before "low".
  const lows = [1000, 1000 + SUSTAIN_MS, 1000 + 2 * SUSTAIN_MS].map((t) => watch.feed(150, t));
  return {verdicts, lows};
}
"""


async def test_a_link_triggered_mode_ends_when_the_stills_upload_fast_again(
    live_server: LiveServer, browser: Browser
) -> None:
    """A 100 kbit/s trickle keeps the browser's estimate low whatever the link: the stills'
    own uploads (≥ 600 kbit/s twice running) say the link recovered."""
    page = await browser.open(f"{live_server.base_url}/", "page")
    result = await page.evaluate(UPLOAD_VERDICTS)
    assert result["verdicts"] == [None, None, None, None, "high", None]
    assert result["lows"] == [None, None, "low"]


async def test_the_focus_measure_picks_the_sharp_frame_among_blurred_ones(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await browser.open(f"{live_server.base_url}/", "page")
    started = time.monotonic()
    scores = await page.evaluate(FOCUS_SCORES)
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"\nfocus scores (blur 4, 2, 0, 1, 6 px): {[round(s) for s in scores]}")
    assert max(range(len(scores)), key=scores.__getitem__) == 2
    assert scores[3] > scores[1] > scores[0] > scores[4]  # sharper, higher
    assert elapsed_ms < 5000
