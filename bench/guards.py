"""The guards' decoder with a browser clinic: the server's CPU for a Chromium clinic page that
publishes 720p30 VP8 in three temporal layers (what the page asks for), against the same page
with the layers refused and against the layers with both guards off, in one run.

    python -m bench.guards [--rounds 2] [--seconds 30] [--warmup 15] [--json out.json]

Per round and mode (interleaved, layers first): a fresh server (``bench.serverproc``, its own data
directory), one consultation with consent on file (so it records), Debian's Chromium with the
synthetic endoscopy (``client/endoscopy.py``, 1280×720 at 30 fps) as its fake camera and the
clinic page streaming; no viewer (the clinic's encoder alone takes most of a core of the two,
and the guards' cost does not depend on viewers). Mode ``plain`` refuses the layers inside the
browser (an init script drops ``scalabilityMode`` from ``setParameters``), as a browser without
them would; mode ``off`` is ``layers`` with the picture and privacy guards switched off
(``ENDOLINK_PICTURE_GUARD=0``, ``ENDOLINK_PRIVACY_GUARD=0``): what the server costs without
them. After ``--warmup`` s the server's CPU time (user + system, all threads, /proc) is read
over ``--seconds``; the clinic's outbound-rtp says what it sent, and at the end the server log
gives the guards' decoder's own count ("N decoded, M not decoded"). CPU time holds on a shared
machine, but Chromium's encoder shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.common import NAMED_LINKS, free_port, proc_sample
from bench.serverproc import ServerProcess, endolink
from client.endoscopy import SyntheticEndoscopy

MODES = ("layers", "plain", "off")
GUARDS_OFF = {"ENDOLINK_PICTURE_GUARD": "0", "ENDOLINK_PRIVACY_GUARD": "0"}
REFUSE_LAYERS = """(() => {
  const set = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (params) {
    for (const encoding of params.encodings || []) delete encoding.scalabilityMode;
    return set.call(this, params);
  };
})()"""
SENT = """() => window.endolink.publishPc.getStats().then((stats) => {
  const out = [...stats.values()].find((s) => s.type === "outbound-rtp" && s.kind === "video");
  return out ? {frames: out.framesEncoded, mode: out.scalabilityMode || "none",
                width: out.frameWidth, height: out.frameHeight, fps: out.framesPerSecond} : null;
})"""
DECODER_LOG = re.compile(r"DecodedFeed\(.*\) stopped: (\d+) decoded, (\d+) not decoded")


async def measure(mode: str, y4m: Path, work: Path, cfg: argparse.Namespace) -> dict[str, Any]:
    logs = work / f"{mode}-{len(list(work.iterdir()))}"
    logs.mkdir()
    port = free_port()
    create = ["consult", "create", "--consent-by", "bench", "--json", "--codec", "VP8"]
    links = json.loads(endolink(logs / "data", port, *create, *NAMED_LINKS))["links"]
    env = GUARDS_OFF if mode == "off" else None
    server = ServerProcess(logs / "data", port, logs / "server.log", env=env)
    server.start()
    try:
        await server.wait_accepting()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={y4m}"],
            )
            try:
                context = await browser.new_context()
                if mode == "plain":
                    await context.add_init_script(REFUSE_LAYERS)
                clinic = await context.new_page()
                await clinic.goto(links["clinic"])
                start = clinic.get_by_test_id("start-stream")
                await start.wait_for(state="visible", timeout=20_000)
                await clinic.wait_for_selector(
                    "[data-testid=start-stream]:not([disabled])", timeout=20_000
                )
                await start.click()
                await asyncio.sleep(cfg.warmup)
                assert server.process is not None
                before = proc_sample(server.process.pid)
                sent_before = await clinic.evaluate(SENT)
                await asyncio.sleep(cfg.seconds)
                after = proc_sample(server.process.pid)
                sent = await clinic.evaluate(SENT)
            finally:
                await browser.close()
    finally:
        server.stop()
    assert before and after and sent and sent_before, "the server or the clinic stopped"
    found = DECODER_LOG.findall((logs / "server.log").read_text())
    decoded, not_decoded = (sum(int(row[i]) for row in found) for i in (0, 1))
    row = {
        "mode": mode,
        "sent": sent["mode"],
        "size": f"{sent['width']}×{sent['height']}",
        "fps": round((sent["frames"] - sent_before["frames"]) / cfg.seconds, 1),
        "cpu_pct": 100.0 * (after["cpu_s"] - before["cpu_s"]) / (after["t"] - before["t"]),
        "not_decoded_pct": (
            100.0 * not_decoded / (decoded + not_decoded) if decoded + not_decoded else None
        ),
    }
    print(
        f"  {mode:>6}: {row['cpu_pct']:5.1f} % of a core, clinic sent {row['sent']} "
        f"{row['size']} at {row['fps']} fps, guards left {percent(row['not_decoded_pct'])} "
        "undecoded",
        flush=True,
    )
    return row


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} %"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | clinic sent | server CPU (each round) | median "
        "| frames the guards left undecoded |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        cpu = [r["cpu_pct"] for r in mine]
        lines.append(
            f"| {mode} | {mine[0]['sent']}, {', '.join(r['size'] for r in mine)} | "
            f"{', '.join(f'{c:.1f} %' for c in cpu)} | {statistics.median(cpu):.1f} % | "
            f"{percent(mine[0]['not_decoded_pct'])} |"
        )
    return "\n".join(lines)


async def run(cfg: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="endolink-guards-") as tmp:
        work = Path(tmp)
        y4m = work / "scope.y4m"
        SyntheticEndoscopy(seconds=6.0).write_y4m(y4m)
        runs = work / "runs"
        runs.mkdir()
        return [await measure(mode, y4m, runs, cfg) for _ in range(cfg.rounds) for mode in MODES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guards")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    cfg = parser.parse_args(argv)
    print("the guards' decoder, Chromium clinic at 720p30 VP8: layers, plain, guards off")
    rows = asyncio.run(run(cfg))
    print(table(rows))
    if cfg.json:
        cfg.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
