"""GStreamer 1.22's webrtcbin (Debian 12's packages) against a real ``endolink serve``, both ways,
VP8 and H.264: ``client/gst_whip.py`` run by Debian's ``/usr/bin/python3`` (the venv cannot
import ``gi``) publishes a stamped picture that an aiortc viewer decodes, and plays a stamped
aiortc publisher, reporting what it decoded as JSON.

webrtcbin's DTLS certificate is RSA-2048: these pass because of ``relay/dtls.py``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from signaling.auth.grants import Role
from tests.peers import publisher, viewer, wait_until
from tests.processes import REPO_ROOT, Process, Server, clean_env, consultation_on_disk

CLIENT = "GStreamer 1.22 webrtcbin"
SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = str(REPO_ROOT / "client" / "gst_whip.py")
WIDTH, HEIGHT, FPS, KBPS = 640, 360, 30, 800
"""What the publishers send (the GStreamer one and aiortc's TestPatternTrack): small enough that
the encoders keep up on a busy 2-core machine (aiortc's x264 runs the medium preset)."""
PLAY_S = 8.0
"How long the player plays after connecting."
CODECS = ("VP8", "H264")


@dataclass
class Consultation:
    cid: str
    clinic: str
    surgeon: str


@dataclass
class Running:
    server: Server
    consultations: dict[str, Consultation]
    log_dir: Path

    def url(self, kind: str, codec: str) -> str:
        """Viewers pin the original, as in ``tests.interop.support.Served.endpoint``."""
        query = "?quality=original" if kind == "whep" else ""
        return f"{self.server.url}/{kind}/{self.consultations[codec].cid}{query}"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server for the module, with a VP8 and an H.264 consultation (consent on file)."""
    root = tmp_path_factory.mktemp("gstreamer")
    data_dir = root / "data"
    consultations = {}
    for codec in CODECS:
        cid, token = asyncio.run(consultation_on_disk(data_dir, f"gst {codec}", codec))
        consultations[codec] = Consultation(cid, token(Role.CLINIC), token(Role.SURGEON))
    server = Server(data_dir, root / "server.log")
    try:
        server.wait_ready()
        yield Running(server, consultations, root)
    finally:
        server.stop()


def gst_whip(running: Running, token: str, *args: str) -> Process:
    """The driver as a hospital runs it, the token in ``$ENDOLINK_TOKEN`` (never on the command
    line, where ``ps`` shows it), on loopback (``--ice-address``: see its docstring)."""
    command = [SYSTEM_PYTHON, DRIVER, *args, "--ice-address", "127.0.0.1"]
    return Process(command, running.log_dir / "gst_whip.log", clean_env(ENDOLINK_TOKEN=token))


def report(process: Process, timeout: float) -> dict[str, object]:
    """The driver's last stdout line (its JSON report), once it has ended by itself."""
    process.proc.wait(timeout)
    lines = process.output()
    assert lines, "gst_whip printed nothing"
    result: dict[str, object] = json.loads(lines[-1])
    return result


@pytest.mark.parametrize(
    "codec",
    [
        pytest.param(codec, marks=pytest.mark.interop(client=CLIENT, role="publish", codec=name))
        for codec, name in (("VP8", "VP8"), ("H264", "H.264"))
    ],
)
async def test_gstreamer_webrtcbin_publishes_and_aiortc_decodes_every_frame(
    running: Running, codec: str
) -> None:
    consultation = running.consultations[codec]
    gst = gst_whip(
        running,
        consultation.clinic,
        "publish",
        running.url("whip", codec),
        "--codec",
        codec,
        *("--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(FPS), "--kbps", str(KBPS)),
    )
    try:
        await asyncio.to_thread(gst.wait_for, '{"state": "connected"}', 20)
        url = running.url("whep", codec)
        async with viewer(url, consultation.surgeon, kinds=("video",)) as (_, _, received):
            assert await wait_until(lambda: received.counters, timeout=10), "no frame decoded"
            start, before = time.monotonic(), len(received.counters)
            assert await wait_until(lambda: time.monotonic() - start >= 4.0, timeout=5)
            fps = (len(received.counters) - before) / (time.monotonic() - start)
    finally:
        gst.stop(signal.SIGINT)
    assert received.sizes == {(WIDTH, HEIGHT)}
    counters = received.counters
    assert all(b > a for a, b in zip(counters, counters[1:], strict=False)), "out of order"
    assert fps >= 20, f"{fps:.1f} fps of the publisher's {FPS}"
    assert gst.proc.returncode == 0, gst.output()


@pytest.mark.parametrize(
    "codec",
    [
        pytest.param(codec, marks=pytest.mark.interop(client=CLIENT, role="play", codec=name))
        for codec, name in (("VP8", "VP8"), ("H264", "H.264"))
    ],
)
async def test_gstreamer_webrtcbin_plays_an_aiortc_publisher(running: Running, codec: str) -> None:
    consultation = running.consultations[codec]
    url = running.url("whip", codec)
    async with publisher(url, consultation.clinic, audio=False, size=(WIDTH, HEIGHT)) as (
        clinic,
        _,
    ):
        assert await wait_until(lambda: clinic.connectionState == "connected", timeout=10)
        gst = gst_whip(
            running,
            consultation.surgeon,
            "play",
            running.url("whep", codec),
            "--seconds",
            str(PLAY_S),
        )
        try:
            result = await asyncio.to_thread(report, gst, PLAY_S + 40)
        finally:
            gst.kill()
    assert result["connected"] is True and "error" not in result, result
    assert (result["width"], result["height"]) == (WIDTH, HEIGHT), result
    assert result["in_order"] is True, result
    assert result["distinct_stamps"] == result["frames"], result
    assert isinstance(result["fps"], float) and result["fps"] >= 20, result
    assert isinstance(result["frames"], int) and result["frames"] >= 20 * (PLAY_S - 2), result
