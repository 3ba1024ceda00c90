"""End to end with real peer connections: a clinic publishes the synthetic endoscopy sequence with
the scope pulled out into the room for a while (mucosa → room → mucosa); the privacy guard, on the
relay's shared decoder, tells the consultation and the recording's manifest gets the span within
a second of the truth; the segment file is as recorded."""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import time
from dataclasses import replace
from typing import Any

import av
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from aiortc.mediastreams import VideoStreamTrack

from client.endoscopy import SyntheticEndoscopy
from relay import FeedName, FeedState
from relay.privacy import PrivacyChange
from signaling.app import create_app
from signaling.keys import PRIVACY, RELAY, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken
from tests.peers import wait_until
from tests.signaling.test_websocket import join

from .media import publishing
from .test_recorder import record_session

ROOM = (2.0, 4.5)
"Seconds of the published sequence filmed in the room (the truth)."
SIZE = (320, 180)
FPS = 30


class SceneTrack(VideoStreamTrack):
    """The synthetic sequence at its own pace, with the room over ``ROOM``."""

    def __init__(self) -> None:
        super().__init__()
        self.sequence = SyntheticEndoscopy(*SIZE, fps=FPS, seconds=7.0, seed=2, room_spans=[ROOM])
        self.counter = 0
        self.start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.start is None:
            self.start = time.monotonic()
        delay = self.start + self.counter / FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        index = min(self.counter, self.sequence.count - 1)
        bgr = await asyncio.to_thread(lambda: self.sequence.frame(index).bgr)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts = int(self.counter * 90000 / FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.counter += 1
        return frame


async def _listen(ws: ClientWebSocketResponse, heard: list[dict[str, object]]) -> None:
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            heard.append(json.loads(message.data))


async def test_a_span_in_the_room_lands_in_the_manifest_and_the_pages_are_told(
    client: TestClient, make_token: MakeToken
) -> None:
    consultation = await client.app[STORE].create(
        "privacy", "VP8", consent_by="Dr. A", recorded_by="t"
    )
    cid = consultation.id
    watch = client.app[PRIVACY]
    told: list[bool] = []
    cpu: list[tuple[float, int]] = []
    original = watch.on_change

    def on_change(change: PrivacyChange) -> None:
        told.append(change.out_of_body)
        guard = watch.guard(cid)
        if guard is not None:
            cpu.append((guard.cpu_s, guard.samples))
        original(change)

    watch.on_change = on_change
    surgeon, welcome = await join(client, cid, make_token("surgeon", cid))
    assert welcome["out_of_body"] is False
    heard: list[dict[str, object]] = []
    listening = asyncio.ensure_future(_listen(surgeon, heard))
    try:
        manifest, segment, _ = await record_session(
            client, cid, make_token, seconds=6.5, size=SIZE, video=SceneTrack()
        )
    finally:
        listening.cancel()
        await surgeon.close()
    assert told[:2] == [True, False], told
    privacy = [m for m in heard if m["type"] == "privacy"]
    assert [m["out_of_body"] for m in privacy][:2] == [True, False], privacy
    (span,) = manifest.out_of_body
    assert span.end_s is not None
    # The relay's clock starts at the publisher's first frame; the recording at its first
    # keyframe in the file (video_pts_start): the truth on the recording clock.
    first = manifest.segments[0].video_pts_start
    assert first is not None
    start, end = (t - first / 90_000 for t in ROOM)
    print(f"span {span.start_s:.2f}–{span.end_s:.2f} s, truth {start:.2f}–{end:.2f} s")
    # backdated by up to one sample (0.5 s) at the start; within a second at either end
    assert start - 1.0 <= span.start_s <= start + 0.25
    assert abs(span.end_s - end) <= 1.0
    cpu_s, samples = cpu[-1]
    print(f"guard: {samples} samples, {1000 * cpu_s / samples:.1f} ms of CPU each")
    assert samples >= 8 and cpu_s / samples < 0.05
    recorded = next(s for s in manifest.segments if s.file == segment.name)
    assert hashlib.sha256(segment.read_bytes()).hexdigest() == recorded.sha256


async def test_with_the_guard_switched_off_no_privacy_sampler_runs(
    aiohttp_client: Any, settings: Settings, make_token: MakeToken
) -> None:
    assert Settings.from_env({"ENDOLINK_PRIVACY_GUARD": "off"}).privacy_guard is False
    client = await aiohttp_client(create_app(replace(settings, privacy_guard=False)))
    consultation = await client.app[STORE].create("off", "VP8", consent_by="A", recorded_by="t")
    cid = consultation.id
    endpoint = str(client.make_url(f"/whip/{cid}"))
    async with publishing(endpoint, make_token("clinic", cid), video=SceneTrack(), size=SIZE):
        router = client.app[RELAY].find(cid)
        assert router is not None
        assert await wait_until(
            lambda: router.feeds[FeedName.ENDOSCOPE].state is FeedState.LIVE, 10
        )
        await asyncio.sleep(1.0)
        assert client.app[PRIVACY].guard(cid) is None
        # other samplers (anchored marks, the picture guard) may decode: none is the privacy guard's
        assert not [s for s in router.decoded.samplings if s.label.startswith("privacy")]
