"""A Router exists while its consultation is in use: made by media, closed once idle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from relay import Relay
from signaling.app import create_app
from signaling.db.store import Consultation
from signaling.keys import RELAY, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer
from tests.peers import publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url

IDLE_S = 0.3


@pytest.fixture
async def client(aiohttp_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings.with_overrides(router_idle_s=IDLE_S)))


@pytest.fixture
async def quiet(client: TestClient, consultation: Consultation) -> Consultation:
    """No recorder taps: only peers and WebSocket participants keep the Router."""
    await client.app[STORE].set_recording_enabled(consultation.id, False)
    return consultation


async def stays(relay: Relay, consultation: Consultation) -> bool:
    """The Router is still there after several idle periods."""
    router = relay.find(consultation.id)
    await asyncio.sleep(IDLE_S * 4)
    return router is not None and relay.find(consultation.id) is router and not router.closed


async def test_a_websocket_join_alone_makes_no_router(
    client: TestClient, quiet: Consultation, make_token: MakeToken
) -> None:
    cid = quiet.id
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("surgeon", cid)))
    welcome = await ws.receive_json()
    assert welcome["feeds"] == {
        "endoscope": {"state": "offline", "identity": None, "reason": None},
        "talkback": {"state": "offline", "identity": None, "reason": None},
    }
    await ws.send_json({"type": "pointer", "x": 0.5, "y": 0.5})
    await ws.send_json({"type": "ping"})
    while (await ws.receive_json())["type"] != "pong":
        pass
    assert client.app[RELAY].find(cid) is None
    await ws.close()


async def test_a_router_made_by_publishing_is_closed_when_everyone_left(
    client: TestClient, quiet: Consultation, make_token: MakeToken
) -> None:
    cid, relay = quiet.id, client.app[RELAY]
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        router = relay.find(cid)
        assert router is not None
        assert await stays(relay, quiet)  # the publisher keeps it
    assert await wait_until(lambda: relay.find(cid) is None, timeout=5)
    assert router.closed
    # the Router is let go first, then closed (its peers, then its feeds): no watchdog outlives it
    assert await wait_until(
        lambda: all(feed._watchdog is None for feed in router.feeds.values()), timeout=5
    )


async def test_a_viewer_keeps_the_router_without_a_publisher(
    client: TestClient, quiet: Consultation, make_token: MakeToken
) -> None:
    cid, relay = quiet.id, client.app[RELAY]
    async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)):
        assert await stays(relay, quiet)
    assert await wait_until(lambda: relay.find(cid) is None, timeout=5)


async def test_a_websocket_participant_keeps_the_router_and_its_marks(
    client: TestClient, quiet: Consultation, make_token: MakeToken
) -> None:
    cid, relay = quiet.id, client.app[RELAY]
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("surgeon", cid)))
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)):
        pass  # media made the Router and left
    await ws.send_json({"type": "freeze", "frozen": True})
    assert await stays(relay, quiet)
    router = relay.find(cid)
    assert router is not None and router.board.freeze is not None
    await ws.close()
    assert await wait_until(lambda: relay.find(cid) is None, timeout=5)
