"""The fragmented MP4 of an H.264 feed says in its header (avcC) what the stream is: the profile,
level and picture size of the feed's own SPS, as Debian's ffprobe reads them, and every stamped
frame still decodes. Real peers: the clinic sends access units encoded before the session (aiortc
packs them as they are, so a tower's High profile reaches the relay as such), the relay forwards
them, the recorder writes them."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from recorder.bitstream import h264_profile_level
from signaling.keys import STORE
from tests.conftest import MakeToken
from tests.replay_support import FPS, encoded_h264

from .media import EncodedTrack, decode, ffprobe
from .test_recorder import record_session

SECONDS = 3.0
ENCODED_S = 9
"Enough for the session to start (up to a few seconds on a busy machine) and then record."


@pytest.mark.parametrize(
    ("size", "profile", "separate", "named"),
    [
        pytest.param((1280, 720), "high", False, "High", id="high-720p"),
        pytest.param((640, 360), "baseline", False, "Constrained Baseline", id="baseline-360p"),
        pytest.param(
            (640, 360), "baseline", True, "Constrained Baseline", id="parameter-sets-apart"
        ),
    ],
)
async def test_the_mp4_header_states_the_feeds_own_profile_level_and_size(
    client: TestClient,
    make_token: MakeToken,
    size: tuple[int, int],
    profile: str,
    separate: bool,
    named: str,
) -> None:
    consultation = await client.app[STORE].create(
        "h264", "H264", consent_by="Dr. A", recorded_by="t"
    )
    units = await asyncio.to_thread(encoded_h264, ENCODED_S * FPS, size, profile)
    said = h264_profile_level(units[0][0])
    assert said is not None
    track = EncodedTrack(units, FPS, separate_parameter_sets=separate)
    manifest, path, _ = await record_session(
        client, consultation.id, make_token, SECONDS, video=track
    )

    video = ffprobe(path)["streams"][0]
    print(path.name, video["profile"], video["level"], video["width"], video["height"])
    assert (video["codec_name"], video["profile"], video["level"]) == ("h264", named, said[1])
    assert (video["width"], video["height"]) == size
    segment = manifest.segments[0]
    assert (segment.width, segment.height) == size

    decoded = decode(path)
    assert decoded.errors == 0 and decoded.sizes == {size}
    first = decoded.counters[0]
    assert first % FPS == 0, "the file starts at a keyframe"
    assert decoded.counters == list(range(first, first + len(decoded.counters)))
    assert len(decoded.counters) >= FPS // 2  # source-side loss on a busy box may cut it short
    assert segment.frames == len(decoded.counters), "every sample is a picture"
