"""``endolink publish rtsp://…`` against a real RTSP camera the test starts (GStreamer's RTSP
server, ``tests/rtsp_source.py`` under Debian's python3): frames reach an aiortc viewer at the
camera's rate over TCP and UDP. A camera in the consultation's codec is sent as it is; another
codec, or H.264 that browsers do not take as it is (High profile, B-frames), is decoded and
encoded again — the publisher's CPU time shows the difference."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from itertools import pairwise
from pathlib import Path

import av
import pytest
from aiohttp.test_utils import TestClient

from bench.common import free_port
from client.source import unfit_for_passthrough
from signaling.keys import STORE
from tests.clips import stamped_clip
from tests.conftest import MakeToken
from tests.peers import viewer, wait_until
from tests.processes import REPO_ROOT, Process, clean_env, publish_command

pytestmark = pytest.mark.timeout(120)

SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_FPS = 30
WINDOW_S = 4.0
SLOW = 0.75
"Received rate at least this share of the camera's (the viewer decodes on a shared 2-core box)."
FAST = 1.15

StartCamera = Callable[..., tuple[str, Process]]
HIGH = {"profile": "high", "bf": "3", "g": str(CAMERA_FPS)}
"libx264 options for a camera's main stream: High profile, B-frames, a keyframe every second."
RECOVERY_S = 5.0


@pytest.fixture
def camera(tmp_path: Path, processes: list[Process]) -> StartCamera:
    """camera(codec, port=None) → (URL, process) of a local RTSP camera serving a moving pattern
    in ``codec`` (or an MP4 file's H.264 as it is)."""

    def start(codec: str, port: int | None = None) -> tuple[str, Process]:
        script = str(REPO_ROOT / "tests" / "rtsp_source.py")
        command = [SYSTEM_PYTHON, script, str(port or free_port()), codec, str(CAMERA_FPS)]
        source = Process(command, tmp_path / "camera.log", dict(os.environ))
        processes.append(source)
        url = source.wait_for("ready", 20).split()[1]
        playable(url)
        return url, source

    return start


async def start_publisher(
    client: TestClient, make_token: MakeToken, codec: str, rtsp: str, transport: str, log: Path
) -> tuple[str, Process]:
    """A consultation in ``codec`` and ``endolink publish RTSP --rtsp-transport TRANSPORT``."""
    consultation = await client.app[STORE].create(
        title="Tower", video_codec=codec, consent_by="Dr. Bat", recorded_by="t"
    )
    cid = consultation.id
    command = publish_command(str(client.make_url(f"/whip/{cid}")), make_token("clinic", cid), rtsp)
    return cid, Process([*command, "--rtsp-transport", transport], log, clean_env())


Tower = Callable[[str, str], Awaitable[tuple[str, str, Process]]]


@pytest.fixture
def tower(
    client: TestClient, make_token: MakeToken, processes: list[Process], tmp_path: Path
) -> Tower:
    """tower(RTSP URL, codec) → (WHEP URL, surgeon token, publisher): ``endolink publish``
    sending the camera over TCP to a new consultation in ``codec``."""

    async def start(rtsp: str, codec: str) -> tuple[str, str, Process]:
        cid, publisher = await start_publisher(
            client, make_token, codec, rtsp, "tcp", tmp_path / "publish.log"
        )
        processes.append(publisher)
        return str(client.make_url(f"/whep/{cid}")), make_token("surgeon", cid), publisher

    return start


def playable(url: str, timeout: float = 20.0) -> None:
    """Wait until the camera serves its stream (a loaded machine may take a while to start the
    encoder: GStreamer answers 503 meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            av.open(url, format="rtsp", options={"rtsp_transport": "tcp"}, timeout=5).close()
            return
        except av.FFmpegError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    ("camera_codec", "consultation_codec", "transport", "says"),
    [
        pytest.param("h264", "H264", "tcp", "as it is", id="h264-as-is-tcp"),
        pytest.param("h264", "H264", "udp", "as it is", id="h264-as-is-udp"),
        pytest.param("vp8", "VP8", "tcp", "as it is", id="vp8-as-is-tcp"),
        pytest.param("h264", "VP8", "udp", "re-encoding", id="h264-to-vp8-udp"),
    ],
)
async def test_an_rtsp_camera_reaches_the_viewer_at_its_own_rate(
    client: TestClient,
    make_token: MakeToken,
    camera: StartCamera,
    processes: list[Process],
    tmp_path: Path,
    camera_codec: str,
    consultation_codec: str,
    transport: str,
    says: str,
) -> None:
    rtsp, _ = camera(camera_codec)
    cid, publisher = await start_publisher(
        client, make_token, consultation_codec, rtsp, transport, tmp_path / "publish.log"
    )
    processes.append(publisher)
    await asyncio.to_thread(publisher.wait_for, says, 30)
    arrivals: list[float] = []
    sizes: set[tuple[int, int]] = set()

    def on_video(frame: av.VideoFrame) -> None:
        arrivals.append(time.monotonic())
        sizes.add((frame.width, frame.height))

    token = make_token("surgeon", cid)
    async with viewer(str(client.make_url(f"/whep/{cid}")), token, ("video",)) as (_, _, seen):
        seen.on_video.append(on_video)
        assert await wait_until(lambda: len(arrivals) > 10, 15), "no frames from the camera"
        cpu_before, started = cpu_seconds(publisher.proc.pid), time.monotonic()
        first = len(arrivals)
        await asyncio.sleep(WINDOW_S)
        cpu = (cpu_seconds(publisher.proc.pid) - cpu_before) / (time.monotonic() - started)
        window = arrivals[first - 1 :]
    received_fps = (len(window) - 1) / (window[-1] - window[0])
    print(
        f"RTSP {camera_codec} over {transport} → {consultation_codec} consultation ({says}): "
        f"received {received_fps:.1f} fps, publisher CPU {cpu:.0%} of a core"
    )
    assert sizes == {(640, 360)}
    assert SLOW * CAMERA_FPS <= received_fps <= FAST * CAMERA_FPS
    assert "@" not in "\n".join(publisher.output())
    assert publisher.stop() == 0


async def test_a_camera_that_restarts_is_opened_again_and_its_picture_comes_back(
    client: TestClient,
    make_token: MakeToken,
    camera: StartCamera,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    rtsp, first = camera("h264")
    cid, publisher = await start_publisher(
        client, make_token, "H264", rtsp, "tcp", tmp_path / "publish.log"
    )
    processes.append(publisher)
    await asyncio.to_thread(publisher.wait_for, "publishing", 30)
    arrivals: list[float] = []
    token = make_token("surgeon", cid)
    async with viewer(str(client.make_url(f"/whep/{cid}")), token, ("video",)) as (_, _, seen):
        seen.on_video.append(lambda frame: arrivals.append(time.monotonic()))
        assert await wait_until(lambda: len(arrivals) > 10, 15)
        first.kill()
        killed_at = time.monotonic()
        await asyncio.to_thread(publisher.wait_for, "the source was lost", 15)
        camera("h264", int(rtsp.rsplit(":", 1)[1].split("/")[0]))
        back_at = time.monotonic()
        await asyncio.to_thread(publisher.wait_for, "the source is back", 10)
        assert await wait_until(lambda: arrivals[-1] > back_at, RECOVERY_S)
        after = next(t for t in arrivals if t > back_at)
        gap = max(b - a for a, b in pairwise(arrivals))
        print(
            f"camera down {back_at - killed_at:.1f} s (its start-up included); picture back "
            f"{after - back_at:.2f} s after it served again; no picture for {gap:.1f} s"
        )
        assert await wait_until(lambda: len([t for t in arrivals if t > back_at]) > 30, 5)
    assert publisher.stop() == 0


async def test_a_high_profile_camera_is_encoded_again_and_says_why(
    tower: Tower, camera: StartCamera, tmp_path: Path
) -> None:
    # A camera's main stream: High profile with B-frames, under an H.264 consultation.
    high = stamped_clip(tmp_path / "high.mp4", 6 * CAMERA_FPS, "H264", options=HIGH)
    whep, token, publisher = await tower(camera(str(high))[0], "H264")
    said = await asyncio.to_thread(publisher.wait_for, "re-encoding", 30)
    assert said.endswith(
        "re-encoding the source's H264 as H264 (High profile with B-frames; browsers need"
        " Constrained Baseline without B-frames)"
    )
    arrivals: list[float] = []
    async with viewer(whep, token, ("video",)) as (_, _, seen):
        seen.on_video.append(lambda frame: arrivals.append(time.monotonic()))
        assert await wait_until(lambda: len(arrivals) > 10, 15), "no frames from the camera"
    assert publisher.stop() == 0


@pytest.mark.parametrize(
    ("options", "unfit"),
    [
        pytest.param({"profile": "baseline"}, None, id="constrained-baseline"),
        pytest.param({"profile": "main", "bf": "0"}, "Main profile;", id="main"),
        pytest.param(HIGH, "High profile with B-frames;", id="high-b-frames"),
    ],
)
def test_only_baseline_h264_without_b_frames_may_go_out_as_it_is(
    tmp_path: Path, options: dict[str, str], unfit: str | None
) -> None:
    clip = stamped_clip(tmp_path / "camera.mp4", CAMERA_FPS, "H264", options=options)
    with av.open(str(clip)) as container:
        why = unfit_for_passthrough(container.streams.video[0].codec_context)
    assert why is None if unfit is None else why is not None and why.startswith(unfit)
