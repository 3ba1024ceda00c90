"""Chromium clinic → relay → Chromium surgeon: how fast the picture reaches diagnostic quality.

A real server process, two real Chromium pages (Debian chromium via Playwright), the clinic's
fake camera fed with the 720p30 test pattern (y4m). Every second it samples the clinic's outbound
and the surgeon's inbound video stats and prints a table: resolution, fps, bitrate, RTT. It
answers "how long until the surgeon sees 720p at ≥ 2 Mbit/s" and "time to first frame".

    python -m bench.browser_publish [--seconds 30] [--port 8097]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright, async_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.common import NAMED_LINKS
from bench.serverproc import endolink
from client.testpattern import TestPatternTrack

STATS_JS = """async ([getter, type]) => {
  const pc = window.endolink && window.endolink[getter];
  if (!pc) return null;
  const report = await pc.getStats();
  let rtp = null, pair = null;
  report.forEach((s) => {
    if (s.type === type && s.kind === "video") rtp = s;
    if (s.type === "candidate-pair" && s.nominated) pair = s;
  });
  if (!rtp) return null;
  return {bytes: type === "outbound-rtp" ? rtp.bytesSent : rtp.bytesReceived,
          width: rtp.frameWidth || 0, height: rtp.frameHeight || 0,
          fps: rtp.framesPerSecond || 0, t: rtp.timestamp,
          rtt: pair && pair.currentRoundTripTime ? pair.currentRoundTripTime * 1000 : null,
          limitation: rtp.qualityLimitationReason || null};
}"""


def write_y4m(path: Path, seconds: int = 4) -> None:
    """The test pattern as a y4m file Chromium's fake camera can loop."""
    pattern = TestPatternTrack()
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W1280 H720 F30:1 Ip A1:1 C420jpeg\n")
        for i in range(seconds * 30):
            frame = pattern.frame(i, 0)
            out.write(b"FRAME\n")
            for plane in frame.planes:
                out.write(bytes(plane))


async def with_camera(pw: Playwright, y4m: Path) -> Browser:
    """Debian's Chromium whose fake camera shows ``y4m`` (looped)."""
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={y4m}"],
    )


async def sample(page: Page, getter: str, kind: str, last: dict[str, float]) -> dict | None:
    stats = await page.evaluate(STATS_JS, [getter, kind])
    if stats is None:
        return None
    previous = last.get(getter)
    bitrate = None
    if previous is not None and stats["t"] > previous[0]:
        bitrate = (
            (stats["bytes"] - previous[1]) * 8 / (stats["t"] - previous[0])
        )  # kbit/s (t in ms)
    last[getter] = (stats["t"], stats["bytes"])
    return {**stats, "kbps": bitrate}


async def run(seconds: int, port: int) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="endolink-bench-"))
    y4m = work / "scope.y4m"
    write_y4m(y4m)
    data = work / "data"
    created = json.loads(
        endolink(data, port, "consult", "create", "--consent-by", "b", "--json", *NAMED_LINKS)
    )
    env = {**os.environ, "ENDOLINK_ICE_HOST_ADDRESSES": "127.0.0.1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "signaling", "serve", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[dict] = []
    try:
        await asyncio.sleep(2.0)
        base = f"http://127.0.0.1:{port}"
        links = created["links"]
        async with async_playwright() as pw:
            browser = await with_camera(pw, y4m)
            try:
                clinic = await browser.new_page()
                surgeon = await browser.new_page()
                await clinic.goto(links["clinic"])
                await surgeon.goto(links["surgeon"])
                await clinic.wait_for_selector("[data-testid=start-stream]:not([disabled])")
                started = time.monotonic()
                await clinic.click("[data-testid=start-stream]")
                await surgeon.wait_for_function(
                    "() => document.querySelector('[data-testid=remote-video]').videoWidth > 0",
                    timeout=20000,
                )
                first_frame = time.monotonic() - started
                print(f"{base}: first frame on the surgeon page {first_frame:.2f} s after Start")
                last: dict[str, float] = {}
                print(f"{'t':>4} {'clinic out':>22} {'surgeon in':>22} {'rtt':>6}  limitation")
                for second in range(seconds):
                    await asyncio.sleep(1.0)
                    out = await sample(clinic, "publishPc", "outbound-rtp", last)
                    inn = await sample(surgeon, "playerPc", "inbound-rtp", last)
                    row = {"t": second + 1, "out": out, "in": inn}
                    rows.append(row)
                    print(
                        f"{second + 1:>4} {fmt(out):>22} {fmt(inn):>22} "
                        f"{(out or {}).get('rtt') or 0:>5.0f}  {(out or {}).get('limitation')}"
                    )
            finally:
                await browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    return rows


def fmt(stats: dict | None) -> str:
    if not stats:
        return "-"
    kbps = stats["kbps"] or 0
    return f"{stats['width']}x{stats['height']} {stats['fps']:>2.0f}fps {kbps:>5.0f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.port))


if __name__ == "__main__":
    main()
