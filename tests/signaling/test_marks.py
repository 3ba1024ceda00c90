"""Marks belong to their picture, through the real app with real WHIP publishers: a new stream
session (Stop, then Start) archives the marks and releases a freeze for everyone, a reconnect
within the offline window keeps them, the surgeon restores them; a freeze ends when the surgeon
who froze leaves — at once for an explicit leave, after the reconnect grace for a lost one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from recorder.annotation_log import read_annotation_log
from recorder.log_entry import LogOp
from relay import FeedName, FeedState
from signaling.db.store import Consultation
from signaling.keys import RELAY, SETTINGS
from signaling.settings import Settings
from tests.conftest import MakeToken
from tests.peers import publisher, wait_until
from tests.relay.test_forwarding_flow import url
from tests.signaling.test_websocket import join, next_of
from tests.signaling.test_websocket_annotations import add, room

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with a short reconnect grace."""
    return dataclasses.replace(settings, reconnect_grace_s=0.5)


class Listener:
    """Reads a socket all the time (so it answers the server's heartbeat pings while a publisher
    connects) and hands out its messages by type."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while (msg := await self.ws.receive()).type is WSMsgType.TEXT:
            self.messages.put_nowait(json.loads(msg.data))

    async def next(self, kind: str, op: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if message["type"] == kind and (op is None or message.get("op") == op):
                    return message


@contextlib.asynccontextmanager
async def listening(*sockets: ClientWebSocketResponse) -> AsyncIterator[list[Listener]]:
    listeners = [Listener(ws) for ws in sockets]
    try:
        yield listeners
    finally:
        for listener in listeners:
            await listener.ws.close()
            listener.task.cancel()


async def live(client: TestClient, cid: str) -> bool:
    router = client.app[RELAY].find(cid)
    feed = router.feeds[FeedName.ENDOSCOPE] if router else None
    return await wait_until(lambda: feed is not None and feed.state is FeedState.LIVE, 10)


async def test_stop_and_start_archives_the_marks_and_the_surgeon_restores_them(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    joined = await room(client, make_token, cid, "surgeon", "clinic", "observer")
    (surgeon_ws, surgeon_id), (clinic_ws, _), (observer_ws, _) = joined
    clinic_token = make_token("clinic", cid)
    async with listening(surgeon_ws, clinic_ws, observer_ws) as (surgeon, clinic, observer):
        async with publisher(url(client, f"/whip/{cid}"), clinic_token):
            assert await live(client, cid)
            await surgeon_ws.send_json(add())
            await clinic.next("annotation", "add")
            await surgeon_ws.send_json({"type": "freeze", "frozen": True})
            assert (await clinic.next("freeze"))["frozen"] is True
        # the clinic pressed Stop (WHIP DELETE) and starts again: a new stream session
        router = client.app[RELAY].find(cid)
        assert router is not None
        async with publisher(url(client, f"/whip/{cid}"), clinic_token):
            for listener in (surgeon, clinic, observer):
                archived = await listener.next("annotation", "archive", timeout=15)
                assert archived["count"] == 1 and archived["by"] is None
                released = await listener.next("freeze")
                assert released["frozen"] is False and released["reason"] == "new-stream"
            assert router.board.visible(0) == () and len(router.board.archived) == 1
            late, welcome = await join(client, cid, make_token("observer", cid))
            assert welcome["annotations"] == [] and welcome["archived"] == 1
            assert welcome["freeze"]["frozen"] is False
            await late.close()

            await clinic_ws.send_json({"type": "annotation", "op": "restore"})
            assert (await clinic.next("error"))["code"] == "forbidden"  # the surgeon's call
            await surgeon_ws.send_json({"type": "annotation", "op": "restore"})
            for listener in (surgeon, clinic, observer):
                restored = await listener.next("annotation", "restore")
                assert restored["by"] == surgeon_id
                assert [a["id"] for a in restored["annotations"]] == ["stroke-1"]
            assert [a.mark.id for a in router.board.visible(0)] == ["stroke-1"]
            await surgeon_ws.send_json({"type": "annotation", "op": "restore"})
            assert (await surgeon.next("error"))["code"] == "invalid-message"  # nothing left
    data = client.app[SETTINGS].data_dir
    log = read_annotation_log(data / "consultations" / cid / "annotations.jsonl")
    ops = [entry.kind for entry in log]
    assert ops == [LogOp.ADD, LogOp.FREEZE, LogOp.ARCHIVE, LogOp.RESUME, LogOp.RESTORE]
    assert log[2].payload["count"] == 1 and log[3].payload["reason"] == "new-stream"


async def test_a_clinic_reconnecting_within_the_offline_window_keeps_the_marks(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon_ws, _), (clinic_ws, _) = await room(client, make_token, cid, "surgeon", "clinic")
    clinic_token = make_token("clinic", cid)
    async with listening(surgeon_ws, clinic_ws) as (_, clinic):
        async with publisher(url(client, f"/whip/{cid}"), clinic_token) as (pc, whip):
            assert await live(client, cid)
            await surgeon_ws.send_json(add())
            await clinic.next("annotation", "add")
            whip.location = None  # the connection breaks: no goodbye (DELETE)
            await pc.close()
        router = client.app[RELAY].find(cid)
        assert router is not None
        feed = router.feeds[FeedName.ENDOSCOPE]
        assert await wait_until(lambda: feed.publisher is None, 10)
        assert feed.reason is not None and feed.reason.value == "lost"
        async with publisher(url(client, f"/whip/{cid}"), clinic_token):
            assert await live(client, cid)
            assert [a.mark.id for a in router.board.visible(0)] == ["stroke-1"]
            assert router.board.archived == () and feed.sessions == 1


async def frozen_by_the_surgeon(
    client: TestClient, make_token: MakeToken, cid: str
) -> tuple[ClientWebSocketResponse, str, ClientWebSocketResponse]:
    """Surgeon and clinic in the room, the picture frozen by the surgeon (clinic told)."""
    (surgeon, surgeon_id), (clinic, _) = await room(client, make_token, cid, "surgeon", "clinic")
    await surgeon.send_json({"type": "freeze", "frozen": True})
    assert (await next_of(clinic, "freeze"))["frozen"] is True
    return surgeon, surgeon_id, clinic


async def test_the_freeze_ends_when_the_surgeon_who_froze_leaves(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    surgeon, surgeon_id, clinic = await frozen_by_the_surgeon(client, make_token, cid)
    await surgeon.close()  # an explicit leave (1000): released at once
    released = await next_of(clinic, "freeze", timeout=2.0)
    assert released == {
        "type": "freeze",
        "frozen": False,
        "snapshot": None,
        "by": surgeon_id,
        "reason": "left",
        "v": 1,
    }
    router = client.app[RELAY].find(cid)
    assert router is not None and router.board.freeze is None
    await clinic.close()


async def test_a_lost_surgeon_keeps_the_freeze_until_the_reconnect_grace_ends(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    surgeon, surgeon_id, clinic = await frozen_by_the_surgeon(client, make_token, cid)
    await surgeon.close(code=4000)  # the page's "reconnecting" close: a lost connection
    presence = await next_of(clinic, "presence")
    held = [p for p in presence["participants"] if p["identity"] == surgeon_id]
    assert held[0]["state"] == "reconnecting"
    router = client.app[RELAY].find(cid)
    assert router is not None and router.board.freeze is not None  # still frozen in the grace
    released = await next_of(clinic, "freeze", timeout=3.0)  # grace 0.5 s (the fixture)
    assert released["frozen"] is False and released["reason"] == "left"
    assert router.board.freeze is None
    await clinic.close()
