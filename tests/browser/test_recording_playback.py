"""Chromium plays what the recorder writes, natively in ``<video>``: a live-recorded WebM (VP8 +
Opus) and fragmented MP4 (H.264 + Opus) with the right duration, seeking, and a WebM cut short the
way a ``kill -9`` cuts it. The files are served by a plain static route (the replay API is tested
on its own)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from recorder.manifest import MANIFEST, SegmentStatus
from recorder.recordings import Recordings
from signaling.keys import RECORDINGS, STORE
from tests.peers import wait_until
from tests.recorder.media import publishing

from .conftest import Browser, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

PLAY_AND_SEEK = """
async (src) => {
  const v = document.createElement("video");
  v.muted = true;
  document.body.appendChild(v);
  v.src = src;
  const loaded = await new Promise((resolve) => {
    v.onloadedmetadata = () => resolve("ok");
    v.onerror = () => resolve("error: " + (v.error && v.error.message));
    setTimeout(() => resolve("timeout"), 8000);
  });
  if (loaded !== "ok") return {loaded};
  await v.play();
  await new Promise((r) => setTimeout(r, 600));
  const playedTo = v.currentTime;
  v.currentTime = 1.0;
  const seekedTo = await new Promise((resolve) => {
    v.onseeked = () => resolve(v.currentTime);
    setTimeout(() => resolve(null), 8000);
  });
  await new Promise((r) => setTimeout(r, 300));
  const quality = v.getVideoPlaybackQuality();
  v.remove();
  return {loaded, duration: v.duration, width: v.videoWidth, playedTo, seekedTo,
          frames: quality.totalVideoFrames, audioBytes: v.webkitAudioDecodedByteCount};
}
"""


async def record(live_server: LiveServer, codec: str) -> tuple[Path, float]:
    """~2.5 s recorded from an aiortc clinic; returns the segment file and its duration."""
    consultation = await live_server.app[STORE].create(
        codec, codec, consent_by="Dr. Paper", recorded_by="t"
    )
    cid = consultation.id
    recordings: Recordings = live_server.app[RECORDINGS]
    token = live_server.token("clinic", cid)
    async with publishing(f"{live_server.base_url}/whip/{cid}", token, size=(640, 360)):
        assert await wait_until(
            lambda: (r := recordings.active(cid)) is not None and r.segment_open, timeout=10
        )
        recorder = recordings.active(cid)
        await asyncio.sleep(2.5)
    assert recorder is not None

    def manifest() -> dict:
        return json.loads((recorder.directory / MANIFEST).read_text())

    assert await wait_until(lambda: manifest()["segments"][0]["status"] != "open", timeout=10)
    segment = manifest()["segments"][0]
    assert segment["status"] == SegmentStatus.CLOSED
    return recorder.directory / segment["file"], segment["duration_s"]


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A static web server for ``tmp_path / "files"``: (directory, base URL)."""
    root = tmp_path / "files"
    root.mkdir()
    app = web.Application()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>player</title>", content_type="text/html")

    app.router.add_get("/", page)
    app.router.add_static("/media", root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield root, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_chromium_plays_and_seeks_recorded_webm_and_mp4_and_a_crash_cut_webm(
    live_server: LiveServer, browser: Browser, files: tuple[Path, str]
) -> None:
    root, base = files
    durations = {}
    for codec, name in (("VP8", "clean.webm"), ("H264", "clean.mp4")):
        path, durations[name] = await record(live_server, codec)
        (root / name).write_bytes(path.read_bytes())
    webm = (root / "clean.webm").read_bytes()
    (root / "cut.webm").write_bytes(webm[: int(len(webm) * 0.8)])  # as a kill -9 leaves it

    page = await browser.open(f"{base}/", "player")
    for name in ("clean.webm", "clean.mp4", "cut.webm"):
        result = await page.evaluate(PLAY_AND_SEEK, f"/media/{name}")
        print(name, result)
        assert result["loaded"] == "ok", (name, result)
        assert result["width"] == 640
        assert result["playedTo"] > 0.2, (name, result)
        assert result["seekedTo"] == pytest.approx(1.0, abs=0.1), (name, result)
        assert result["frames"] > 5 and result["audioBytes"] > 0, (name, result)
        if name != "cut.webm":  # a cut WebM has no duration until recovery repairs it
            assert result["duration"] == pytest.approx(durations[name], abs=0.3), (name, result)
