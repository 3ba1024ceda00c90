"""A WebSocket bridged from a node that does not own the consultation to the one that does:
frames both ways, close codes both ways, 1012 when the owner cannot be reached or dies, the
client's address for the owner — with real sockets on 127.0.0.1 and the real app as owner."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from signaling.cluster.bridge import UNREACHABLE, bridge, owner_ws_url
from signaling.db.store import Consultation
from signaling.http.client_address import TRUSTED_PROXIES, client_address, trusted_networks
from signaling.ws.frames import HEARTBEAT_S
from signaling.ws.hub import Hub
from tests.conftest import MakeToken

WAIT_S = 5.0
"Every wait is bounded: a bridge that hangs fails the test instead of stalling it."
CID = "consultAbc12"

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Owner:
    """A small stand-in owner: echoes frames, closes or crashes on command, and records what it
    saw (headers of each upgrade, the close code and reason each socket ended with)."""

    upgrades: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)
    closes: asyncio.Queue[tuple[int | None, str]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen = {**request.headers, "path_qs": request.path_qs, "client": client_address(request)}
        self.upgrades.put_nowait(seen)
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is not WSMsgType.TEXT:
                reason = msg.extra if msg.type is WSMsgType.CLOSE else ""
                break
            elif msg.data.startswith("close "):
                _, code, reason = msg.data.split(" ", 2)
                await ws.close(code=int(code), message=reason.encode())
            elif msg.data == "crash":  # the node dies: no close frame, the TCP link just ends
                assert request.transport is not None
                request.transport.abort()
            else:
                await ws.send_str(msg.data)
        self.closes.put_nowait((ws.close_code, reason))
        return ws


@dataclass
class Door:
    """The node a page landed on: ``/ws/{cid}`` bridged to ``owner_url``."""

    server: TestServer
    hub: Hub
    returned: asyncio.Queue[None]
    pages: aiohttp.ClientSession
    "The browsers' side."

    async def connect(self, path: str = f"/ws/{CID}", **kwargs: Any) -> ClientWebSocketResponse:
        return await self.pages.ws_connect(self.server.make_url(path), **kwargs)

    async def finished(self) -> None:
        """The bridge returned, and none of its tasks is left behind."""
        async with asyncio.timeout(WAIT_S):
            await self.returned.get()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bridge ")]
        assert self.hub.sockets == 0


@pytest.fixture
async def make_door(aiohttp_server: ServerFactory) -> AsyncIterator[Callable[..., Awaitable[Door]]]:
    async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as pages:

        async def make(owner_url: str, **kwargs: Any) -> Door:
            hub, returned = Hub(), asyncio.Queue[None]()

            async def handler(request: web.Request) -> web.WebSocketResponse:
                try:
                    return await bridge(request, owner_url, session, tracker=hub, **kwargs)
                finally:
                    returned.put_nowait(None)

            app = web.Application()
            app.router.add_get("/ws/{cid}", handler)
            return Door(await aiohttp_server(app), hub, returned, pages)

        yield make


@pytest.fixture
async def owner(aiohttp_server: ServerFactory) -> tuple[Owner, str]:
    owner = Owner()
    app = web.Application()
    app[TRUSTED_PROXIES] = trusted_networks(["127.0.0.1"])  # the door's address
    app.router.add_get("/ws/{cid}", owner.handle)
    server = await aiohttp_server(app)
    return owner, str(server.make_url("/"))


async def closed_with(ws: ClientWebSocketResponse, within: float = WAIT_S) -> tuple[int, str]:
    """The close code and reason the page sees, skipping messages still in flight."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                return ws.close_code or 0, ""


async def next_of(ws: ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next EndoLink message of type ``kind``, skipping others (presence, feed...)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, f"expected {kind}, got {msg.type} {msg.data!r}"
            message: dict[str, Any] = json.loads(msg.data)
            if message["type"] == kind:
                return message


async def test_frames_both_ways_and_the_client_for_the_owner(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]]
) -> None:
    echo, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect(
        f"/ws/{CID}?v=1",
        headers={"Authorization": "Bearer t0k", "X-Forwarded-For": "203.0.113.7"},
    )
    async with asyncio.timeout(WAIT_S):
        await ws.send_str('{"type":"auth"}')
        assert (await ws.receive()).data == '{"type":"auth"}'
        await ws.send_bytes(b"\x00\xffpicture")
        msg = await ws.receive()
        assert msg.type is WSMsgType.BINARY and msg.data == b"\x00\xffpicture"
        upgrade = await echo.upgrades.get()
    assert upgrade["path_qs"] == f"/ws/{CID}?v=1"
    assert upgrade["Authorization"] == "Bearer t0k"
    assert upgrade["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"  # the chain, then our peer
    assert upgrade["X-Forwarded-Proto"] == "http"
    # As the owner's limits and audit name it. Here the page shares the door's 127.0.0.1, so
    # its X-Forwarded-For stands in for a load balancer's; a real page's address is not trusted.
    assert upgrade["client"] == "203.0.113.7"
    await ws.close()
    await door.finished()


async def test_no_authorization_header_is_made_up(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]]
) -> None:
    echo, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect()
    async with asyncio.timeout(WAIT_S):
        upgrade = await echo.upgrades.get()
    assert "Authorization" not in upgrade and upgrade["X-Forwarded-For"] == "127.0.0.1"
    await ws.close()
    await door.finished()


async def test_the_owners_close_reaches_the_client(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]]
) -> None:
    _, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect()
    await ws.send_str("close 4401 token expired: open your invite link again")
    assert await closed_with(ws) == (4401, "token expired: open your invite link again")
    await door.finished()


@pytest.mark.parametrize("code", [WSCloseCode.OK, WSCloseCode.GOING_AWAY, 4000])
async def test_the_clients_close_reaches_the_owner(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]], code: int
) -> None:
    echo, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect()
    await ws.send_str("hello")  # the owner's side is up
    async with asyncio.timeout(WAIT_S):
        assert (await ws.receive()).data == "hello"
        await ws.close(code=code, message=b"page closed")
        assert await echo.closes.get() == (code, "page closed")
    await door.finished()


async def test_an_unreachable_owner_closes_the_client_with_1012(
    make_door: Callable[..., Awaitable[Door]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="signaling.cluster")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    door = await make_door(f"http://127.0.0.1:{port}")
    ws = await door.connect()
    assert await closed_with(ws) == (WSCloseCode.SERVICE_RESTART, UNREACHABLE)
    await door.finished()
    assert "owner not reachable" in caplog.text
    assert not [r for r in caplog.records if r.exc_info]  # a network failure, no traceback


async def test_an_owner_that_never_answers_times_out_with_1012(
    make_door: Callable[..., Awaitable[Door]],
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts the TCP connection, never answers the upgrade

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        door = await make_door(f"http://127.0.0.1:{port}", connect_timeout_s=0.3)
        ws = await door.connect()
        assert await closed_with(ws) == (WSCloseCode.SERVICE_RESTART, UNREACHABLE)
        await door.finished()
        assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_owner_that_dies_mid_session_closes_the_client_with_1012(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]]
) -> None:
    _, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect()
    await ws.send_str("crash")
    assert await closed_with(ws) == (WSCloseCode.SERVICE_RESTART, UNREACHABLE)
    await door.finished()


async def test_shutting_down_the_door_closes_both_sides(
    owner: tuple[Owner, str], make_door: Callable[..., Awaitable[Door]]
) -> None:
    """The door's hub closes the page (1001, it reconnects); the owner hears 1012, so the room
    holds the person as reconnecting rather than gone."""
    echo, owner_url = owner
    door = await make_door(owner_url)
    ws = await door.connect()
    await ws.send_str("hello")
    async with asyncio.timeout(WAIT_S):
        assert (await ws.receive()).data == "hello"
        assert door.hub.sockets == 1
        await door.hub.close_all(WSCloseCode.GOING_AWAY, "server restarting")
        assert await closed_with(ws) == (WSCloseCode.GOING_AWAY, "server restarting")
        code, _ = await echo.closes.get()
    assert code == WSCloseCode.SERVICE_RESTART
    await door.finished()


# The real app as owner: one room, whichever node a page landed on.


async def test_through_the_bridge_a_page_joins_the_owners_room(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    make_door: Callable[..., Awaitable[Door]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="signaling.cluster")
    cid = consultation.id
    door = await make_door(str(client.make_url("/")))
    surgeon = await client.ws_connect(
        f"/ws/{cid}", headers={"Authorization": f"Bearer {make_token('surgeon', cid)}"}
    )
    await next_of(surgeon, "welcome")
    clinic = await door.connect(f"/ws/{cid}")  # a browser: the token in its first message
    token = make_token("clinic", cid)
    await clinic.send_json({"type": "auth", "token": token, "name": "Ward 3"})
    welcome = await next_of(clinic, "welcome")
    assert welcome["you"]["role"] == "clinic" and welcome["you"]["name"] == "Ward 3"
    assert {p["role"] for p in welcome["participants"]} == {"surgeon", "clinic"}
    presence = await next_of(surgeon, "presence")
    assert {p["role"] for p in presence["participants"]} == {"surgeon", "clinic"}
    await surgeon.send_json({"type": "chat", "text": "Can you see the polyp?"})
    chat = await next_of(clinic, "chat")
    assert chat["text"] == "Can you see the polyp?"
    assert (await next_of(surgeon, "chat"))["text"] == "Can you see the polyp?"  # own, echoed
    await clinic.send_json({"type": "chat", "text": "Yes"})
    chat = await next_of(surgeon, "chat")
    assert chat["text"] == "Yes" and chat["name"] == "Ward 3"
    await clinic.close()
    await door.finished()
    await surgeon.close()
    bridge_log = "".join(r.getMessage() for r in caplog.records if r.name.startswith("signaling.c"))
    assert f"[consultation:{cid}] closing: 1000 to the client, 1000 to the owner" in bridge_log
    assert token not in caplog.text and "Ward 3" not in bridge_log and "polyp" not in bridge_log


async def test_the_owners_refusal_reaches_the_page_as_is(
    client: TestClient, consultation: Consultation, make_door: Callable[..., Awaitable[Door]]
) -> None:
    cid = consultation.id
    door = await make_door(str(client.make_url("/")))
    direct = await client.ws_connect(f"/ws/{cid}")
    await direct.send_json({"type": "auth", "token": "not-a-token"})
    bridged = await door.connect(f"/ws/{cid}")
    await bridged.send_json({"type": "auth", "token": "not-a-token"})
    code, reason = await closed_with(bridged)
    assert (code, reason) == await closed_with(direct)
    assert code == 4401 and reason
    await door.finished()


async def test_the_owner_node_crashing_sends_the_page_to_reconnect(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    make_door: Callable[..., Awaitable[Door]],
) -> None:
    cid = consultation.id
    door = await make_door(str(client.make_url("/")))
    ws = await door.connect(
        f"/ws/{cid}", headers={"Authorization": f"Bearer {make_token('surgeon', cid)}"}
    )
    await next_of(ws, "welcome")
    for connection in client.server.runner.server.connections:  # the node dies
        assert connection.transport is not None
        connection.transport.abort()
    assert await closed_with(ws) == (WSCloseCode.SERVICE_RESTART, UNREACHABLE)
    await door.finished()


async def test_the_owner_restarting_is_told_to_the_page(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    make_door: Callable[..., Awaitable[Door]],
) -> None:
    """A graceful stop of the owner: its farewell and its 1001 reach the page as they are."""
    cid = consultation.id
    door = await make_door(str(client.make_url("/")))
    ws = await door.connect(
        f"/ws/{cid}", headers={"Authorization": f"Bearer {make_token('surgeon', cid)}"}
    )
    await next_of(ws, "welcome")
    stopping = asyncio.create_task(client.server.close())
    await next_of(ws, "restarting")
    assert await closed_with(ws) == (WSCloseCode.GOING_AWAY, "server restarting")
    await door.finished()
    async with asyncio.timeout(WAIT_S):
        await stopping


def test_owner_urls() -> None:
    target = URL("/ws/abc?x=1%202")
    assert owner_ws_url("https://node-a.example:8443", target) == URL(
        "wss://node-a.example:8443/ws/abc?x=1%202"
    )
    assert str(owner_ws_url("http://10.0.0.2:8080/", target)) == "ws://10.0.0.2:8080/ws/abc?x=1%202"
    assert str(owner_ws_url("http://[::1]:8080", URL("/ws/abc"))) == "ws://[::1]:8080/ws/abc"
    with pytest.raises(ValueError):
        owner_ws_url("ftp://node-a.example", target)


async def test_an_owner_that_stops_answering_sends_the_page_to_reconnect(
    aiohttp_server: ServerFactory, make_door: Callable[..., Awaitable[Door]]
) -> None:
    """A frozen node or a partition: the TCP link stays open, the pings go unanswered (~3 s)."""
    release = asyncio.Event()

    async def frozen(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await release.wait()  # reads nothing, answers nothing
        return ws

    app = web.Application()
    app.router.add_get("/ws/{cid}", frozen)
    door = await make_door(str((await aiohttp_server(app)).make_url("/")))
    ws = await door.connect()
    try:
        late = 1.5 * HEARTBEAT_S + WAIT_S  # a ping, half an interval for its pong, then slack
        assert await closed_with(ws, late) == (WSCloseCode.SERVICE_RESTART, UNREACHABLE)
        await door.finished()
    finally:
        release.set()
