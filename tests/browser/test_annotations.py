"""Live annotation in real browsers: the surgeon draws on the video, the clinic sees it.

Positions are checked against the overlay canvases' pixels (``getImageData``) and against the
normalised coordinates the pages hold, computed here independently of ``web/js/geometry.js``
(object-fit: contain of the video's intrinsic size in the element box). Element and frame aspects
differ on purpose (letterbox, pillarbox) and one page runs at devicePixelRatio 2. Every wait is
bounded; negative checks ("nothing drawn") wait a short fixed time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from signaling.auth.grants import Role

from .conftest import Browser, LiveServer, playwright_api
from .test_pages import VIDEO_HAS_FRAMES, start_clinic_stream

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

GREEN = (0x00, 0xE6, 0x76)  # the surgeon page's default colour
YELLOW = (0xFF, 0xEA, 0x00)  # the clinic page's default colour
CYAN = (0x00, 0xE5, 0xFF)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOOLS = ["pen", "arrow", "circle", "rect", "text", "pointer"]

MEDIA_BOX = """
(testid) => {
  const media = document.querySelector(`[data-testid="${testid}"]`);
  const canvas = document.querySelector('[data-testid="annotation-canvas"]');
  const r = media.getBoundingClientRect();
  const c = canvas.getBoundingClientRect();
  return {
    left: r.left, top: r.top, width: r.width, height: r.height,
    vw: media.videoWidth || media.naturalWidth || media.width || 0,
    vh: media.videoHeight || media.naturalHeight || media.height || 0,
    canvasLeft: c.left, canvasTop: c.top, canvasWidth: c.width, canvasHeight: c.height,
    backingWidth: canvas.width, dpr: window.devicePixelRatio,
  };
}
"""

# For each point (CSS px relative to the canvas): the closest colour match among opaque pixels
# within `radius` CSS px (sum of |dr|+|dg|+|db|) and the highest alpha there.
SAMPLE = """
({points, color, radius}) => {
  const canvas = document.querySelector('[data-testid="annotation-canvas"]');
  const ctx = canvas.getContext("2d");
  const r = canvas.getBoundingClientRect();
  const sx = canvas.width / r.width, sy = canvas.height / r.height;
  return points.map(([x, y]) => {
    const rx = Math.max(1, Math.ceil(radius * sx)), ry = Math.max(1, Math.ceil(radius * sy));
    const px = Math.round(x * sx), py = Math.round(y * sy);
    const d = ctx.getImageData(px - rx, py - ry, 2 * rx + 1, 2 * ry + 1).data;
    let best = 765, alpha = 0;
    for (let i = 0; i < d.length; i += 4) {
      alpha = Math.max(alpha, d[i + 3]);
      if (d[i + 3] < 250) continue;
      const diff = Math.abs(d[i] - color[0]) + Math.abs(d[i + 1] - color[1])
        + Math.abs(d[i + 2] - color[2]);
      best = Math.min(best, diff);
    }
    return {best, alpha};
  });
}
"""

HAS_COLOR = "(arg) => (" + SAMPLE.strip() + ")(arg).every((s) => s.best <= arg.tolerance)"
IS_CLEAR = "(arg) => (" + SAMPLE.strip() + ")(arg).every((s) => s.alpha === 0)"

READY = """
() => {
  const a = window.endolink && window.endolink.annotations;
  const room = document.querySelector('[data-testid="room-state"]');
  return !!a && !!a.picture && !!room && room.dataset.state === "connected";
}
"""

STILL_PIXELS = """
(points) => {
  const still = document.querySelector('[data-testid="frozen-frame"]');
  const ctx = still.getContext("2d");
  return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
}
"""

STILL_SIZE = """
() => {
  const still = document.querySelector('[data-testid="frozen-frame"]');
  return [still.width, still.height];
}
"""

MARKS = "() => window.endolink.annotations.marks"
STATE = "() => window.endolink.annotations"


@dataclass
class Picture:
    """Where a page shows the video frame (viewport CSS px), computed here, not by the page."""

    x: float
    y: float
    width: float
    height: float
    canvas_left: float
    canvas_top: float
    box_width: float
    box_height: float
    frame_width: int
    frame_height: int
    dpr: float

    def page_xy(self, nx: float, ny: float) -> tuple[float, float]:
        return self.x + nx * self.width, self.y + ny * self.height

    def canvas_xy(self, nx: float, ny: float) -> list[float]:
        x, y = self.page_xy(nx, ny)
        return [x - self.canvas_left, y - self.canvas_top]

    @property
    def letterboxed(self) -> bool:
        return self.box_height - self.height > 4

    @property
    def pillarboxed(self) -> bool:
        return self.box_width - self.width > 4


async def picture(page, testid: str) -> Picture:
    box = await page.evaluate(MEDIA_BOX, testid)
    vw, vh = box["vw"], box["vh"]
    assert vw > 0 and vh > 0, f"{testid} has no frame size"
    scale = min(box["width"] / vw, box["height"] / vh)
    width, height = vw * scale, vh * scale
    return Picture(
        x=box["left"] + (box["width"] - width) / 2,
        y=box["top"] + (box["height"] - height) / 2,
        width=width,
        height=height,
        canvas_left=box["canvasLeft"],
        canvas_top=box["canvasTop"],
        box_width=box["width"],
        box_height=box["height"],
        frame_width=vw,
        frame_height=vh,
        dpr=box["dpr"],
    )


def lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


async def page_time_when(page, predicate: str, arg: dict, timeout: float) -> float:
    """Wait for ``predicate(arg)`` in the page and return the page's own clock at that moment:
    a busy test process reading the time afterwards would add its own delay."""
    timed = f"(arg) => ({predicate})(arg) && performance.now()"
    return float(await (await page.wait_for_function(timed, arg=arg, timeout=timeout)).json_value())


async def wait_color(
    page, pic: Picture, points, color, *, radius=1.5, tolerance=24, timeout=5_000
) -> float:
    """The page's clock (``performance.now()``, ms) when the colour was first seen there."""
    arg = {
        "points": [pic.canvas_xy(*p) for p in points],
        "color": list(color),
        "radius": radius,
        "tolerance": tolerance,
    }
    try:
        return await page_time_when(page, HAS_COLOR, arg, timeout)
    except playwright_api.TimeoutError:
        samples = await page.evaluate(SAMPLE, arg)
        raise AssertionError(f"colour {color} not at {points}: {samples}") from None


async def wait_clear(page, pic: Picture, points, *, radius=2.0, timeout=5_000) -> float:
    """The page's clock (``performance.now()``, ms) when the points were first seen clear."""
    arg = {"points": [pic.canvas_xy(*p) for p in points], "color": [0, 0, 0], "radius": radius}
    try:
        return await page_time_when(page, IS_CLEAR, arg, timeout)
    except playwright_api.TimeoutError:
        samples = await page.evaluate(SAMPLE, arg)
        raise AssertionError(f"canvas not clear at {points}: {samples}") from None


async def assert_clear(page, pic: Picture, points, *, radius=2.0) -> None:
    arg = {"points": [pic.canvas_xy(*p) for p in points], "color": [0, 0, 0], "radius": radius}
    samples = await page.evaluate(SAMPLE, arg)
    assert all(s["alpha"] == 0 for s in samples), f"unexpected pixels at {points}: {samples}"


async def select_tool(page, tool: str) -> None:
    button = page.get_by_test_id(f"tool-{tool}")
    if await button.get_attribute("aria-pressed") != "true":
        await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")


async def drag(page, pic: Picture, points, steps: int = 6) -> None:
    await page.mouse.move(*pic.page_xy(*points[0]))
    await page.mouse.down()
    for p in points[1:]:
        await page.mouse.move(*pic.page_xy(*p), steps=steps)
    await page.mouse.up()


async def wait_ready(page) -> None:
    await page.wait_for_function(READY, timeout=10_000)


async def wait_marks(page, count: int, timeout: int = 5_000) -> list[dict]:
    await page.wait_for_function(
        "(n) => window.endolink.annotations.marks.length === n && "
        "window.endolink.annotations.drafts === 0",
        arg=count,
        timeout=timeout,
    )
    return await page.evaluate(MARKS)


async def open_consultation(live_server: LiveServer, browser: Browser):
    """A consented consultation with the clinic streaming and the surgeon watching."""
    consultation = await live_server.consultation(consent=True)
    clinic = await browser.open(
        live_server.url("clinic", live_server.token(Role.CLINIC, consultation.id)), "clinic"
    )
    await start_clinic_stream(clinic)
    surgeon_token = live_server.token(Role.SURGEON, consultation.id)
    # Its own window: both pages draw at the display rate (conftest.Browser.open).
    surgeon = await browser.open(live_server.url("surgeon", surgeon_token), "surgeon", window=True)
    await surgeon.wait_for_function(VIDEO_HAS_FRAMES, arg="remote-video", timeout=15_000)
    await expect(surgeon.get_by_test_id("remote-overlay")).to_be_hidden(timeout=10_000)
    await wait_ready(surgeon)
    await wait_ready(clinic)
    return consultation, clinic, surgeon, surgeon_token


async def surgeon_with_tool(live_server: LiveServer, browser: Browser, tool: str):
    """``open_consultation``, both pictures measured and ``tool`` chosen on the surgeon page."""
    consultation, clinic, surgeon, _ = await open_consultation(live_server, browser)
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    await select_tool(surgeon, tool)
    return consultation, clinic, surgeon, s_pic, c_pic


def close_to(points, expected, tolerance: float) -> bool:
    return len(points) == len(expected) and all(
        abs(a[0] - b[0]) <= tolerance and abs(a[1] - b[1]) <= tolerance
        for a, b in zip(points, expected, strict=True)
    )


# ----------------------------------------------------------------------------------- geometry


async def test_geometry_module_letterbox_pillarbox_and_dpr(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await browser.open(live_server.url(""), "landing")
    result = await page.evaluate(
        """async () => {
          const g = await import("/static/js/geometry.js");
          const out = {};
          // 16:9 frame in a square box: letterbox (bars above and below).
          out.letterbox = g.fitRect(800, 800, 1280, 720);
          // 16:9 frame in a 5:2 box: pillarbox (bars left and right).
          out.pillarbox = g.fitRect(1000, 400, 1280, 720);
          const lb = out.letterbox;
          out.topLeft = g.toFrame(0, 175, lb);
          out.bottomRight = g.toFrame(800, 625, lb);
          out.centre = g.toFrame(400, 400, lb);
          out.inBar = g.toFrame(400, 20, lb);          // in the top bar: clamped to y = 0
          out.rightOfPicture = g.toFrame(900, 200, out.pillarbox);
          out.back = g.toElement(0.25, 0.75, out.pillarbox);
          out.roundTrip = g.toFrame(out.back.x, out.back.y, out.pillarbox);
          out.backing = g.backingSize(300.5, 200.25, 2);
          out.cover = g.fitRect(800, 800, 1280, 720, "cover");
          out.round = g.roundCoord(0.1234567);
          // A real element: a 1280x720 canvas shown in a 600x600 box (object-fit: contain) with
          // a 10 px border and 5 px padding, measured relative to another element.
          const host = document.createElement("div");
          host.style.position = "absolute";
          host.style.left = "30px";
          host.style.top = "40px";
          const media = document.createElement("canvas");
          media.width = 1280;
          media.height = 720;
          Object.assign(media.style, {
            width: "600px", height: "600px", border: "10px solid red", padding: "5px",
            objectFit: "contain", boxSizing: "content-box", display: "block",
          });
          host.append(media);
          document.body.append(host);
          out.dom = g.pictureRect(media, host);
          media.style.objectPosition = "0% 100%";
          out.domBottomLeft = g.pictureRect(media, host);
          media.style.width = "1000px";
          media.style.height = "300px";
          media.style.objectPosition = "50% 50%";
          out.domPillar = g.pictureRect(media, host);
          host.remove();
          return out;
        }"""
    )
    approx = pytest.approx
    assert result["letterbox"] == approx({"x": 0, "y": 175, "width": 800, "height": 450})
    assert result["pillarbox"] == approx(
        {"x": 144.4444, "y": 0, "width": 711.1111, "height": 400}, abs=1e-3
    )
    assert result["topLeft"] == {"x": 0, "y": 0, "inside": True}
    assert result["bottomRight"] == {"x": 1, "y": 1, "inside": True}
    assert result["centre"] == {"x": 0.5, "y": 0.5, "inside": True}
    assert result["inBar"] == {"x": 0.5, "y": 0, "inside": False}
    assert result["rightOfPicture"] == {"x": 1, "y": 0.5, "inside": False}
    assert result["back"] == approx({"x": 144.4444 + 0.25 * 711.1111, "y": 300}, abs=1e-3)
    assert result["roundTrip"] == {"x": 0.25, "y": 0.75, "inside": True}
    assert result["backing"] == {"width": 601, "height": 401, "ratio": 2}
    assert result["cover"] == approx(
        {"x": -311.1111, "y": 0, "width": 1422.2222, "height": 800}, abs=1e-3
    )
    assert result["round"] == 0.12346
    # Content box starts at border 10 + padding 5 = 15 px; 600x600 box → 600x337.5 picture.
    assert result["dom"] == approx({"x": 15, "y": 15 + 131.25, "width": 600, "height": 337.5})
    assert result["domBottomLeft"] == approx(
        {"x": 15, "y": 15 + 262.5, "width": 600, "height": 337.5}
    )
    # 1000x300 box → 533.33x300 picture, centred.
    assert result["domPillar"] == approx(
        {"x": 15 + 233.3333, "y": 15, "width": 533.3333, "height": 300}, abs=1e-3
    )


async def test_outgoing_annotation_ops_stay_within_the_server_rate(
    live_server: LiveServer, browser: Browser
) -> None:
    """The page's sender: a 120 events/s stroke becomes ≤ 30 messages/s (the server's limit,
    one-second bucket), newest state last, nothing else dropped or reordered."""
    page = await browser.open(live_server.url(""), "landing")
    result = await page.evaluate(
        """async () => {
          const { Sender } = await import("/static/js/annotations.js");
          const sent = [];
          const sender = new Sender((m) => sent.push([performance.now(), m]), 30, 6);
          const t0 = performance.now();
          sender.push({op: "add", n: 0}, null);
          let n = 0;
          await new Promise((done) => {
            const timer = setInterval(() => {
              n += 1;
              sender.push({op: "update", n}, "u:1");
              if (n === 240) { clearInterval(timer); done(); }
            }, 1000 / 120);
          });
          sender.push({op: "undo"}, null);
          await new Promise((r) => setTimeout(r, 500));
          return {t0, sent};
        }"""
    )
    times = [t - result["t0"] for t, _ in result["sent"]]
    messages = [m for _, m in result["sent"]]
    assert messages[0] == {"op": "add", "n": 0}
    assert messages[-2] == {"op": "update", "n": 240} and messages[-1] == {"op": "undo"}
    numbers = [m["n"] for m in messages[1:-1]]
    assert numbers == sorted(numbers)
    worst = max(sum(1 for t in times if start <= t < start + 1000) for start in times)
    assert worst <= 30 + 6, worst  # rate × 1 s + burst
    assert len(messages) >= 50, len(messages)  # ~2 s of stroke: not throttled below the rate


# ----------------------------------------------------------------------------------- drawing


async def test_pen_stroke_streams_to_the_clinic_at_the_same_place(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, _ = await open_consultation(live_server, browser)
    # Different window sizes: the clinic's preview is pillarboxed in a wide, short box.
    await clinic.evaluate(
        """() => { const f = document.getElementById("video-frame");
                   f.style.aspectRatio = "3 / 1"; }"""
    )
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    assert c_pic.pillarboxed, c_pic
    await select_tool(surgeon, "pen")
    await expect(surgeon.get_by_test_id("color-green")).to_have_attribute("aria-pressed", "true")

    a, b, c = (0.2, 0.3), (0.45, 0.55), (0.8, 0.5)
    await surgeon.mouse.move(*s_pic.page_xy(*a))
    await surgeon.mouse.down()
    await surgeon.mouse.move(*s_pic.page_xy(*b), steps=8)
    # Still drawing (button held): the clinic already shows the first segment.
    await wait_color(clinic, c_pic, [lerp(a, b, 0.3), lerp(a, b, 0.7)], GREEN)
    await surgeon.mouse.move(*s_pic.page_xy(*c), steps=8)
    await surgeon.mouse.up()

    along = [lerp(a, b, t) for t in (0.1, 0.5, 0.9)] + [lerp(b, c, t) for t in (0.2, 0.5, 0.95)]
    await wait_color(clinic, c_pic, along, GREEN)
    await wait_color(surgeon, s_pic, along, GREEN)
    away = [(0.2, 0.8), (0.8, 0.2), (0.5, 0.3)]
    await assert_clear(clinic, c_pic, away)
    await assert_clear(surgeon, s_pic, away)

    # Numerically: one pen mark, starting and ending where the mouse was pressed and released.
    marks = await wait_marks(clinic, 1)
    (mark,) = marks
    assert mark["tool"] == "pen" and mark["color"] == "#00e676" and mark["fade_s"] is None
    tol = 1.5 / s_pic.width
    assert close_to([mark["points"][0]], [a], tol), mark["points"][0]
    assert close_to([mark["points"][-1]], [c], tol), mark["points"][-1]
    assert len(mark["points"]) >= 3
    assert await surgeon.evaluate(MARKS) == marks

    # Nothing changes, nothing is redrawn (no permanent animation loop).
    renders = (await clinic.evaluate(STATE))["renders"]
    await clinic.wait_for_timeout(600)
    assert (await clinic.evaluate(STATE))["renders"] == renders

    # The clinic window is resized: the mark follows the picture.
    await clinic.evaluate(
        """() => { document.getElementById("video-frame").style.aspectRatio = "4 / 3"; }"""
    )
    c_pic2 = await picture(clinic, "local-preview")
    assert c_pic2.letterboxed, c_pic2
    await wait_color(clinic, c_pic2, along, GREEN)


async def test_arrow_lands_where_dragged_under_letterbox_and_dpr2(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, _ = await open_consultation(live_server, browser)
    # Surgeon: a square-ish box → letterbox. Clinic: a wide box → pillarbox, at DPR 2.
    await surgeon.evaluate(
        """() => { const f = document.getElementById("video-frame");
                   f.style.aspectRatio = "1 / 1"; f.style.maxHeight = "560px"; }"""
    )
    cdp = await clinic.context.new_cdp_session(clinic)
    await cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 2, "mobile": False},
    )
    await clinic.evaluate(
        """() => { document.getElementById("video-frame").style.aspectRatio = "21 / 9"; }"""
    )
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    assert s_pic.letterboxed, s_pic
    assert c_pic.pillarboxed and c_pic.dpr == 2, c_pic
    await clinic.wait_for_function(
        """() => { const c = document.querySelector('[data-testid="annotation-canvas"]');
                   return c.width >= 2 * c.getBoundingClientRect().width - 1; }""",
        timeout=5_000,
    )

    # A drag that starts in the letterbox bar draws nothing (documented in geometry.js).
    await select_tool(surgeon, "arrow")
    bar_x, _ = s_pic.page_xy(0.5, 0)
    await surgeon.mouse.move(bar_x, s_pic.y - 8)
    await surgeon.mouse.down()
    await surgeon.mouse.move(*s_pic.page_xy(0.5, 0.5), steps=5)
    await surgeon.mouse.up()

    tail, head = (0.25, 0.75), (0.7, 0.3)
    await drag(surgeon, s_pic, [tail, head])
    (mark,) = await wait_marks(clinic, 1)
    assert mark["tool"] == "arrow"
    assert close_to(mark["points"], [tail, head], 1.5 / s_pic.width), mark["points"]

    shaft = [lerp(tail, head, t) for t in (0.05, 0.3, 0.6, 0.85)]
    await wait_color(clinic, c_pic, shaft, GREEN)
    await wait_color(surgeon, s_pic, shaft, GREEN)
    # The head: two strokes at ±45° back from the tip, 4 line widths (≥ 2 % of the height) long.
    # Tip direction up-right, so the head's strokes run left and down from the tip.
    for page, pic in ((clinic, c_pic), (surgeon, s_pic)):
        head_len = max(4 * 0.008 * pic.height, 0.02 * pic.height)
        tip_x, tip_y = pic.page_xy(*head)
        left = ((tip_x - 0.7 * head_len - pic.x) / pic.width, (tip_y - pic.y) / pic.height)
        down = ((tip_x - pic.x) / pic.width, (tip_y + 0.7 * head_len - pic.y) / pic.height)
        await wait_color(page, pic, [left, down], GREEN, radius=2)
    await assert_clear(clinic, c_pic, [(0.25, 0.3), (0.7, 0.75)])


async def test_undo_and_clear_on_both_pages(live_server: LiveServer, browser: Browser) -> None:
    _, clinic, surgeon, _ = await open_consultation(live_server, browser)
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    undo = surgeon.get_by_test_id("undo")
    await expect(undo).to_be_disabled()

    await select_tool(surgeon, "pen")
    pen = [(0.1, 0.2), (0.3, 0.25), (0.4, 0.4)]
    await drag(surgeon, s_pic, pen)
    await select_tool(surgeon, "rect")
    await surgeon.get_by_test_id("color-cyan").click()
    await surgeon.get_by_test_id("width-thick").click()
    box = [(0.55, 0.55), (0.85, 0.85)]
    await drag(surgeon, s_pic, box)
    # The clinic draws too (its grant may annotate): a circle, in its own colour.
    await select_tool(clinic, "circle")
    await drag(clinic, c_pic, [(0.1, 0.6), (0.3, 0.9)])
    marks = await wait_marks(clinic, 3)
    assert sorted(m["tool"] for m in marks) == ["circle", "pen", "rect"]
    rect_mark = next(m for m in marks if m["tool"] == "rect")
    assert rect_mark["color"] == "#00e5ff" and rect_mark["width"] == 0.016
    assert close_to(rect_mark["points"], box, 1.5 / s_pic.width), rect_mark["points"]

    pen_pixels = [lerp(pen[0], pen[1], 0.5), lerp(pen[1], pen[2], 0.5)]
    box_pixels = [(0.7, 0.55), (0.85, 0.7), (0.55, 0.7)]
    circle_pixels = [(0.2, 0.6), (0.1, 0.75)]
    for page, pic in ((clinic, c_pic), (surgeon, s_pic)):
        await wait_color(page, pic, pen_pixels, GREEN)
        await wait_color(page, pic, box_pixels, CYAN)
        await wait_color(page, pic, circle_pixels, YELLOW)

    # Undo takes the surgeon's newest mark (the box) away on both pages; the rest stays.
    await expect(undo).to_be_enabled()
    await undo.click()
    for page, pic in ((clinic, c_pic), (surgeon, s_pic)):
        await wait_clear(page, pic, box_pixels)
        await wait_color(page, pic, pen_pixels, GREEN)
        await wait_color(page, pic, circle_pixels, YELLOW)
    assert sorted(m["tool"] for m in await wait_marks(surgeon, 2)) == ["circle", "pen"]

    # The clinic has no "clear all"; the surgeon's clears everyone's marks.
    assert await clinic.get_by_test_id("clear").count() == 0
    await surgeon.get_by_test_id("clear").click()
    for page, pic in ((clinic, c_pic), (surgeon, s_pic)):
        await wait_clear(page, pic, pen_pixels + circle_pixels)
        await wait_marks(page, 0)
    await expect(undo).to_be_disabled()


async def test_freeze_shows_the_same_still_everywhere_with_marks(
    live_server: LiveServer, browser: Browser
) -> None:
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    consultation, clinic, surgeon, surgeon_token = await open_consultation(live_server, browser)
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    await select_tool(surgeon, "rect")
    box = [(0.3, 0.3), (0.6, 0.6)]
    await drag(surgeon, s_pic, box)
    edges = [(0.45, 0.3), (0.6, 0.45)]
    await wait_color(clinic, c_pic, edges, GREEN)

    freeze = surgeon.get_by_test_id("freeze")
    # The frame's size at the click (a loaded box may make the clinic send a smaller picture for
    # a while): the still is the surgeon's frame as it came.
    sizes = {await _frame_size(surgeon)}
    await freeze.click()
    await expect(freeze).to_have_attribute("aria-pressed", "true")
    await expect(freeze).to_contain_text("Resume live")
    # Every page stops at once on its own picture, then shows the surgeon's stored still.
    # Null-safe: a page that just opened (the observer below) has no annotations yet.
    shown = (
        "() => { const a = window.endolink && window.endolink.annotations;"
        " return !!a && a.frozenShown != null && a.frozenSnapshot !== null; }"
    )
    for page in (surgeon, clinic):
        await page.wait_for_function(shown, timeout=8_000)
        await expect(page.get_by_test_id("frozen-frame")).to_be_visible()
        await expect(page.get_by_test_id("frozen-badge")).to_be_visible()
        await expect(page.get_by_test_id("frozen-badge")).to_contain_text("FROZEN")
    s_state = await surgeon.evaluate(STATE)
    c_state = await clinic.evaluate(STATE)
    snapshot_id = s_state["frozenSnapshot"]
    assert snapshot_id and c_state["frozenSnapshot"] == snapshot_id
    sizes.add(await _frame_size(surgeon))
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {surgeon_token}"}
        base = f"{live_server.base_url}/api/consultations/{consultation.id}/snapshots"
        async with http.get(base, headers=headers) as response:
            assert response.status == 200
            listed = (await response.json())["snapshots"]
        assert [s["id"] for s in listed] == [snapshot_id]
        async with http.get(f"{base}/{snapshot_id}.png", headers=headers) as response:
            stored = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
    # The clinic shows exactly the stored still (the surgeon's frame at full resolution), and it
    # does not move while the live video underneath goes on.
    height, width = stored.shape[:2]
    assert (width, height) in sizes, ((width, height), sizes)
    for page in (surgeon, clinic):
        assert tuple(await page.evaluate(STILL_SIZE)) == (width, height)
    grid = [
        [round(width * (i + 0.5) / 8), round(height * (j + 0.5) / 6)]
        for i in range(8)
        for j in range(6)
    ]
    first = await clinic.evaluate(STILL_PIXELS, grid)
    expected = [[int(c) for c in stored[y, x][::-1]] for x, y in grid]
    assert first == expected
    await clinic.wait_for_timeout(300)
    assert await clinic.evaluate(STILL_PIXELS, grid) == first

    # Marks stay on the still, and new ones are drawn on it.
    f_pic = await picture(clinic, "frozen-frame")
    await wait_color(clinic, f_pic, edges, GREEN)
    await select_tool(surgeon, "arrow")
    sf_pic = await picture(surgeon, "frozen-frame")
    arrow = [(0.7, 0.8), (0.85, 0.65)]
    await drag(surgeon, sf_pic, arrow)
    await wait_color(clinic, f_pic, [lerp(*arrow, 0.5)], GREEN)

    # Someone joining now sees the still and the marks (welcome carries both).
    observer = await browser.open(
        live_server.url("surgeon", live_server.token(Role.OBSERVER, consultation.id)), "observer"
    )
    await observer.wait_for_function(shown, timeout=10_000)
    o_pic = await picture(observer, "frozen-frame")
    await wait_color(observer, o_pic, edges + [lerp(*arrow, 0.5)], GREEN)

    # Resume: every page goes back to the live video; the marks stay.
    await freeze.click()
    await expect(freeze).to_have_attribute("aria-pressed", "false")
    for page in (surgeon, clinic, observer):
        await page.wait_for_function(
            "() => !window.endolink.annotations.frozenShown", timeout=5_000
        )
        await expect(page.get_by_test_id("frozen-frame")).to_be_hidden()
        await expect(page.get_by_test_id("frozen-badge")).to_be_hidden()
    await wait_color(clinic, c_pic, edges, GREEN)


async def _frame_size(page) -> tuple[int, int]:
    size = await page.evaluate(
        "() => { const v = document.querySelector('[data-testid=\"remote-video\"]');"
        " return [v.videoWidth, v.videoHeight]; }"
    )
    return size[0], size[1]


async def test_snapshot_is_stored_listed_and_downloadable(
    live_server: LiveServer, browser: Browser
) -> None:
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    consultation, clinic, surgeon, surgeon_token = await open_consultation(live_server, browser)
    s_pic = await picture(surgeon, "remote-video")
    await select_tool(surgeon, "pen")
    await surgeon.get_by_test_id("width-thick").click()
    stroke = [(0.2, 0.5), (0.5, 0.52), (0.8, 0.5)]
    await drag(surgeon, s_pic, stroke)
    await wait_marks(surgeon, 1)

    # The frame's size at the click: a loaded box may make the clinic send a smaller picture for
    # a while (its uplink adaptation), and the snapshot is of the frame as it came.
    sizes = {await _frame_size(surgeon)}
    await surgeon.get_by_test_id("snapshot").click()
    link = surgeon.get_by_test_id("snapshot-link")
    await expect(link).to_be_visible(timeout=10_000)
    sizes.add(await _frame_size(surgeon))
    assert (await link.get_attribute("href")).startswith("blob:")
    items = surgeon.get_by_test_id("snapshot-item")
    await expect(items).to_have_count(1)

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {surgeon_token}"}
        base = f"{live_server.base_url}/api/consultations/{consultation.id}/snapshots"
        async with http.get(base, headers=headers) as response:
            listed = (await response.json())["snapshots"]
        assert len(listed) == 1
        async with http.get(f"{live_server.base_url}{listed[0]['url']}", headers=headers) as r:
            assert r.status == 200 and r.content_type == "image/png"
            stored = await r.read()

    async with surgeon.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    downloaded = Path(await download.path()).read_bytes()
    assert downloaded == stored and stored.startswith(PNG_SIGNATURE)
    assert download.suggested_filename.endswith(".png")

    # The PNG is the full frame with the mark burned in at the drawn coordinates.
    image = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    assert (width, height) in sizes, ((width, height), sizes)
    for nx, ny in [lerp(stroke[0], stroke[1], 0.5), lerp(stroke[1], stroke[2], 0.5)]:
        b, g, r = (int(v) for v in image[round(ny * height), round(nx * width)])
        assert abs(r - GREEN[0]) + abs(g - GREEN[1]) + abs(b - GREEN[2]) <= 12, (r, g, b)

    # Another surgeon page lists it from the API.
    other = await browser.open(live_server.url("surgeon", surgeon_token), "surgeon-2")
    await expect(other.get_by_test_id("snapshot-item")).to_have_count(1, timeout=5_000)


async def test_observer_sees_marks_but_has_no_tools(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation, clinic, surgeon, _ = await open_consultation(live_server, browser)
    observer = await browser.open(
        live_server.url("surgeon", live_server.token(Role.OBSERVER, consultation.id)), "observer"
    )
    await observer.wait_for_function(VIDEO_HAS_FRAMES, arg="remote-video", timeout=15_000)
    await wait_ready(observer)
    await expect(observer.get_by_test_id("annotation-canvas")).to_be_attached()
    for testid in [f"tool-{t}" for t in TOOLS] + [
        "freeze",
        "snapshot",
        "clear",
        "undo",
        "annotation-toolbar",
        "color-green",
        "width-thin",
    ]:
        assert await observer.get_by_test_id(testid).count() == 0, testid
    # The surgeon's page has them all.
    for testid in [f"tool-{t}" for t in TOOLS] + ["freeze", "snapshot", "clear", "undo"]:
        await expect(surgeon.get_by_test_id(testid)).to_be_visible()

    s_pic = await picture(surgeon, "remote-video")
    o_pic = await picture(observer, "remote-video")
    await select_tool(surgeon, "circle")
    await drag(surgeon, s_pic, [(0.4, 0.4), (0.6, 0.7)])
    await wait_color(observer, o_pic, [(0.5, 0.4), (0.6, 0.55)], GREEN)

    # Dragging on the observer's video draws nothing anywhere.
    await drag(observer, o_pic, [(0.1, 0.1), (0.3, 0.3)])
    await observer.wait_for_timeout(500)
    assert len(await observer.evaluate(MARKS)) == 1
    assert len(await surgeon.evaluate(MARKS)) == 1
    state = await observer.evaluate(STATE)
    assert state["canDraw"] is False and state["tool"] is None


def pointer_radius(pic: Picture) -> float:
    """The laser ring's radius (CSS px): 3 % of the picture height, at least 10 px."""
    return max(10.0, 0.03 * pic.height)


async def test_laser_pointer_appears_on_the_other_page_and_fades(
    live_server: LiveServer, browser: Browser
) -> None:
    _, clinic, surgeon, s_pic, c_pic = await surgeon_with_tool(live_server, browser, "pointer")
    await surgeon.mouse.move(*s_pic.page_xy(0.3, 0.3))
    await surgeon.mouse.move(*s_pic.page_xy(0.6, 0.4), steps=10)
    # A ring in the author's colour (the surgeon's current one) around a white core.
    ring = pointer_radius(c_pic) + 3
    seen = await wait_color(clinic, c_pic, [(0.6, 0.4)], GREEN, radius=ring, timeout=3_000)
    await wait_color(clinic, c_pic, [(0.6, 0.4)], (255, 255, 255), radius=2, timeout=1_000)
    # Not stored, and it fades 1.5 s after the surgeon stops moving.
    assert (await clinic.evaluate(STATE))["pointers"] == [
        pytest.approx({"x": 0.6, "y": 0.4}, abs=2 / s_pic.width)
    ]
    assert await clinic.evaluate(MARKS) == []
    gone_after = await wait_clear(clinic, c_pic, [(0.6, 0.4)], radius=ring, timeout=4_000) - seen
    assert 1_300 < gone_after < 3_000, gone_after

    # The clinic answers with its own pointer ("this one?"), seen on the surgeon's page.
    await surgeon.mouse.move(10, 10)
    await select_tool(clinic, "pointer")
    await clinic.mouse.move(*c_pic.page_xy(0.2, 0.7))
    await clinic.mouse.move(*c_pic.page_xy(0.25, 0.65), steps=6)
    ring = pointer_radius(s_pic) + 3
    await wait_color(surgeon, s_pic, [(0.25, 0.65)], YELLOW, radius=ring, timeout=3_000)
    await wait_clear(surgeon, s_pic, [(0.25, 0.65)], radius=ring, timeout=4_000)
    assert await surgeon.evaluate(MARKS) == []


async def test_marks_with_a_fade_time_disappear_everywhere(
    live_server: LiveServer, browser: Browser
) -> None:
    consultation, clinic, surgeon, _ = await open_consultation(live_server, browser)
    s_pic = await picture(surgeon, "remote-video")
    c_pic = await picture(clinic, "local-preview")
    # The clinic page's own record: when each mark was last updated, what each frame drew.
    await clinic.evaluate(
        """() => {
          const canvas = document.querySelector('[data-testid="annotation-canvas"]');
          const log = {updated: {}, frames: []};
          window.__fade = log;
          canvas.addEventListener("endolink:applied", (e) => {
            if (e.detail.id) log.updated[e.detail.id] = e.detail.at;
          });
          canvas.addEventListener("endolink:rendered", (e) => {
            log.frames.push([e.detail.at, e.detail.marks.map((m) => m.id)]);
          });
        }"""
    )
    await surgeon.get_by_test_id("fade").select_option("5")
    await select_tool(surgeon, "pen")
    fading = [(0.2, 0.2), (0.5, 0.25)]
    await drag(surgeon, s_pic, fading)
    await surgeon.get_by_test_id("fade").select_option("")
    await select_tool(surgeon, "rect")
    kept = [(0.3, 0.5), (0.6, 0.8)]
    await drag(surgeon, s_pic, kept)
    marks = await wait_marks(clinic, 2)
    assert sorted((m["tool"], m["fade_s"]) for m in marks) == [("pen", 5), ("rect", None)]
    pen_id = next(m["id"] for m in marks if m["tool"] == "pen")
    middle = [lerp(*fading, 0.5)]
    await wait_color(clinic, c_pic, middle, GREEN)
    # Gone about 5 s after its last update, on both pages; the kept mark stays.
    for page, pic in ((clinic, c_pic), (surgeon, s_pic)):
        await wait_clear(page, pic, middle, timeout=9_000)
        await wait_color(page, pic, [(0.45, 0.5)], GREEN)
    log = await clinic.evaluate("() => window.__fade")
    updated = log["updated"][pen_id]
    vanished = next(at for at, ids in log["frames"] if at > updated and pen_id not in ids)
    last_full = max(at for at, ids in log["frames"] if pen_id in ids)
    assert 4.9 < (vanished - updated) / 1000 < 5.6, (updated, vanished)
    assert (last_full - updated) / 1000 > 4.0  # drawn (fading during its last second) until then
    # The server forgot it too: a page opened now gets only the kept mark.
    observer = await browser.open(
        live_server.url("surgeon", live_server.token(Role.OBSERVER, consultation.id)), "observer"
    )
    await wait_ready(observer)
    assert [m["tool"] for m in await wait_marks(observer, 1)] == ["rect"]
