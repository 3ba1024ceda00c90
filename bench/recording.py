"""Recording cost and crash loss.

``cpu``: the real ``recorder.Recorder`` records a live 720p30 stream (~1.5 Mbit/s, keyframe every
2 s) plus two Opus tracks, fed in real time into a real ``relay.Router``'s Producers exactly
where the forwarding tap feeds them (``Producer.on_frame`` on the event loop). Reports the CPU
time of the writer thread (muxing, writing, fsync) and of the event loop's share (taps, timeline,
queueing: loop CPU with the recorder minus a run that feeds the same stream without it), per
minute of media and as % of one core.

``crash``: ``endolink serve`` in a subprocess, an aiortc clinic publishes the 720p test pattern,
the server gets SIGKILL 4 s after its segment file appeared; the loss is the wall-clock time of
the kill minus the capture stamp of the last frame that survived in the file.

    python -m bench.recording cpu [--seconds 60] [--codec VP8|H264]
    python -m bench.recording crash [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from bench.common import free_port
from client.testpattern import TestPatternTrack, read_stamp
from client.whip import WhipClient
from recorder.config import RecorderConfig
from recorder.consultation import ConsultationInfo
from recorder.index import RecordingIndex
from recorder.manifest import SegmentStatus
from recorder.recorder import Recorder
from relay import FeedName, Router
from signaling.auth.grants import Grant, Role
from signaling.auth.secret import token_issuer
from signaling.db.store import DB_FILENAME, ConsultationStore
from signaling.settings import Settings

WIDTH, HEIGHT, FPS = 1280, 720, 30
SOURCE_SECONDS = 10
KEYFRAME_S = 2
BITRATE = 1_500_000
REPO_ROOT = Path(__file__).resolve().parent.parent


# -- cpu -----------------------------------------------------------------------------------------


def encoded_video(codec: str) -> list[bytes]:
    """10 s of the 720p30 test pattern at ~1.5 Mbit/s, a keyframe every 2 s (Annex-B H.264)."""
    pattern = TestPatternTrack(WIDTH, HEIGHT)
    encoder = av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.bit_rate = BITRATE
    if codec == "VP8":
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        encoder.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "baseline"}
    frames: list[bytes] = []
    for n in range(SOURCE_SECONDS * FPS):
        frame = pattern.frame(n, 0)
        frame.pts = n
        if n % (KEYFRAME_S * FPS) == 0:
            frame.pict_type = av.video.frame.PictureType.I
        frames += [bytes(p) for p in encoder.encode(frame)]
    return frames


def encoded_opus() -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "s16"
    encoder.bit_rate = 32000
    packets: list[bytes] = []
    for n in range(SOURCE_SECONDS * 50 + 2):
        t = (np.arange(960) + n * 960) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, n * 960
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets[: SOURCE_SECONDS * 50]


async def feed(router: Router, video: list[bytes], audio: list[bytes], seconds: float) -> None:
    """Push the looped streams into the Producers at their real-time pace."""
    endoscope = router.feeds[FeedName.ENDOSCOPE].producers
    talkback = router.feeds[FeedName.TALKBACK].producers["audio"]
    events = [(n / FPS, 0, n) for n in range(int(seconds * FPS))]
    events += [(n / 50, 1, n) for n in range(int(seconds * 50))]
    events.sort()
    start = time.monotonic()
    for at, kind, n in events:
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if kind == 0:
            endoscope["video"].on_frame(video[n % len(video)], n * 3000)
        else:
            endoscope["audio"].on_frame(audio[n % len(audio)], n * 960)
            talkback.on_frame(audio[(n + 7) % len(audio)], n * 960)


def new_router(codec: str) -> Router:
    return Router(
        "bench",
        codec,
        lambda: RTCConfiguration(iceServers=[]),
        None,
        1,
        3.0,
        4.0,
        (2000, 600, 4000),
        lambda feed: None,
    )


async def cpu(codec: str, seconds: float) -> None:
    print(f"encoding {SOURCE_SECONDS} s of 720p30 {codec} and Opus...", flush=True)
    video, audio = encoded_video(codec), encoded_opus()
    kbps = sum(map(len, video)) * 8 / SOURCE_SECONDS / 1000
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = ConsultationStore(data / DB_FILENAME)
        consultation = await store.create("bench", codec, consent_by="bench", recorded_by="bench")
        await store.close()
        index = RecordingIndex(data / DB_FILENAME)

        print(f"feeding {seconds:g} s without the recorder (baseline)...", flush=True)
        router = new_router(codec)
        loop_before = time.thread_time()
        await feed(router, video, audio, seconds)
        baseline = time.thread_time() - loop_before
        await router.close()

        print(f"feeding {seconds:g} s into the recorder...", flush=True)
        router = new_router(codec)
        info = ConsultationInfo(consultation.id, "bench", codec, True, None)
        recorder = Recorder(info, data, index, RecorderConfig(), lambda r, m: print("ERROR", m))
        await recorder.open()
        await recorder.start_segment(router, "bench")
        loop_before, process_before = time.thread_time(), time.process_time()
        await feed(router, video, audio, seconds)
        loop_s = time.thread_time() - loop_before
        process_s = time.process_time() - process_before
        segment = await recorder.end_segment()
        await recorder.finish("shutdown")
        await router.close()
        await index.close()
        assert segment is not None and segment.status is SegmentStatus.CLOSED

    per_min = 60 / seconds
    writer = segment.writer_cpu_s
    loop_share = max(0.0, loop_s - baseline)
    print(f"\n{codec} 720p30 at {kbps:.0f} kbit/s + 2 Opus tracks, {seconds:g} s, real time\n")
    print("| | CPU s per minute of media | % of one core |")
    print("|---|---|---|")
    for name, value in (
        ("writer thread (mux, write, fsync)", writer),
        ("event loop share (taps, timeline, queue)", loop_share),
        ("recorder total", writer + loop_share),
        ("whole process during the run (incl. feeding)", process_s),
    ):
        print(f"| {name} | {value * per_min:.2f} | {value / seconds * 100:.2f} |")
    print(
        f"\nfile: {segment.bytes / 1e6:.1f} MB, {segment.duration_s:.2f} s of media "
        f"({segment.frames} frames, dropped {segment.dropped}), hashing excluded above"
    )


# -- crash ---------------------------------------------------------------------------------------


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        self._start = self._start or time.monotonic()
        delay = self._start + self._n * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pcm = (np.sin(np.arange(960) / 8) * 6000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self._n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


def last_stamp_s(path: Path) -> tuple[float, float]:
    """(seconds of video that decode, wall-clock stamp of the last frame) of a segment file."""
    times, stamps = [], []
    with av.open(str(path)) as container:
        with contextlib.suppress(av.FFmpegError):
            for frame in container.decode(video=0):
                times.append(float(frame.time))
                stamps.append(read_stamp(frame)[1])
    wrap = 1 << 40
    last = stamps[-1] + round((time.time() * 1000 - stamps[-1]) / wrap) * wrap
    return times[-1] - times[0] + 1 / FPS, last / 1000


async def crash_once(workdir: Path, wait_s: float) -> tuple[float, float]:
    data = workdir / "data"
    store = ConsultationStore(data / DB_FILENAME)
    consultation = await store.create("crash", "VP8", consent_by="bench", recorded_by="bench")
    await store.close()
    token = token_issuer(Settings(data_dir=data)).issue(
        Grant.for_role(Role.CLINIC, consultation.id, "clinic-bench", 600)
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENDOLINK_")}
    env.update(PYTHONPATH=str(REPO_ROOT), ENDOLINK_ICE_HOST_ADDRESSES="127.0.0.1")
    command = [sys.executable, "-m", "signaling", "serve", "--port", str(port)]
    with (workdir / "server.log").open("w") as log:
        server = subprocess.Popen(
            [*command, "--data-dir", str(data)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.1)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(TestPatternTrack(), direction="sendonly")
        pc.addTransceiver(Tone(), direction="sendonly")
        client = WhipClient(f"http://127.0.0.1:{port}/whip/{consultation.id}", token)
        await client.connect(pc)
        files: list[Path] = []
        while not files:
            files = [f for f in data.glob("recordings/*/segment-001.webm") if f.stat().st_size]
            await asyncio.sleep(0.05)
        await asyncio.sleep(wait_s)
        killed_at = time.time()
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        await pc.close()
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(10)
    playable, last = last_stamp_s(files[0])
    return playable, killed_at - last


async def crash(runs: int, wait_s: float) -> None:
    results = []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            playable, loss = await crash_once(Path(tmp), wait_s)
        results.append((playable, loss))
        print(f"run {run + 1}: {playable:.2f} s playable, {loss:.2f} s lost", flush=True)
    losses = sorted(loss for _, loss in results)
    print(
        f"\nkill -9 {wait_s:g} s into the segment, {runs} runs: loss min {losses[0]:.2f} s, "
        f"median {statistics.median(losses):.2f} s, max {losses[-1]:.2f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    cpu_mode = modes.add_parser("cpu")
    cpu_mode.add_argument("--seconds", type=float, default=60.0)
    cpu_mode.add_argument("--codec", choices=("VP8", "H264"), default="VP8")
    crash_mode = modes.add_parser("crash")
    crash_mode.add_argument("--runs", type=int, default=5)
    crash_mode.add_argument("--wait", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.mode == "cpu":
        asyncio.run(cpu(args.codec, args.seconds))
    else:
        asyncio.run(crash(args.runs, args.wait))


if __name__ == "__main__":
    main()
