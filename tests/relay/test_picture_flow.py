"""The picture-quality guard with real peer connections: an aiortc publisher sends the 720p30
test pattern sharp, then blurred, then sharp again; a surgeon's WebSocket is told ``picture``:
good (as the guard begins, and in a late joiner's ``welcome``), then blurred, then good. The
measures run in the shared decode thread; the event loop only judges. Prints the guard's and the
decoder's CPU."""

from __future__ import annotations

import dataclasses
import time

import av
import cv2
import pytest
from aiohttp.test_utils import TestClient

from client.testpattern import TestPatternTrack
from relay import FeedName, FeedState
from relay.picture_guard import PictureGuard
from signaling.db.store import Consultation
from signaling.keys import PICTURES, RELAY
from signaling.settings import Settings
from tests.conftest import MakeToken
from tests.peers import publisher, wait_until
from tests.signaling.test_websocket import join, next_of

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """``ENDOLINK_PICTURE_GUARD`` as the test asks (``indirect`` parameter), on by default."""
    return dataclasses.replace(settings, picture_guard=getattr(request, "param", True))


class BlurrablePattern(TestPatternTrack):
    """The test pattern, Gaussian-blurred while ``blurred`` (a fogged lens)."""

    blurred = False

    def frame(self, counter: int, wall_ms: int) -> av.VideoFrame:
        frame = super().frame(counter, wall_ms)
        if not self.blurred:
            return frame
        bgr = cv2.GaussianBlur(frame.to_ndarray(format="bgr24"), (0, 0), 6)
        return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")


async def test_the_picture_message_says_good_then_blurred_then_good(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    track = BlurrablePattern()
    cid = consultation.id
    token = make_token("surgeon", cid)
    ws, welcome = await join(client, cid, token)
    assert welcome["picture"] is None  # nothing live to judge
    whip = str(client.make_url(f"/whip/{cid}"))
    async with publisher(whip, make_token("clinic", cid), audio=False, video_track=track):
        assert await wait_until(lambda: cid in client.app[PICTURES].guards, 10.0)
        first = await next_of(ws, "picture")  # the guard began: pages show their badge
        assert first == {"type": "picture", "v": 1, "level": "good", "hints": [], "focus": 1.0}
        guard: PictureGuard = client.app[PICTURES].guards[cid]
        decoded = client.app[RELAY].find(cid).decoded
        assert await wait_until(lambda: guard.samples > 0, 10.0)
        late, late_welcome = await join(client, cid, token)
        assert late_welcome["picture"]["type"] == "picture"
        assert late_welcome["picture"]["level"] == "good" and late_welcome["picture"]["hints"] == []
        before = decoded.cpu_s, guard.cpu_s, guard.samples, time.monotonic(), decoded.frames_decoded
        await late.close()

        track.blurred = True
        blurred = await next_of(ws, "picture", timeout=10.0)
        assert blurred["hints"] == ["blurred"] and blurred["level"] in ("fair", "poor")
        assert blurred["focus"] < 0.3
        track.blurred = False
        sharp = await next_of(ws, "picture", timeout=10.0)
        while sharp["hints"]:  # the level may ease (poor, then fair) on the way back
            sharp = await next_of(ws, "picture", timeout=10.0)
        assert sharp["level"] == "good"
        elapsed = time.monotonic() - before[3]
        decoding = 100 * (decoded.cpu_s - before[0]) / elapsed
        guarding = 100 * (guard.cpu_s - before[1]) / elapsed
        per_sample = 1000 * (guard.cpu_s - before[1]) / max(1, guard.samples - before[2])
        fps = (decoded.frames_decoded - before[4]) / elapsed
        samples = (guard.samples - before[2]) / elapsed
        print(
            f"\n720p at {fps:.0f} fps, {samples:.1f} samples/s, over {elapsed:.1f} s: "
            f"decode thread {decoding:.1f} % of a core (shared; the guard included), "
            f"the guard {guarding:.2f} % ({per_sample:.2f} ms a sample)"
        )
    await ws.close()


@pytest.mark.parametrize("settings", [False], indirect=True)
async def test_with_the_guard_off_nothing_is_sampled(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    whip = str(client.make_url(f"/whip/{cid}"))
    async with publisher(whip, make_token("clinic", cid), audio=False, size=(640, 360)):
        router = client.app[RELAY].find(cid)
        assert router is not None
        endoscope = router.feeds[FeedName.ENDOSCOPE]
        assert await wait_until(lambda: endoscope.state is FeedState.LIVE, 10.0)
        ws, welcome = await join(client, cid, make_token("surgeon", cid))
        assert welcome["feeds"]["endoscope"]["state"] == "live"
        assert welcome["picture"] is None
        # nothing of the picture guard samples (the privacy guard may keep the decoder running)
        assert not client.app[PICTURES].guards
        assert not [s for s in router.decoded.samplings if s.label.endswith(" picture")]
        await ws.close()
