"""``endolink publish FILE --loop`` plays any file at its own rate, forever: H.264 and VP8, MP4,
WebM and Matroska, with and without audio, odd frame rates. Each clip is made by the test (the
test pattern's stamped frames, counter = frame index); an aiortc viewer on a real server measures
the rate the frames arrive at over several passes of the clip."""

from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import pytest
from aiohttp.test_utils import TestClient

from client.clock import AUDIO_RATE
from client.options import SourceOptions
from client.source import MediaSource
from client.whip import publish_source
from signaling.keys import STORE
from tests.clips import stamped_clip
from tests.conftest import MakeToken
from tests.peers import viewer, wait_until
from tests.relay.test_forwarding_flow import url

pytestmark = pytest.mark.timeout(90)

CLIP_FRAMES = 30
PASSES = 3
SLOW = 0.75
"Received rate at least this share of the file's (the viewer decodes on a shared 2-core box)."
FAST = 1.15
"At most this share: a pass sent unpaced arrives at hundreds of frames per second."

CLIPS = [
    pytest.param("VP8", ".webm", Fraction(30), False, id="vp8-webm-30"),
    pytest.param("H264", ".mp4", Fraction(30), False, id="h264-mp4-30"),
    pytest.param("H264", ".mkv", Fraction(25), True, id="h264-mkv-25-audio"),
    pytest.param("VP8", ".webm", Fraction(30000, 1001), True, id="vp8-webm-29.97-audio"),
]


@pytest.mark.parametrize(("codec", "suffix", "fps", "audio"), CLIPS)
async def test_a_looped_file_arrives_at_its_own_rate_pass_after_pass(
    client: TestClient,
    make_token: MakeToken,
    tmp_path: Path,
    codec: str,
    suffix: str,
    fps: Fraction,
    audio: bool,
) -> None:
    consultation = await client.app[STORE].create(
        title="Loop", video_codec=codec, consent_by="Dr. Bat", recorded_by="admin-test"
    )
    cid = consultation.id
    clip = stamped_clip(tmp_path / f"clip{suffix}", CLIP_FRAMES, codec, fps, audio)
    arrivals: list[float] = []
    timestamps: list[int] = []

    def on_video(frame: av.VideoFrame) -> None:
        arrivals.append(time.monotonic())
        timestamps.append(frame.pts)

    async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen):
        seen.on_video.append(on_video)
        publishing = asyncio.ensure_future(
            publish_source(
                url(client, f"/whip/{cid}"),
                make_token("clinic", cid),
                str(clip),
                SourceOptions(loop=True),
            )
        )
        try:

            def passes() -> int:  # the counter starts again at each pass
                return sum(b < a for a, b in pairwise(seen.counters))

            assert await wait_until(lambda: passes() >= PASSES or publishing.done(), 40)
            assert not publishing.done(), "the publisher hung up at the end of the clip"
        finally:
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
    received_fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    print(f"{codec} {suffix} {float(fps):.2f} fps audio={audio}: received {received_fps:.1f} fps")
    assert SLOW * fps <= received_fps <= FAST * fps
    assert timestamps == sorted(set(timestamps)), "timestamps must keep growing across passes"


@pytest.mark.parametrize(("codec", "suffix", "fps", "audio"), CLIPS)
async def test_a_looped_source_keeps_its_timestamps_and_schedule_across_passes(
    tmp_path: Path, codec: str, suffix: str, fps: Fraction, audio: bool
) -> None:
    clip = stamped_clip(tmp_path / f"clip{suffix}", CLIP_FRAMES, codec, fps, audio)
    source = MediaSource(str(clip), loop=True)
    assert source.video is not None and (source.audio is not None) == audio
    video: list[float] = []
    samples: list[tuple[int, int]] = []
    started = time.monotonic()
    try:
        while len(video) < PASSES * CLIP_FRAMES:
            frame = await asyncio.wait_for(source.video.recv(), 5)
            assert isinstance(frame, av.VideoFrame) and frame.time is not None
            video.append(frame.time)
            while source.audio is not None and not source.audio.queue.empty():
                chunk = await source.audio.recv()
                assert isinstance(chunk, av.AudioFrame) and chunk.pts is not None
                samples.append((chunk.pts, chunk.samples))
    finally:
        source.video.stop()
    elapsed = time.monotonic() - started
    period = 1 / float(fps)
    steps = [b - a for a, b in pairwise(video)]
    # Between passes: the pass lasts as long as its longer stream (an audio track a few
    # milliseconds longer than the video, as encoders pad it, delays the next pass that much).
    boundaries = steps[CLIP_FRAMES - 1 :: CLIP_FRAMES]
    within = [step for i, step in enumerate(steps) if i % CLIP_FRAMES != CLIP_FRAMES - 1]
    assert all(abs(step - period) < 0.002 for step in within), "one frame period"
    assert all(period - 0.002 < step < period + 0.05 for step in boundaries), boundaries
    assert abs(elapsed - video[-1]) < 0.25, f"paced: {elapsed:.2f} s for {video[-1]:.2f} s"
    if audio:
        assert samples and all(b[0] >= a[0] + a[1] for a, b in pairwise(samples))
        assert samples[-1][0] / AUDIO_RATE > (PASSES - 1) * CLIP_FRAMES * period
