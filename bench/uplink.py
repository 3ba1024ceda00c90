"""How the clinic's picture follows a capped uplink, down and back up: before against after.

    python -m bench.uplink [--publishers browser aiortc] [--variants before chrome after]
                           [--scale 1.0] [--json out.json]

A real ``endolink serve`` (own data directory, 127.0.0.1) per run; the publisher's every packet
crosses ``bench.udpproxy.ImpairmentProxy`` whose uplink cap changes while it runs: 20 s
uncapped, 30 s at 1.2 Mbit/s, 30 s at 600 kbit/s, 30 s uncapped (``--scale`` stretches or
shrinks the phases). Publishers:

* ``browser``: Debian Chromium's clinic page, its fake camera showing the 720p30 test pattern;
  the WHIP offer and answer are rewritten on the way (Playwright routes) so media takes the proxy.
* ``aiortc``: ``endolink publish testpattern``'s publishing loop (client/reconnect.py) in this
  process, its WHIP client pointing media at the proxy.

Variants (one server each, same run): ``before`` — today's settings (browser: resolution held,
hints ``2000,600,4000``; aiortc: aiortc's own encoder and clamp); ``chrome`` (browser only) —
Chrome's own scaler alone (``maintain-framerate``, nothing else) with the new hints; ``after`` —
the picture follows the estimate (web/js/uplink.js, client/uplink.py) with the new hints.

An uncapped aiortc viewer measures each second: received kbit/s, frame height, frames; the
publisher's estimate (browser: ``availableOutgoingBitrate``; aiortc: the REMB-driven encoder
target). Per phase: time to settle (from the change until rate and height stay within 25 % /
equal to the phase's last 10 s), steady rate, height and fps (medians of the last 10 s), and the
longest gap between frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender
from playwright.async_api import Page, Route, async_playwright

import client.reconnect
from bench.browser_publish import with_camera, write_y4m
from bench.common import NAMED_LINKS, free_port, host_candidates
from bench.serverproc import endolink
from bench.shaper import RateLimit
from bench.udpproxy import ImpairmentProxy
from client.reconnect import LiveSource, keep_publishing
from client.testpattern import TestPatternTrack
from client.whip import VIDEO_BACKLOG
from signaling.auth.grants import Grant, Role
from signaling.auth.secret import token_issuer
from signaling.settings import Settings
from tests.peers import ImpairedWhipClient, new_pc, viewer
from tests.processes import Server

PHASES: tuple[tuple[str, float, float | None], ...] = (
    ("uncapped", 20, None),
    ("1.2 Mbit/s", 30, 1_200_000),
    ("600 kbit/s", 30, 600_000),
    ("uncapped again", 30, None),
)
BEFORE_HINTS = "2000,600,4000"
"Today's ``ENDOLINK_PUBLISHER_KBPS`` (before this change)."
STEADY_S = 10
BAND = 0.25
_CANDIDATE_LINE = "a=candidate:"

# Appended to web/js/uplink.js for the browser's "before" and "chrome" variants: the follower
# still reports, but applies only what that variant sets.
OVERRIDE_JS = """
UplinkFollower.prototype.apply = async function (level) {
  const params = this.sender.getParameters();
  if (!params.encodings?.length) return;
  Object.assign(params.encodings[0], { scaleResolutionDownBy: 1, maxBitrate: MAX_BITRATE });
  params.degradationPreference = "%s";
  await this.sender.setParameters(params);
  this.applied = level;
};
"""
PREFERENCE = {"before": "maintain-resolution", "chrome": "maintain-framerate"}


@dataclass
class Second:
    t: float
    kbps: float
    height: int
    frames: int
    estimate_kbps: float | None


@dataclass
class Run:
    publisher: str
    variant: str
    seconds: list[Second] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    "(arrival time since start, gap before it in ms) of every frame."


def only_candidate(sdp: str, keep: tuple[str, int]) -> str:
    """``sdp`` with every candidate but ``keep``'s removed (so media cannot bypass the proxy)."""
    lines = sdp.split("\r\n")
    wanted = f" {keep[0]} {keep[1]} typ host"
    return "\r\n".join(
        line for line in lines if not line.startswith(_CANDIDATE_LINE) or wanted in line
    )


async def through_proxy(page: Page, proxy: ImpairmentProxy) -> None:
    """The clinic page's WHIP exchange rewritten so its media crosses ``proxy``."""

    async def handle(route: Route) -> None:
        request = route.request
        if request.method != "POST" or "/whip/" not in request.url:
            await route.continue_()
            return
        offer = request.post_data or ""
        hosts = host_candidates(offer)
        keep = next((h for h in hosts if h[0] == "127.0.0.1"), hosts[0])
        response = await route.fetch(post_data=proxy.offer(only_candidate(offer, keep)))
        answer = await response.text()
        if response.status != 201:
            await route.fulfill(response=response, body=answer)
            return
        server = host_candidates(answer)[0]
        await route.fulfill(response=response, body=proxy.answer(only_candidate(answer, server)))

    await page.route("**/whip/**", handle)


async def override_uplink(page: Page, variant: str) -> None:
    if variant not in PREFERENCE:
        return

    async def handle(route: Route) -> None:
        response = await route.fetch()
        body = await response.text() + OVERRIDE_JS % PREFERENCE[variant]
        await route.fulfill(response=response, body=body)

    await page.route("**/js/uplink.js*", handle)


@contextlib.asynccontextmanager
async def browser_publisher(
    link: str, proxy: ImpairmentProxy, variant: str, work: Path
) -> AsyncIterator[Callable[[], Any]]:
    y4m = work / "scope.y4m"
    write_y4m(y4m)
    async with async_playwright() as pw:
        browser = await with_camera(pw, y4m)
        try:
            page = await browser.new_page()
            await through_proxy(page, proxy)
            await override_uplink(page, variant)
            await page.goto(link)
            start = page.get_by_test_id("start-stream")
            await start.wait_for(state="visible", timeout=30_000)
            await page.wait_for_function(
                "() => !document.querySelector('[data-testid=start-stream]').disabled",
                timeout=30_000,
            )
            await start.click()

            async def estimate() -> float | None:
                debug = await page.evaluate("() => window.endolink.uplink")
                return None if not debug else debug.get("kbps")

            yield estimate
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def aiortc_publisher(
    whip: str, token: str, proxy: ImpairmentProxy, variant: str
) -> AsyncIterator[Callable[[], Any]]:
    senders: list[RTCRtpSender] = []
    follow = client.reconnect.follow_the_link

    def recorded(sender: RTCRtpSender, codec: Any, say: Callable[[str], None]) -> Any:
        senders.append(sender)
        return follow(sender, codec, say) if variant == "after" else None

    client.reconnect.follow_the_link = recorded  # type: ignore[assignment]
    source = LiveSource(TestPatternTrack(), VIDEO_BACKLOG)
    stop = asyncio.Event()

    async def pc_for(_: object) -> RTCPeerConnection:
        return new_pc()

    task = asyncio.ensure_future(
        keep_publishing(
            [source], pc_for, lambda: ImpairedWhipClient(whip, token, proxy), stop, "publishing"
        )
    )

    async def estimate() -> float | None:
        encoder = getattr(senders[-1], "_RTCRtpSender__encoder", None) if senders else None
        return None if encoder is None else encoder.target_bitrate / 1000

    try:
        yield estimate
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 5)
        source.close()
        client.reconnect.follow_the_link = follow


async def one_run(publisher: str, variant: str, scale: float, work: Path) -> Run:
    data, log = work / "data", work / "server.log"
    port = free_port()
    created = json.loads(
        endolink(data, port, "consult", "create", "--consent-by", "b", "--json", *NAMED_LINKS)
    )
    cid = created["id"]
    issuer = token_issuer(Settings(data_dir=data))

    def token(role: Role) -> str:
        return issuer.issue(Grant.for_role(role, cid, f"bench-{role}", 3600))

    hints = {"ENDOLINK_PUBLISHER_KBPS": BEFORE_HINTS} if variant == "before" else {}
    server = Server(data, log, port=port, **hints)
    proxy = ImpairmentProxy()
    run = Run(publisher, variant)
    try:
        await asyncio.to_thread(server.wait_ready)
        await proxy.start()
        whip = f"{server.url}/whip/{cid}"
        whep = f"{server.url}/whep/{cid}?quality=original"  # what the clinic sends, not a rung
        link = created["links"]["clinic"].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        publishing = (
            browser_publisher(link, proxy, variant, work)
            if publisher == "browser"
            else aiortc_publisher(whip, token(Role.CLINIC), proxy, variant)
        )
        async with publishing as estimate:
            await asyncio.sleep(5)  # the feed goes live
            async with viewer(whep, token(Role.OBSERVER), ("video",)) as (pc, _, received):
                await measure(run, pc, received, estimate, proxy, scale)
    finally:
        proxy.close()
        server.stop()
    return run


async def measure(
    run: Run,
    pc: RTCPeerConnection,
    received: Any,
    estimate: Callable[[], Any],
    proxy: ImpairmentProxy,
    scale: float,
) -> None:
    start = time.monotonic()
    frames: list[tuple[float, int]] = []
    received.on_video.append(lambda f: frames.append((time.monotonic() - start, f.height)))
    last_bytes, last_t, seen = _bytes(proxy), time.monotonic(), 0
    for _, duration, cap in PHASES:
        proxy.cap(up=None if cap is None else RateLimit(cap))
        phase_end = time.monotonic() + duration * scale
        while time.monotonic() < phase_end:
            await asyncio.sleep(1.0)
            now, got = time.monotonic(), _bytes(proxy)
            kbps = (got - last_bytes) * 8 / (now - last_t) / 1000
            last_bytes, last_t = got, now
            new = frames[seen:]
            seen = len(frames)
            height = new[-1][1] if new else (run.seconds[-1].height if run.seconds else 0)
            est = await estimate()
            run.seconds.append(Second(round(now - start, 1), kbps, height, len(new), est))
    times = [t for t, _ in frames]
    run.gaps = [(b, (b - a) * 1000) for a, b in zip(times, times[1:], strict=False)]


def _bytes(proxy: ImpairmentProxy) -> int:
    """Bytes the capped link delivered to the relay (all the publisher's packets: the viewer
    gets the same video, forwarded)."""
    up: dict[str, Any] = proxy.stats()["up"]  # type: ignore[assignment]
    return int(up["shaper"]["sent_bytes"])


def phase_rows(run: Run, scale: float) -> list[dict[str, Any]]:
    rows, begin = [], 0.0
    for name, duration, _ in PHASES:
        end = begin + duration * scale
        inside = [s for s in run.seconds if begin < s.t <= end + 0.5]
        tail = inside[-STEADY_S:]
        rate = statistics.median(s.kbps for s in tail) if tail else 0.0
        height = statistics.mode(s.height for s in tail) if tail else 0
        unsettled = [
            s.t for s in inside if abs(s.kbps - rate) > BAND * max(rate, 1) or s.height != height
        ]
        estimates = [s.estimate_kbps for s in tail if s.estimate_kbps is not None]
        gaps = [gap for at, gap in run.gaps if begin < at <= end]
        rows.append(
            {
                "phase": name,
                "settle_s": round(max(unsettled) - begin, 0) if unsettled else 0.0,
                "kbps": round(rate),
                "estimate_kbps": round(statistics.median(estimates)) if estimates else None,
                "height": height,
                "fps": statistics.median(s.frames for s in tail) if tail else 0,
                "freeze_ms": round(max(gaps, default=0)),
            }
        )
        begin = end
    return rows


def table(results: list[tuple[Run, list[dict[str, Any]]]]) -> str:
    head = (
        "| publisher | variant | phase | settle (s) | rate (kbit/s) | estimate (kbit/s) "
        "| height | fps | longest freeze (ms) |"
    )
    lines = [head, "|" + "---|" * 9]
    for run, rows in results:
        for r in rows:
            est = "–" if r["estimate_kbps"] is None else r["estimate_kbps"]
            lines.append(
                f"| {run.publisher} | {run.variant} | {r['phase']} | {r['settle_s']:g} "
                f"| {r['kbps']} | {est} | {r['height']}p | {r['fps']:g} | {r['freeze_ms']} |"
            )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> None:
    results = []
    for publisher in args.publishers:
        for variant in args.variants:
            if variant == "chrome" and publisher != "browser":
                continue
            with tempfile.TemporaryDirectory(prefix="endolink-uplink-") as work:
                run = await one_run(publisher, variant, args.scale, Path(work))
            rows = phase_rows(run, args.scale)
            results.append((run, rows))
            print(table([(run, rows)]).split("\n", 2)[2], flush=True)
            if args.verbose:
                for s in run.seconds:
                    print(
                        f"  {s.t:6.1f} s {s.kbps:6.0f} kbit/s {s.height}p {s.frames} fps "
                        f"estimate {s.estimate_kbps}",
                        flush=True,
                    )
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"run": vars(run) | {"seconds": [vars(s) for s in run.seconds]}, "rows": rows}
                    for run, rows in results
                ],
                indent=1,
                default=str,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--publishers", nargs="+", default=["browser", "aiortc"], choices=["browser", "aiortc"]
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["before", "chrome", "after"],
        choices=["before", "chrome", "after"],
    )
    parser.add_argument("--scale", type=float, default=1.0, help="stretch (>1) or shrink phases")
    parser.add_argument("--verbose", action="store_true", help="print every second")
    parser.add_argument("--json", type=Path, help="write every second and the table here")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
