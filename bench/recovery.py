"""How fast a live consultation comes back after the server was down, in real Chromium pages.

A real server process (``endolink serve``, its own data directory) with a clinic page publishing
Chromium's fake camera and a surgeon page watching. Each run SIGKILLs the server, keeps it down for
the outage, starts it again on the same port and data directory, and measures from the moment
its port accepts connections until the surgeon's picture moves again (new frames rendered:
requestVideoFrameCallback). It also measures how long after the kill both pages said so honestly
(the clinic: the surgeon cannot see it; the surgeon: the server connection is lost).

    python -m bench.recovery [--outages 5 60] [--runs 3] [--port 8098] [--baseline REV]

Prints one row per run and, per outage, the median and the maximum. With ``--baseline`` the same
runs follow with the server and pages of git revision REV (``git archive`` into a temporary
directory; only the picture is timed, older pages have no banner to wait for). Wall-clock times:
run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Page, async_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.serverproc import ServerProcess, endolink

FRAMES_JS = "() => (window.endolink && window.endolink.framesRendered) || 0"
BANNER = '[data-testid="notices"] [data-key="link"]'
CLINIC_LOST_TEXT = "surgeon cannot see your video"
SURGEON_LOST_TEXT = "Connection lost"
MOVING_FRAMES = 3
"New frames rendered that count as a moving picture (not one late frame of the old stream)."
POLL_S = 0.02


@dataclass
class Recovery:
    outage_s: float
    honest_clinic_s: float
    "From the kill until the clinic page said the surgeon cannot see it."
    honest_surgeon_s: float
    "From the kill until the surgeon page said the server connection is lost."
    moving_s: float
    "From the restarted server accepting connections until the surgeon's picture moved."


async def banner_text(page: Page) -> str:
    return str(await page.evaluate(f"() => document.querySelector('{BANNER}')?.textContent || ''"))


async def wait_for_banner(page: Page, text: str, timeout_s: float) -> float:
    """Monotonic time the page's connection banner first contained ``text``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in await banner_text(page):
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"banner never said {text!r} (last: {await banner_text(page)!r})")


async def wait_moving(page: Page, timeout_s: float) -> float:
    """Monotonic time the surgeon's video rendered ``MOVING_FRAMES`` new frames."""
    start = int(await page.evaluate(FRAMES_JS))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(await page.evaluate(FRAMES_JS)) >= start + MOVING_FRAMES:
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"the surgeon's picture did not move within {timeout_s} s")


def create_consultation(data_dir: Path, port: int) -> dict[str, str]:
    """A consultation with consent on record; its invite links (clinic, surgeon, observer)."""
    created = endolink(data_dir, port, "consult", "create", "--consent-by", "b", "--json")
    answer = json.loads(created)
    return dict(answer["links"])


async def start_stream(clinic: Page) -> None:
    start = clinic.get_by_test_id("start-stream")
    await start.wait_for(state="visible")
    await clinic.wait_for_function(
        "() => !document.querySelector('[data-testid=start-stream]').disabled", timeout=15_000
    )
    await start.click()


async def outage(
    server: ServerProcess, clinic: Page, surgeon: Page, down_s: float, banners: bool = True
) -> Recovery:
    """Kill, stay down ``down_s``, restart; the timings of one outage (``banners``: also how
    soon each page said so; NaN when not measured)."""
    await wait_moving(surgeon, 15)
    killed = time.monotonic()
    server.kill()
    clinic_at = surgeon_at = math.nan
    if banners:
        clinic_said = wait_for_banner(clinic, CLINIC_LOST_TEXT, 10)
        surgeon_said = wait_for_banner(surgeon, SURGEON_LOST_TEXT, 10)
        clinic_at, surgeon_at = await asyncio.gather(clinic_said, surgeon_said)
    await asyncio.sleep(max(0.0, down_s - (time.monotonic() - killed)))
    server.start()
    answered = await server.wait_accepting()
    moving = await wait_moving(surgeon, 60)
    return Recovery(down_s, clinic_at - killed, surgeon_at - killed, moving - answered)


@asynccontextmanager
async def consultation_pages(links: dict[str, str]) -> AsyncIterator[tuple[Page, Page]]:
    """A clinic page streaming and a surgeon page watching, each in its own browser context."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            clinic = await (await browser.new_context()).new_page()
            surgeon = await (await browser.new_context()).new_page()
            await clinic.goto(links["clinic"])
            await surgeon.goto(links["surgeon"])
            await start_stream(clinic)
            yield clinic, surgeon
        finally:
            await browser.close()


def checkout(revision: str, into: Path) -> Path:
    """The tree of git ``revision`` of this repository, unpacked into ``into``."""
    repo = Path(__file__).resolve().parent.parent
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", revision], check=True, capture_output=True, timeout=60
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


async def run(
    outages: list[float], runs: int, port: int, label: str, source: Path | None = None
) -> list[Recovery]:
    """All runs against one server (this revision's, or the one in ``source``)."""
    work = Path(tempfile.mkdtemp(prefix="endolink-recovery-"))
    data = work / "data"
    links = create_consultation(data, port)
    server = ServerProcess(data, port, work / "server.log", source)
    server.start()
    await server.wait_accepting()
    results: list[Recovery] = []
    try:
        async with consultation_pages(links) as (clinic, surgeon):
            print(f"\n{label}")
            print(f"{'outage':>7} {'run':>4} {'clinic told':>12} {'surgeon told':>13}  moving")
            for down_s in outages:
                for number in range(1, runs + 1):
                    result = await outage(server, clinic, surgeon, down_s, source is None)
                    results.append(result)
                    print(
                        f"{down_s:>6g}s {number:>4} {seconds(result.honest_clinic_s):>12} "
                        f"{seconds(result.honest_surgeon_s):>13} {seconds(result.moving_s):>8}",
                        flush=True,
                    )
                    await asyncio.sleep(3.0)  # "Reconnected" shows and goes; the link settles
    finally:
        server.stop()
    summarise(results)
    return results


def seconds(value: float) -> str:
    """ "1.23s", or "–" for what was not measured."""
    return "–" if math.isnan(value) else f"{value:.2f}s"


def summarise(results: list[Recovery]) -> None:
    print("surgeon's picture moving again after the server answered (s):")
    for down_s in sorted({r.outage_s for r in results}):
        times = [r.moving_s for r in results if r.outage_s == down_s]
        told = [max(r.honest_clinic_s, r.honest_surgeon_s) for r in results if r.outage_s == down_s]
        print(
            f"  outage {down_s:g} s: median {statistics.median(times):.2f}, max {max(times):.2f} "
            f"(n={len(times)}); both pages told within {seconds(max(told))} of the kill"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=float, nargs="+", default=[5.0, 60.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--baseline", metavar="REV", help="also run git revision REV (e.g. main)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.outages, args.runs, args.port, "this tree"))
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="endolink-baseline-") as tmp:
            source = checkout(args.baseline, Path(tmp) / "tree")
            asyncio.run(
                run(args.outages, args.runs, args.port, f"baseline: {args.baseline}", source)
            )


if __name__ == "__main__":
    main()
