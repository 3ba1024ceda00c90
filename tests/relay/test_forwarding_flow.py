"""End to end through the real server: an aiortc clinic publishes a stamped 720p stream over WHIP,
aiortc surgeons play it over WHEP, and the tests read the stamps out of the decoded frames."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from signaling.store import Consultation
from tests.conftest import MakeToken
from tests.peers import publisher, viewer, wait_until


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


async def test_two_viewers_receive_every_frame_in_order_at_full_rate(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, first),
        viewer(url(client, f"/whep/{cid}"), make_token("observer", cid)) as (_, _, second),
    ):
        assert await wait_until(lambda: first.counters and second.counters, timeout=10)
        start = time.monotonic()
        counts = (len(first.counters), len(second.counters))
        assert await wait_until(lambda: time.monotonic() - start >= 5.0, timeout=6)
        for received, before in zip((first, second), counts, strict=True):
            fps = (len(received.counters) - before) / (time.monotonic() - start)
            assert fps >= 25, f"viewer got {fps:.1f} fps"
            steps = [b - a for a, b in zip(received.counters, received.counters[1:], strict=False)]
            assert all(step >= 1 for step in steps), "frames arrived out of order or repeated"
            assert received.sizes == {(1280, 720)}
            assert received.audio_frames > 100 and received.audio_peak > 1000

