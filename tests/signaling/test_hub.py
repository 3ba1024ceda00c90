"""Hub unit tests with fake sockets: fan-out, isolation of slow or dead sockets, replacement."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiohttp import web

from signaling.auth.grants import Role
from signaling.ws.hub import (
    CLOSE_REPLACED,
    CLOSE_TOO_SLOW,
    MAX_DEVICES,
    MESSAGE_BURST,
    MESSAGES_PER_S,
    OUTBOX_SIZE,
    REPLACED_REASON,
    Hub,
    Participant,
)
from signaling.ws.messages import JsonObject, ServerMessage

CID = "consult-1"


class FakeSocket:
    """Records what the hub sends; ``stuck`` never finishes a send (a client that stopped
    reading), ``dead`` fails every send (a vanished client)."""

    def __init__(self, stuck: bool = False, dead: bool = False, hang_on_close: bool = False):
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._stuck = stuck
        self._dead = dead
        self._hang_on_close = hang_on_close

    async def send_str(self, data: str) -> None:
        if self._dead:
            raise ConnectionResetError("Cannot write to closing transport")
        if self._stuck:
            await asyncio.Event().wait()
        self.sent.append(json.loads(data))

    async def close(self, *, code: int, message: bytes) -> bool:
        self.close_code, self.close_reason = code, message.decode()
        if self._hang_on_close:
            await asyncio.Event().wait()
        return True

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


def member(identity: str, ws: FakeSocket, role: Role = Role.SURGEON) -> Participant:
    return Participant(identity, f"Name of {identity}", role, cast(web.WebSocketResponse, ws))


@dataclass(frozen=True)
class AnyMessage(ServerMessage):
    """Any type with any fields: the hub only queues, stamps and sends what it is given."""

    data: JsonObject

    def to_json(self) -> JsonObject:
        return self.data


def message(kind: str, **fields: object) -> AnyMessage:
    return AnyMessage({"type": kind, **fields})


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_broadcast_reaches_everyone_in_order_with_version() -> None:
    hub = Hub()
    sockets = [FakeSocket() for _ in range(3)]
    for i, ws in enumerate(sockets):
        hub.join(CID, member(f"p{i}", ws))
    for n in range(5):
        hub.broadcast(CID, message("chat", n=n))
    for ws in sockets:
        await until(lambda ws=ws: len(ws.of_type("chat")) == 5)
        assert [m["n"] for m in ws.of_type("chat")] == [0, 1, 2, 3, 4]
        assert all(m["v"] == 1 for m in ws.sent)


async def test_broadcast_excludes_sender_and_other_consultations() -> None:
    hub = Hub()
    a, b, elsewhere = FakeSocket(), FakeSocket(), FakeSocket()
    sender = member("a", a)
    hub.join(CID, sender)
    hub.join(CID, member("b", b))
    hub.join("consult-2", member("c", elsewhere))
    hub.broadcast(CID, message("stats"), exclude=sender)
    hub.broadcast("nobody-here", message("chat"))
    await until(lambda: len(b.of_type("stats")) == 1)
    await asyncio.sleep(0.02)
    assert a.of_type("stats") == []
    assert elsewhere.of_type("stats") == [] and elsewhere.of_type("chat") == []


async def test_join_announces_to_others_and_send_comes_first_for_joiner() -> None:
    hub = Hub()
    first, second = FakeSocket(), FakeSocket()
    hub.join(CID, member("first", first, Role.CLINIC))
    joiner = member("second", second)
    hub.join(CID, joiner)
    hub.send(CID, joiner, message("welcome"))
    await until(lambda: bool(first.sent) and bool(second.sent))
    assert [m["type"] for m in second.sent] == ["welcome"]
    presence = first.of_type("presence")[-1]
    assert [p["identity"] for p in presence["participants"]] == ["first", "second"]
    keys = {"identity", "name", "role", "joined_at", "state", "devices"}
    assert set(presence["participants"][0]) == keys
    assert presence["participants"][0]["state"] == "connected"
    assert presence["participants"][0]["role"] == "clinic"


async def test_leave_announces_and_is_idempotent() -> None:
    hub = Hub()
    stay, go = FakeSocket(), FakeSocket()
    hub.join(CID, member("stay", stay))
    leaver = member("go", go)
    hub.join(CID, leaver)
    hub.leave(CID, leaver)
    hub.leave(CID, leaver)
    await until(lambda: len(stay.of_type("presence")) == 2)
    await asyncio.sleep(0.02)
    assert len(stay.of_type("presence")) == 2
    assert [p["identity"] for p in stay.of_type("presence")[-1]["participants"]] == ["stay"]
    assert [p["identity"] for p in hub.participants(CID)] == ["stay"]


async def test_a_lost_connection_shows_as_reconnecting_until_back_or_grace_ends() -> None:
    hub = Hub(reconnect_grace_s=0.3)
    stay = FakeSocket()
    hub.join(CID, member("stay", stay))
    phone = member("phone", FakeSocket())
    hub.join(CID, phone)
    hub.leave(CID, phone, lost=True)
    assert [(p["identity"], p["state"]) for p in hub.participants(CID)] == [
        ("stay", "connected"),
        ("phone", "reconnecting"),
    ]
    phone = member("phone", FakeSocket())
    hub.join(CID, phone)  # back: connected again, no timer left
    await asyncio.sleep(0.4)
    assert [p["state"] for p in hub.participants(CID)] == ["connected", "connected"]
    again = hub.participants(CID)[1]
    assert again["identity"] == "phone"
    hub.leave(CID, phone, lost=True)
    await until(lambda: [p["identity"] for p in hub.participants(CID)] == ["stay"])
    # announced when the grace ended
    await until(
        lambda: [p["identity"] for p in stay.of_type("presence")[-1]["participants"]] == ["stay"]
    )


async def test_only_the_reconnecting_keep_a_consultation_attended() -> None:
    hub = Hub(reconnect_grace_s=0.2)
    alone = member("alone", FakeSocket())
    hub.join(CID, alone)
    hub.leave(CID, alone, lost=True)
    assert hub.has_participants(CID)
    await until(lambda: not hub.has_participants(CID))
    hub.join(CID, member("left", FakeSocket()))
    hub.leave(CID, hub._consultations[CID]["left"][0])
    assert not hub.has_participants(CID)


async def test_slow_consumer_is_dropped_without_delaying_others() -> None:
    hub = Hub(close_timeout_s=0.05)
    fast, slow = FakeSocket(), FakeSocket(stuck=True, hang_on_close=True)
    hub.join(CID, member("fast", fast))
    hub.join(CID, member("slow", slow))
    started = time.monotonic()
    for n in range(OUTBOX_SIZE + 10):
        hub.broadcast(CID, message("chat", n=n))
        await asyncio.sleep(0)  # events arrive one by one: the fast writer keeps up
    assert time.monotonic() - started < 1.0  # broadcast never waits for the stuck socket
    await until(lambda: len(fast.of_type("chat")) == OUTBOX_SIZE + 10)
    assert slow.close_code == CLOSE_TOO_SLOW
    assert "too slow" in slow.close_reason
    assert [p["identity"] for p in hub.participants(CID)] == ["fast"]
    await until(lambda: fast.of_type("presence")[-1]["participants"][0]["identity"] == "fast")
    await hub.close_all(1001, "bye")  # the hanging close of the slow socket is cut, not awaited


async def test_dead_socket_is_dropped_and_others_keep_receiving() -> None:
    hub = Hub()
    alive, dead = FakeSocket(), FakeSocket(dead=True)
    hub.join(CID, member("alive", alive))
    hub.join(CID, member("dead", dead))
    hub.broadcast(CID, message("chat", n=1))
    await until(
        lambda: [p["state"] for p in hub.participants(CID)] == ["connected", "reconnecting"]
    )
    hub.broadcast(CID, message("chat", n=2))
    await until(lambda: len(alive.of_type("chat")) == 2)
    assert dead.close_code is not None


async def test_a_second_device_of_the_same_person_stays_and_both_get_every_message() -> None:
    hub = Hub()
    other, laptop_ws, tablet_ws = FakeSocket(), FakeSocket(), FakeSocket()
    hub.join(CID, member("other", other))
    laptop = member("surgeon-1", laptop_ws)
    hub.join(CID, laptop)
    tablet = member("surgeon-1", tablet_ws)
    hub.join(CID, tablet)
    people = hub.participants(CID)
    assert [(p["identity"], p["devices"]) for p in people] == [("other", 1), ("surgeon-1", 2)]
    assert hub.devices(CID, "surgeon-1") == 2
    hub.broadcast(CID, message("chat"))
    await until(lambda: len(laptop_ws.of_type("chat")) == 1 and len(tablet_ws.of_type("chat")) == 1)
    assert laptop_ws.close_code is None and tablet_ws.close_code is None
    hub.leave(CID, laptop, lost=True)  # one device lost: the person is still connected
    assert [(p["state"], p["devices"]) for p in hub.participants(CID)][1] == ("connected", 1)
    await until(lambda: other.of_type("presence")[-1]["participants"][1]["devices"] == 1)


async def test_beyond_the_device_cap_the_oldest_device_is_closed_with_a_plain_reason() -> None:
    hub = Hub()
    sockets = [FakeSocket() for _ in range(MAX_DEVICES + 1)]
    for ws in sockets:
        hub.join(CID, member("clinic-1", ws))
    await until(lambda: sockets[0].close_code is not None)
    assert sockets[0].close_code == CLOSE_REPLACED
    assert sockets[0].close_reason == REPLACED_REASON
    assert [p["devices"] for p in hub.participants(CID)] == [MAX_DEVICES]
    assert all(ws.close_code is None for ws in sockets[1:])


async def test_a_person_is_reconnecting_only_when_every_device_is_lost() -> None:
    hub = Hub(reconnect_grace_s=0.2)
    watcher = FakeSocket()
    hub.join(CID, member("watcher", watcher))
    laptop, tablet = member("surgeon-1", FakeSocket()), member("surgeon-1", FakeSocket())
    hub.join(CID, laptop)
    hub.join(CID, tablet)
    hub.leave(CID, laptop, lost=True)
    assert [p["state"] for p in hub.participants(CID)] == ["connected", "connected"]
    hub.leave(CID, tablet, lost=True)
    assert [p["state"] for p in hub.participants(CID)] == ["connected", "reconnecting"]
    await until(lambda: len(hub.participants(CID)) == 1)


async def test_close_all_closes_joined_and_tracked_sockets() -> None:
    hub = Hub()
    joined, pending = FakeSocket(), FakeSocket()
    hub.join(CID, member("joined", joined))
    hub.track(cast(web.WebSocketResponse, pending))
    await hub.close_all(1001, "server shutting down")
    assert joined.close_code == pending.close_code == 1001
    assert pending.close_reason == "server shutting down"
    assert hub.participants(CID) == []


def test_token_bucket_allows_burst_then_refills() -> None:
    p = member("p", FakeSocket())
    p.messages.last_at = now = 1000.0
    assert all(p.allow_message(now) for _ in range(int(MESSAGE_BURST)))
    assert not p.allow_message(now)
    later = now + 0.5  # refills 0.5 s worth of tokens
    assert all(p.allow_message(later) for _ in range(int(0.5 * MESSAGES_PER_S)))
    assert not p.allow_message(later)


@pytest.mark.parametrize("reason_length", [10, 500])
async def test_close_reason_fits_a_close_frame(reason_length: int) -> None:
    hub = Hub()
    ws = FakeSocket()
    hub.track(cast(web.WebSocketResponse, ws))
    await hub.close_all(4400, "é" * reason_length)
    assert len(ws.close_reason.encode()) <= 123
