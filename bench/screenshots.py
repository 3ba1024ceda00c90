"""``python -m bench.screenshots --out docs/screenshots``: the live pages and the replay page in
Korean and Mongolian at desktop, tablet and phone sizes, as PNGs named ``page-lang-WxH.png``.

A real ``endolink serve`` (its own data directory, stopped by pid) and Debian's Chromium with its
fake camera: the clinic streams, the surgeon watches with a mark on the picture, and the replay
page has the recording of that stream open. Each size gets fresh browser contexts (the phone one
with touch); each language is chosen with the page's own picker, so the shots also show that
switching re-writes everything in place. Only the viewport is captured, re-compressed, to keep
the files small enough for the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.common import free_port
from bench.serverproc import ServerProcess, endolink

LANGUAGES = ("ko", "mn")
SIZES = ((1440, 900, False), (768, 1024, True), (390, 844, True))  # width, height, touch
TITLE = "비강 내시경 · Хамрын дуран"
NAMES = ("--clinic-name", "Бат-Эрдэнэ", "--surgeon-name", "김민준")
"Who the pictures show in the room: a Mongolian doctor, a Korean surgeon."
PAGE_TIMEOUT_MS = 20_000


def create_consultation(data_dir: Path, port: int) -> dict[str, str]:
    """A consultation with consent on record; its short links (clinic, surgeon, replay)."""
    created = endolink(
        data_dir,
        port,
        "consult",
        "create",
        "--title",
        TITLE,
        "--consent-by",
        "Dr",
        *NAMES,
        "--json",
    )
    return dict(json.loads(created)["links"])


async def new_page(browser: Browser, size: tuple[int, int, bool]) -> tuple[BrowserContext, Page]:
    width, height, touch = size
    context = await browser.new_context(
        viewport={"width": width, "height": height}, has_touch=touch, is_mobile=touch
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    return context, await context.new_page()


async def choose(page: Page, language: str) -> None:
    """Picks `language` with the page's picker; waits until the page is written in it."""
    await page.get_by_test_id("language-picker").select_option(language)
    await page.wait_for_function("(code) => document.documentElement.lang === code", arg=language)
    await page.wait_for_timeout(300)  # one stats tick: every figure re-written


async def shoot(page: Page, out: Path, name: str) -> Path:
    """The viewport as a PNG, re-encoded at the highest zlib level."""
    png = await page.screenshot(full_page=False)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    path = out / f"{name}.png"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


async def live_pages(browser: Browser, links: dict[str, str], size: tuple[int, int, bool]):
    """A streaming clinic page and a surgeon page watching it (with one mark drawn)."""
    clinic_context, clinic = await new_page(browser, size)
    surgeon_context, surgeon = await new_page(browser, size)
    await clinic.goto(links["clinic"])
    await surgeon.goto(links["surgeon"])
    start = clinic.get_by_test_id("start-stream")
    await clinic.wait_for_function(
        "() => !document.querySelector('[data-testid=start-stream]').disabled"
    )
    await start.click()
    await surgeon.wait_for_function(
        "() => document.querySelector('[data-testid=publisher-state]').dataset.state === 'live'"
        " && document.querySelector('[data-testid=remote-overlay]').hidden"
    )
    await draw_arrow(surgeon)
    await clinic.wait_for_timeout(3000)  # the link-quality figures; seconds of recording
    return (clinic_context, clinic), (surgeon_context, surgeon)


async def draw_arrow(surgeon: Page) -> None:
    """An arrow across the middle of the picture, as a surgeon would point at something (on a
    small screen the tools fold behind a Tools button: opened to pick, folded again to draw)."""
    toggle = surgeon.get_by_test_id("tools-toggle")
    folded = await toggle.is_visible()
    if folded:
        await toggle.click()
    await surgeon.get_by_test_id("tool-arrow").click()
    if folded:
        await toggle.click()
    box = await surgeon.get_by_test_id("remote-video").bounding_box()
    if not box:
        return
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    await surgeon.mouse.move(x + w * 0.3, y + h * 0.7)
    await surgeon.mouse.down()
    await surgeon.mouse.move(x + w * 0.55, y + h * 0.45, steps=8)
    await surgeon.mouse.up()


async def replay_page(browser: Browser, link: str, size: tuple[int, int, bool]):
    """The replay page with the newest recording open, a second into it."""
    context, page = await new_page(browser, size)
    await page.goto(link)
    await page.get_by_test_id("recording-item").first.get_by_role("button").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=replay-video]').readyState >= 2"
    )
    await page.evaluate(
        "() => { document.querySelector('[data-testid=replay-video]').currentTime = 1; }"
    )
    await page.wait_for_timeout(500)
    return context, page


async def run(out: Path, port: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="endolink-screenshots-"))
    data = work / "data"
    links = create_consultation(data, port)
    server = ServerProcess(data, port, work / "server.log")
    server.start()
    saved: list[Path] = []
    try:
        await server.wait_accepting()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                for size in SIZES:
                    saved += await shoot_size(browser, links, size, out)
            finally:
                await browser.close()
    finally:
        server.stop()
    return saved


async def shoot_size(
    browser: Browser, links: dict[str, str], size: tuple[int, int, bool], out: Path
) -> list[Path]:
    """Every page and language at one size: the live pages while streaming, then the replay
    page with the recording that stream made (complete, so its files verify)."""
    tag = f"{size[0]}x{size[1]}"
    saved = []
    (clinic_context, clinic), (surgeon_context, surgeon) = await live_pages(browser, links, size)
    try:
        for language in LANGUAGES:
            for name, page in (("clinic", clinic), ("surgeon", surgeon)):
                await choose(page, language)
                saved.append(await shoot(page, out, f"{name}-{language}-{tag}"))
        await clinic.get_by_test_id("stop-stream").click()
        await surgeon.wait_for_function(
            "() => document.querySelector('[data-testid=publisher-state]').dataset.state"
            " === 'offline'"
        )
    finally:
        await clinic_context.close()
        await surgeon_context.close()
    replay_context, replay = await replay_page(browser, links["replay"], size)
    try:
        for language in LANGUAGES:
            await choose(replay, language)
            saved.append(await shoot(replay, out, f"replay-{language}-{tag}"))
    finally:
        await replay_context.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    args = parser.parse_args()
    started = time.monotonic()
    saved = asyncio.run(run(args.out, args.port or free_port()))
    total_kb = sum(p.stat().st_size for p in saved) / 1024
    took_s = time.monotonic() - started
    print(f"{len(saved)} screenshots in {args.out} ({total_kb:.0f} KiB, {took_s:.0f} s)")


if __name__ == "__main__":
    main()
