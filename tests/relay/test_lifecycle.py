"""Sessions end cleanly: a vanished clinic goes offline, and join/leave cycles leak nothing."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from signaling.db.store import Consultation
from signaling.keys import RELAY, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.peers import publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """100 join/leave cycles of one link within seconds: far faster than any page reconnects,
    so past the session-offer limits (tests/signaling/test_limits.py tests those)."""
    return replace(
        settings, session_limit_per_identity=(200, 1.0), session_limit_per_address=(200, 1.0)
    )


async def next_feed_event(ws, state: str, timeout: float = 10) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await ws.receive_json(timeout=deadline - time.monotonic())
        if message.get("type") == "feed" and message.get("state") == state:
            return message
    raise AssertionError(f"no feed {state} event")


async def test_a_clinic_that_vanishes_without_goodbye_is_shown_offline_within_seconds(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("surgeon", cid)))
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)) as (pc, _):
        live = await next_feed_event(ws, "live")
        assert live["feed"] == "endoscope"
        # The clinic's network dies: media stops, no DELETE, no DTLS close.
        for transceiver in pc.getTransceivers():
            transceiver.sender.replaceTrack(None)
        stopped = time.monotonic()
        offline = await next_feed_event(ws, "offline")
        assert offline["feed"] == "endoscope"
        assert offline["reason"] == "lost"  # a crash, not a Stop: the pages say "reconnecting"
        assert time.monotonic() - stopped < 5
    await ws.close()


async def test_a_clinic_that_deletes_its_session_is_shown_as_ended(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("surgeon", cid)))
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        await next_feed_event(ws, "live")
    # Leaving the block DELETEs the WHIP session, as the clinic page's Stop does.
    offline = await next_feed_event(ws, "offline")
    assert offline["reason"] == "ended"
    await ws.close()


def media_threads() -> int:
    """Threads other than the default executor's pool (bounded by design, grows lazily)."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def test_hundred_viewer_join_leave_cycles_release_every_peer_task_and_thread(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    await client.app[STORE].set_recording_enabled(cid, False)  # viewers only: no recorder taps
    endpoint = url(client, f"/whep/{cid}")
    token = make_token("surgeon", cid)
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        async with viewer(endpoint, token) as (_, _, seen):  # warm up: first frames flow
            assert await wait_until(lambda: seen.counters, timeout=10)
        await asyncio.sleep(0.5)
        threads, tasks = media_threads(), len(asyncio.all_tasks())
        router = client.app[RELAY].find(cid)
        assert router is not None
        producers = [p for f in router.feeds.values() for p in f.producers.values()]
        taps = [len(p.consumers) for p in producers]  # the guards' decoder, while the feed is live
        for _ in range(100):
            async with viewer(endpoint, token, kinds=("video",)) as (pc, _, _):
                assert await wait_until(lambda pc=pc: pc.connectionState == "connected", 10)
        del pc  # the test's own reference to the last viewer connection
        assert await wait_until(lambda: router.viewer_count() == 0, timeout=5)
        assert [len(p.consumers) for p in producers] == taps
        assert await wait_until(lambda: media_threads() <= threads, timeout=5), media_threads()
        assert await wait_until(lambda: len(asyncio.all_tasks()) <= tasks + 2, timeout=5)
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]
        assert len(alive) <= 2  # the clinic's and the server's publisher connection
