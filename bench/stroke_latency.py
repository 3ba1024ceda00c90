"""Stroke latency: surgeon page input event → mark visible on the clinic page's overlay canvas.

A real server process (``python -m signaling serve``), one Debian Chromium with two pages, each
in its own window (a browser context; a tab behind another draws at ~1 frame/s): the clinic
(streaming its fake camera, so the overlay sits on a real preview) and the surgeon (watching it).
On the surgeon page a script dispatches N pointer events at a steady rate (one per animation
frame, as Chrome dispatches real pointer events, or from a timer with --rate) onto the annotation
canvas — a pen stroke (pointerdown + moves + pointerup), then the laser pointer
(moves) — stamping each with ``performance.timeOrigin + performance.now()`` just before dispatch.
The pages' annotation layer reports, with the same clock:

* ``endolink:applied``  when a room message was applied to the page's state (before drawing);
* ``endolink:rendered`` at the end of the requestAnimationFrame callback that drew the canvas.

An input event counts as visible on the clinic at the first rendered frame that reflects it (or
a newer event: updates are coalesced at 30/s, pointer moves at 60/s). Reported per path:

* input → visible on clinic (rAF render): the number the issue's target is about (p95 ≤ 50 ms);
* input → applied on clinic (no render step): the same path without the rAF wait, a baseline;
* input → the surgeon's own echo from the server (sender → server → sender);
* input → sent by the surgeon page: the wait imposed by the page's rate limiter (30 annotation
  messages/s, the server's limit; 60 pointer messages/s), a stroke's updates being coalesced;
* a bare WebSocket ping → pong round trip from a page (an observer's own connection): the floor.

Both pages run in one browser on one machine, so their clocks (``timeOrigin + now``) are common;
the offset between the two pages' clocks is measured and printed. "Visible" is the rAF callback
that painted the canvas; the compositor shows that frame at the next vsync (≤ 16.7 ms later at
60 Hz), which a headless browser cannot measure.

    python -m bench.stroke_latency [--events 300] [--rate 0] [--runs 3] [--json out.json]
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

from playwright.async_api import Page, async_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.common import NAMED_LINKS, free_port, percentile
from client.endoscopy import SyntheticEndoscopy

RECORD_JS = """() => {
  const canvas = document.querySelector('[data-testid="annotation-canvas"]');
  const rec = {applied: [], rendered: [], sent: []};
  window.__bench = rec;
  canvas.addEventListener("endolink:applied", (e) => rec.applied.push(e.detail));
  canvas.addEventListener("endolink:sent", (e) => rec.sent.push(e.detail));
  canvas.addEventListener("endolink:rendered", (e) => {
    const d = e.detail;
    rec.rendered.push({at: d.at, marks: d.marks.map((m) => m.points),
                       pointers: d.pointers.map((p) => [p.x, p.y])});
  });
}"""

RESET_JS = (
    "() => { window.__bench.applied = []; window.__bench.rendered = []; window.__bench.sent = []; }"
)
TAKE_JS = "() => window.__bench"

# Dispatches n pointer events (one per frame, or `rate` per second) along a zigzag across the
# picture; each is stamped (timeOrigin + now) right before dispatch. Consecutive positions are
# ≥ 1 CSS px apart, so every pen event adds one point to the stroke: event i ⇔ the stroke's
# (i + 1)-th point.
DRIVE_JS = """({n, rate, tool, pacing}) => new Promise((resolve, reject) => {
  const canvas = document.querySelector('[data-testid="annotation-canvas"]');
  const pic = window.endolink.annotations.picture;
  if (!pic) { reject(new Error("no picture")); return; }
  const box = canvas.getBoundingClientRect();
  const pos = (i) => {
    const t = i / (n - 1);
    return [0.1 + 0.8 * t, 0.3 + 0.4 * Math.abs(Math.sin(t * Math.PI * 3))];
  };
  const stamps = [];
  const fire = (type, i, record = true) => {
    const [nx, ny] = pos(i);
    const init = {
      clientX: box.left + pic.x + nx * pic.width, clientY: box.top + pic.y + ny * pic.height,
      pointerId: 7, pointerType: "pen", isPrimary: true, bubbles: true, cancelable: true,
      button: type === "pointermove" ? -1 : 0, buttons: type === "pointerup" ? 0 : 1,
    };
    const at = performance.timeOrigin + performance.now();
    canvas.dispatchEvent(new PointerEvent(type, init));
    if (record) stamps.push(at);
  };
  let i = 0;
  let timer = null;
  const step = () => {
    if (i >= n) {
      clearInterval(timer);
      if (tool === "pen") fire("pointerup", n - 1, false);
      resolve(stamps);
      return false;
    }
    fire("pointermove", i++);
    return true;
  };
  if (tool === "pen") fire("pointerdown", i++);
  if (pacing === "raf") {
    // Like Chrome's own pointer events, which are dispatched once per frame.
    const frame = () => { if (step()) requestAnimationFrame(frame); };
    requestAnimationFrame(frame);
  } else {
    timer = setInterval(step, 1000 / rate);
  }
})"""

# A bare WebSocket round trip from the page: its own connection (an observer token), auth,
# then `count` ping → pong exchanges one after the other.
PING_JS = """async ({token, cid, count}) => {
  const ws = new WebSocket(`ws://${location.host}/ws/${cid}`);
  const queue = [];
  let wake = null;
  let closed = null;
  ws.addEventListener("message", (e) => { queue.push(JSON.parse(e.data)); wake?.(); });
  ws.addEventListener("close", (e) => { closed = `closed ${e.code} ${e.reason}`; wake?.(); });
  const next = async (type) => {
    const deadline = performance.now() + 5000;
    for (;;) {
      const i = queue.findIndex((m) => m.type === type);
      if (i >= 0) return queue.splice(0, i + 1).pop();
      if (closed) throw new Error(closed);
      if (performance.now() > deadline) throw new Error(`no ${type} within 5 s`);
      await new Promise((r) => { wake = r; setTimeout(r, 100); });
    }
  };
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = () => fail(new Error("ws error"));
  });
  ws.send(JSON.stringify({type: "auth", token}));
  await next("welcome");
  const rtts = [];
  for (let i = 0; i < count; i += 1) {
    queue.length = 0;
    const t0 = performance.now();
    ws.send(JSON.stringify({type: "ping"}));
    await next("pong");
    rtts.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 60)); // under the 20 messages/s limit
  }
  ws.close();
  return rtts;
}"""

NOW_JS = "() => performance.timeOrigin + performance.now()"

RAF_JS = """() => new Promise((resolve) => {
  let frames = 0;
  const t0 = performance.now();
  const tick = () => {
    frames += 1;
    if (performance.now() - t0 < 1000) requestAnimationFrame(tick);
    else resolve(frames);
  };
  requestAnimationFrame(tick);
})"""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def endolink(data_dir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "signaling", *args, "--data-dir", str(data_dir)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout


async def clock_offset(a: Page, b: Page, tries: int = 15) -> tuple[float, float]:
    """(offset of b's clock relative to a's, ± uncertainty) in ms, from bracketed reads."""
    best = (0.0, float("inf"))
    for _ in range(tries):
        t1 = await a.evaluate(NOW_JS)
        t2 = await b.evaluate(NOW_JS)
        t3 = await a.evaluate(NOW_JS)
        half = (t3 - t1) / 2
        if half < best[1]:
            best = (t2 - (t1 + t3) / 2, half)
    return best


def first_at_or_after(times: list[tuple[float, int]], index: int) -> float | None:
    """The first time at which progress (an event index) reached ``index``."""
    for at, progress in times:
        if progress >= index:
            return at
    return None


def progress_pen(rendered: list[dict]) -> list[tuple[float, int]]:
    # Points on the (only) stroke - 1 = index of the newest event shown.
    return [(r["at"], max(r["marks"], default=0) - 1) for r in rendered]


def pointer_index(x: float, n: int) -> int:
    return round((x - 0.1) / 0.8 * (n - 1))


def progress_pointer(rendered: list[dict], n: int) -> list[tuple[float, int]]:
    out = []
    for r in rendered:
        shown = [pointer_index(p[0], n) for p in r["pointers"] if p[0] is not None]
        out.append((r["at"], max(shown, default=-1)))
    return out


def latencies(stamps: list[float], progress: list[tuple[float, int]]) -> tuple[list[float], int]:
    out, missing = [], 0
    for i, at in enumerate(stamps):
        seen = first_at_or_after(progress, i)
        if seen is None:
            missing += 1
        else:
            out.append(seen - at)
    return out, missing


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


ANCHORED_JS = """() => document.querySelector('[data-testid="annotation-canvas"]')
  ?.dataset.anchored ?? null"""


async def run_path(
    tool: str, surgeon: Page, clinic: Page, n: int, rate: float
) -> dict[str, tuple[list[float], int]]:
    await clinic.evaluate(RESET_JS)
    await surgeon.evaluate(RESET_JS)
    pacing = "raf" if rate <= 0 else "timer"
    stamps = await surgeon.evaluate(
        DRIVE_JS, {"n": n, "rate": rate, "tool": tool, "pacing": pacing}
    )
    await asyncio.sleep(1.5)  # let the last messages arrive and render
    if tool == "pen":  # how many marks the clinic draws through the relay's placements
        anchored = await clinic.evaluate(ANCHORED_JS)
        log(f"pen stroke: {anchored} mark(s) anchored on the clinic page after the stroke")
    c = await clinic.evaluate(TAKE_JS)
    s = await surgeon.evaluate(TAKE_JS)
    start = stamps[0]
    for rec in (c, s):  # what a previous run left behind (a fading pointer) is not this run's
        rec["rendered"] = [r for r in rec["rendered"] if r["at"] >= start]
        rec["applied"] = [a for a in rec["applied"] if a["at"] >= start]
        rec["sent"] = [a for a in rec["sent"] if a["at"] >= start]
    if tool == "pen":
        applied = [
            (a["at"], (a["points"] or 0) - 1)
            for a in c["applied"]
            if a["type"] == "annotation" and a["op"] in ("add", "update")
        ]
        echo = [
            (a["at"], (a["points"] or 0) - 1)
            for a in s["applied"]
            if a["type"] == "annotation" and a["op"] in ("add", "update")
        ]
        sent = [
            (a["at"], (a["points"] or 0) - 1)
            for a in s["sent"]
            if a["type"] == "annotation" and a["op"] in ("add", "update")
        ]
        visible = progress_pen(c["rendered"])
        out = {
            "visible on clinic (rAF)": latencies(stamps, visible),
            "applied on clinic (no render)": latencies(stamps, applied),
            "surgeon's own echo": latencies(stamps, echo),
            "sent by surgeon page (30/s limit)": latencies(stamps, sent),
        }
    else:
        applied = [
            (a["at"], pointer_index(a["x"], n))
            for a in c["applied"]
            if a["type"] == "pointer" and a["x"] is not None
        ]
        sent = [
            (a["at"], pointer_index(a["x"], n))
            for a in s["sent"]
            if a["type"] == "pointer" and a["x"] is not None
        ]
        out = {
            "visible on clinic (rAF)": latencies(stamps, progress_pointer(c["rendered"], n)),
            "applied on clinic (no render)": latencies(stamps, applied),
            "sent by surgeon page (60/s limit)": latencies(stamps, sent),
        }
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    out["_input_interval"] = (gaps, 0)
    return out


async def run(events: int, rate: float, runs: int, port: int, endoscopy: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="endolink-stroke-"))
    data = work / "data"
    camera: list[str] = []
    if endoscopy:  # the surgeon's strokes are anchored: drawn on tissue, the relay tracks them
        y4m = work / "endoscopy.y4m"
        await asyncio.to_thread(SyntheticEndoscopy(640, 360).write_y4m, y4m)
        camera = [f"--use-file-for-fake-video-capture={y4m}"]
    port = port or free_port()
    created = json.loads(
        endolink(data, "consult", "create", "--consent-by", "bench", "--json", *NAMED_LINKS)
    )
    cid = created["id"]
    observer = endolink(data, "token", "--consultation", cid, "--role", "observer").strip()
    env = {**os.environ, "ENDOLINK_ICE_HOST_ADDRESSES": "127.0.0.1", "ENDOLINK_PORT": str(port)}
    server = subprocess.Popen(
        [sys.executable, "-m", "signaling", "serve", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict = {
        "events": events,
        "rate": rate,
        "runs": runs,
        "paths": {},
        "load_before": os.getloadavg()[0],
        "camera": "endoscopy" if endoscopy else "chromium",
    }
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_listening(port)
        log(f"server on {base}, consultation {cid}")
        links = created["links"]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *camera]
            )
            try:
                viewport = {"width": 1280, "height": 800}
                clinic = await (await browser.new_context(viewport=viewport)).new_page()
                surgeon = await (await browser.new_context(viewport=viewport)).new_page()
                await clinic.goto(local(links["clinic"], base))
                await clinic.wait_for_selector(
                    "[data-testid=start-stream]:not([disabled])", timeout=20_000
                )
                await clinic.click("[data-testid=start-stream]")
                log("clinic streaming")
                await surgeon.goto(local(links["surgeon"], base))
                ready = (
                    "() => { const v = document.querySelector('[data-testid=remote-video]');"
                    " const a = window.endolink && window.endolink.annotations;"
                    " return v && v.videoWidth > 0 && a && a.picture; }"
                )
                await surgeon.wait_for_function(ready, timeout=30_000)
                await clinic.wait_for_function(
                    "() => window.endolink.annotations && window.endolink.annotations.picture",
                    timeout=10_000,
                )
                await surgeon.wait_for_function(
                    "() => document.querySelector('[data-testid=room-state]')"
                    ".dataset.state === 'connected'",
                    timeout=10_000,
                )
                log("surgeon sees the video")
                await asyncio.sleep(2.0)  # let the video settle
                for page in (clinic, surgeon):
                    await page.evaluate(RECORD_JS)
                # Pages in one browser window throttle the tab behind to ~1 frame/s; two
                # contexts are two windows, both drawing at the display rate.
                rates = await asyncio.gather(clinic.evaluate(RAF_JS), surgeon.evaluate(RAF_JS))
                results["raf_per_s"] = {"clinic": rates[0], "surgeon": rates[1]}
                log("recording")
                offset, uncertainty = await clock_offset(surgeon, clinic)
                log("clock offset measured")
                results["clock_offset_ms"] = [offset, uncertainty]
                rtts = await clinic.evaluate(PING_JS, {"token": observer, "cid": cid, "count": 60})
                for tool in ("pen", "pointer"):
                    button = surgeon.locator(f"[data-testid=tool-{tool}]")
                    if await button.get_attribute("aria-pressed") != "true":
                        await button.click()  # a toggle: pen is already on by default
                    await surgeon.wait_for_selector(f"[data-testid=tool-{tool}][aria-pressed=true]")
                    merged: dict[str, list[float]] = {}
                    missing: dict[str, int] = {}
                    for number in range(runs):
                        log(f"{tool}: run {number + 1}/{runs}")
                        out = await run_path(tool, surgeon, clinic, events, rate)
                        for key, (values, miss) in out.items():
                            merged.setdefault(key, []).extend(values)
                            missing[key] = missing.get(key, 0) + miss
                        if tool == "pen":
                            await surgeon.click("[data-testid=clear]")
                            await asyncio.sleep(0.5)
                    results["paths"][tool] = {
                        key: {**summary(values), "missing": missing[key]}
                        for key, values in merged.items()
                    }
                results["paths"]["ws"] = {"ping → pong round trip (no input)": summary(rtts)}
            finally:
                await browser.close()
    finally:
        results["load_after"] = os.getloadavg()[0]
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def local(link: str, base: str) -> str:
    """Invite links carry the configured base URL; the bench server listens on ``base``."""
    return base + link[link.index("/", link.index("//") + 2) :]


async def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout_s:g} s")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:6.1f}"


def report(results: dict) -> None:
    offset, uncertainty = results["clock_offset_ms"]
    rate = results["rate"]
    pacing = "one per animation frame" if rate <= 0 else f"at {rate:g}/s (timer)"
    print(
        f"\n{results['runs']} runs × {results['events']} events {pacing}; "
        f"clinic clock − surgeon clock = {offset:+.2f} ms (± {uncertainty:.2f}); "
        f"requestAnimationFrame per s: clinic {results['raf_per_s']['clinic']}, "
        f"surgeon {results['raf_per_s']['surgeon']}; load average (1 min) "
        f"{results['load_before']:.1f} before, {results['load_after']:.1f} after, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(f"{'path':<10} {'measured':<34} {'n':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}  miss")
    for path, rows in results["paths"].items():
        for key, s in rows.items():
            name = "input interval" if key == "_input_interval" else key
            print(
                f"{path[:10]:<10} {name:<34} {s['n']:>6} {fmt(s['p50'])} {fmt(s['p95'])} "
                f"{fmt(s['max'])}  {s.get('missing', '')}"
            )
    pen = results["paths"]["pen"]["visible on clinic (rAF)"]["p95"]
    verdict = "meets" if pen is not None and pen <= 50 else "MISSES"
    print(f"\npen stroke p95 input → visible on clinic: {fmt(pen).strip()} ms ({verdict} ≤ 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="pointer events per run")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="events per second from a timer; 0 (default): one per animation frame, as "
        "Chrome dispatches pointer events (60/s here)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="server port (0: any free port)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--endoscopy",
        action="store_true",
        help="the clinic films the synthetic endoscopy sequence (client/endoscopy.py), so the "
        "surgeon's anchored strokes are tracked; default: Chromium's fake camera (a flat "
        "colour: nothing to anchor on)",
    )
    args = parser.parse_args()
    if args.events < 2 or args.events > 1900:
        parser.error("--events must be 2..1900 (one stroke holds at most 2000 points)")
    results = asyncio.run(run(args.events, args.rate, args.runs, args.port, args.endoscopy))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
