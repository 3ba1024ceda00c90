"""FFmpeg's whip muxer (the PyAV wheel's FFmpeg 8, built on GnuTLS) publishes to a real
``endolink serve``: with a P-256 certificate from ``endolink certs --dtls-client`` an aiortc
viewer decodes its stamped frames in order; with the muxer's own P-224 certificate the session
fails and the server says why in one plain warning line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from signaling.auth.grants import Role
from signaling.cli import main as endolink
from tests.interop.support import frames_in_order, python_module, served
from tests.peers import wait_until
from tests.processes import Process, clean_env

pytestmark = pytest.mark.timeout(90)

SECONDS = 20.0
"How long the FFmpeg process publishes; the test is done well before unless frames stall."
FRAMES = 90
"Stamped frames the viewer must decode (3 s at 30 fps)."
P224_WARNING = "peer DTLS certificate on an unsupported curve"


def ffmpeg_publisher(
    url: str, token: str, log: Path, cert_key: tuple[Path, Path] | None
) -> Process:
    extra = [str(p) for p in cert_key] if cert_key else []
    command = python_module("tests.interop.encoder", "whip", url, token, str(SECONDS), *extra)
    return Process(command, log, clean_env())


def test_the_wheels_ffmpeg_has_the_whip_muxer_and_an_h264_encoder() -> None:
    assert "whip" in av.formats_available
    assert "libx264" in av.codecs_available


@pytest.mark.interop(client="FFmpeg 8 whip muxer (PyAV wheel)", role="publish", codec="H.264")
async def test_ffmpeg_publishes_h264_with_a_p256_certificate(
    tmp_path: Path, processes: list[Process]
) -> None:
    assert endolink(["certs", "--dtls-client", str(tmp_path / "dtls")]) == 0
    cert_key = (tmp_path / "dtls" / "dtls-cert.pem", tmp_path / "dtls" / "dtls-key.pem")
    async with served(tmp_path, "H264") as s:
        publisher = ffmpeg_publisher(
            s.endpoint("whip"), s.token(Role.CLINIC), tmp_path / "ffmpeg.log", cert_key
        )
        processes.append(publisher)
        await asyncio.to_thread(publisher.wait_for, "opened", 20)
        await frames_in_order(s, FRAMES, (640, 480), publisher.output)
    assert P224_WARNING not in s.log_text()


async def test_ffmpegs_own_p224_certificate_fails_with_a_plain_server_warning(
    tmp_path: Path, processes: list[Process]
) -> None:
    async with served(tmp_path, "H264") as s:
        publisher = ffmpeg_publisher(
            s.endpoint("whip"), s.token(Role.CLINIC), tmp_path / "ffmpeg.log", None
        )
        processes.append(publisher)
        said = await asyncio.to_thread(publisher.wait_for, "failed", 30)
        assert await wait_until(lambda: P224_WARNING in s.log_text(), 10), s.log_text()[-2000:]
    assert "opened" not in publisher.output(), said
    warning = next(line for line in s.log_text().splitlines() if P224_WARNING in line)
    assert " WARNING " in warning and "P-224" in warning and "cert_file/key_file" in warning
    assert "Traceback" not in s.log_text()
