"""``/ws/{cid}`` end to end through the real app: welcome, presence, fan-out, auth and every
rejection with its close code, and isolation of a misbehaving client."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from relay import FeedEvent, FeedName, FeedState
from signaling.db.store import Consultation
from signaling.keys import HUB, RELAY, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer

AUTH_TIMEOUT_S = 0.3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, ws_auth_timeout_s=AUTH_TIMEOUT_S)


async def connect(
    client: TestClient, cid: str, token: str | None = None
) -> ClientWebSocketResponse:
    return await client.ws_connect(f"/ws/{cid}", headers=bearer(token) if token else None)


async def join(client: TestClient, cid: str, token: str) -> tuple[ClientWebSocketResponse, dict]:
    """Connected, past ``welcome`` and the ``chat_history`` that follows it."""
    ws = await connect(client, cid, token)
    welcome = await next_of(ws, "welcome")
    await next_of(ws, "chat_history")
    return ws, welcome


async def next_of(ws: ClientWebSocketResponse, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    """The next message of type ``kind``, skipping others (presence, feed...)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type is WSMsgType.TEXT, f"expected {kind}, got {msg.type} {msg.data!r}"
        message = json.loads(msg.data)
        assert message["v"] == 1
        if message["type"] == kind:
            return message


async def closed_with(ws: ClientWebSocketResponse) -> tuple[int, str]:
    """Close code and reason, skipping the messages still in flight."""
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
            return ws.close_code or 0, ""


async def test_welcome(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, welcome = await join(client, consultation.id, make_token("surgeon", consultation.id))
    you = welcome["you"]
    assert you["role"] == "surgeon" and you["identity"].startswith("surgeon-")
    assert you["may_publish"] is True and you["may_annotate"] is True
    assert set(you) == {"identity", "name", "role", "may_publish", "may_annotate"}
    assert [p["identity"] for p in welcome["participants"]] == [you["identity"]]
    assert welcome["feeds"] == {
        "endoscope": {"state": "offline", "identity": None, "reason": None},
        "talkback": {"state": "offline", "identity": None, "reason": None},
    }
    assert welcome["consent"] == consultation.consent.to_json()
    assert welcome["consent"]["confirmed_by"] == "Dr. Bat"
    assert welcome["recording"]["type"] == "recording"
    assert welcome["recording"]["state"] == "stopped"  # nothing is live yet
    await ws.close()


async def test_welcome_without_consent_and_observer_rights(
    client: TestClient, make_token: MakeToken, consultation_without_consent: Consultation
) -> None:
    cid = consultation_without_consent.id
    ws, welcome = await join(client, cid, make_token("observer", cid))
    assert welcome["consent"] is None
    assert welcome["you"]["may_publish"] is False and welcome["you"]["may_annotate"] is False
    await ws.close()


async def test_presence_on_join_and_leave(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, first = await join(client, cid, make_token("clinic", cid))
    surgeon, welcome = await join(client, cid, make_token("surgeon", cid))
    assert [p["role"] for p in welcome["participants"]] == ["clinic", "surgeon"]
    presence = await next_of(clinic, "presence")
    assert [p["identity"] for p in presence["participants"]] == [
        first["you"]["identity"],
        welcome["you"]["identity"],
    ]
    assert set(presence["participants"][1]) == {
        "identity",
        "name",
        "role",
        "joined_at",
        "state",
        "devices",
    }
    await surgeon.close()
    presence = await next_of(clinic, "presence")
    assert [p["identity"] for p in presence["participants"]] == [first["you"]["identity"]]
    await clinic.close()


async def test_chat_fans_out_to_everyone_including_sender(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, _ = await join(client, cid, make_token("clinic", cid, name="Clinic Ward 3"))
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    await clinic.send_json({"type": "chat", "text": "Scope is in."})
    for ws in (clinic, surgeon):
        chat = await next_of(ws, "chat")
        assert chat["text"] == "Scope is in."
        assert chat["name"] == "Clinic Ward 3" and chat["role"] == "clinic"
        assert chat["from"].startswith("clinic-") and chat["ts"].endswith("+00:00")
    await clinic.close()
    await surgeon.close()


async def test_stats_fan_out_excludes_sender(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic, _ = await join(client, cid, make_token("clinic", cid))
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    stats = {"fps": 30, "width": 1280, "height": 720, "direction": "send", "secret": "x"}
    await clinic.send_json({"type": "stats", "stats": stats})
    received = await next_of(surgeon, "stats")
    assert received["role"] == "clinic"
    assert received["stats"] == {"fps": 30, "width": 1280, "height": 720, "direction": "send"}
    await clinic.send_json({"type": "ping"})
    msg = json.loads((await clinic.receive(timeout=3)).data)
    while msg["type"] == "presence":
        msg = json.loads((await clinic.receive(timeout=3)).data)
    assert msg["type"] == "pong"  # the sender's own stats never came back
    # The same person on a second device: the others tell the two devices' numbers apart.
    second, _ = await join(client, cid, make_token("clinic", cid, identity=received["from"]))
    await second.send_json({"type": "stats", "stats": stats})
    other_device = await next_of(surgeon, "stats")
    assert other_device["from"] == received["from"]
    assert len(other_device["device"]) == 8 and other_device["device"] != received["device"]
    await second.close()
    await clinic.close()
    await surgeon.close()


async def test_first_message_auth(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws = await connect(client, consultation.id)
    await ws.send_json({"type": "auth", "token": make_token("observer", consultation.id)})
    welcome = await next_of(ws, "welcome")
    assert welcome["you"]["role"] == "observer"
    await ws.send_json({"type": "auth", "token": "again"})
    error = await next_of(ws, "error")
    assert error["code"] == "invalid-message"
    await ws.close()


async def test_feed_events_reach_the_consultation(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    client.app[RELAY].on_feed_event(
        FeedEvent(consultation.id, FeedName.ENDOSCOPE, FeedState.LIVE, "clinic-1")
    )
    feed = await next_of(ws, "feed")
    assert feed == {
        "type": "feed",
        "feed": "endoscope",
        "state": "live",
        "identity": "clinic-1",
        "reason": None,
        "v": 1,
    }
    await ws.close()


async def test_unknown_type_answers_error_and_keeps_socket(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    await ws.send_json({"type": "teleport"})
    error = await next_of(ws, "error")
    assert error["code"] == "unknown-type"
    await ws.send_json({"type": "chat", "text": ""})
    assert (await next_of(ws, "error"))["code"] == "invalid-message"
    await ws.send_json({"type": "ping"})
    await next_of(ws, "pong")
    await ws.close()


async def test_the_same_link_on_two_devices_keeps_both_as_one_person(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    token = make_token("surgeon", consultation.id)
    laptop, _ = await join(client, consultation.id, token)
    tablet, welcome = await join(client, consultation.id, token)
    assert [(p["role"], p["devices"]) for p in welcome["participants"]] == [("surgeon", 2)]
    assert (await next_of(laptop, "presence"))["participants"][0]["devices"] == 2
    await tablet.send_json({"type": "chat", "text": "from the tablet"})
    assert (await next_of(laptop, "chat"))["text"] == "from the tablet"
    await laptop.send_json({"type": "ping"})
    await next_of(laptop, "pong")
    await tablet.close()
    assert (await next_of(laptop, "presence"))["participants"][0]["devices"] == 1
    assert len(client.app[HUB].participants(consultation.id)) == 1


async def test_auth_timeout(client: TestClient, consultation: Consultation) -> None:
    ws = await connect(client, consultation.id)
    code, reason = await closed_with(ws)
    assert code == 4408
    assert "auth" in reason


@pytest.mark.parametrize("first", [{"type": "ping"}, {"type": "auth"}])
async def test_first_message_must_be_auth(
    client: TestClient, consultation: Consultation, first: dict[str, Any]
) -> None:
    ws = await connect(client, consultation.id)
    await ws.send_json(first)
    assert (await closed_with(ws))[0] == 4401


@pytest.mark.parametrize("via_header", [True, False])
async def test_invalid_token(
    client: TestClient, consultation: Consultation, via_header: bool
) -> None:
    if via_header:
        ws = await connect(client, consultation.id, "not-a-jwt")
    else:
        ws = await connect(client, consultation.id)
        await ws.send_json({"type": "auth", "token": "not-a-jwt"})
    code, reason = await closed_with(ws)
    assert code == 4401
    assert "not-a-jwt" not in reason


async def test_expired_token(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws = await connect(client, consultation.id, make_token("surgeon", consultation.id, ttl_s=-60))
    assert await closed_with(ws) == (4401, "token expired")


async def test_a_token_that_expires_mid_session_ends_the_socket_with_4401(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id, ttl_s=2))
    code, reason = await closed_with(ws)
    assert code == 4401 and "expired" in reason


async def test_token_for_another_consultation(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws = await connect(client, consultation.id, make_token("surgeon", "some-other-id"))
    assert await closed_with(ws) == (4403, "token is for another consultation")


async def test_unknown_consultation(client: TestClient, make_token: MakeToken) -> None:
    ws = await connect(client, "missing-cid", make_token("surgeon", "missing-cid"))
    assert await closed_with(ws) == (4404, "unknown consultation")


async def test_admin_may_join_any_consultation(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, welcome = await join(client, consultation.id, make_token("admin", "*"))
    assert welcome["you"]["role"] == "admin"
    await ws.close()


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda ws: ws.send_str("this is not json"), 4400),
        (lambda ws: ws.send_str("[1, 2]"), 4400),
        (lambda ws: ws.send_str('{"no": "type"}'), 4400),
        (lambda ws: ws.send_bytes(b"\x00\x01"), 1003),
        (lambda ws: ws.send_str(json.dumps({"type": "chat", "text": "x" * 70_000})), 1009),
    ],
    ids=["not-json", "not-object", "no-type", "binary", "oversized"],
)
async def test_rejected_frames_close_the_socket(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    send: Any,
    expected: int,
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    await send(ws)
    code, reason = await closed_with(ws)
    assert code == expected
    if expected == 4400:
        assert reason  # readable, e.g. "not JSON: Expecting value at character 0"


async def test_flood_closes_with_4429(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    for _ in range(100):
        await ws.send_json({"type": "ping"})
    assert await closed_with(ws) == (4429, "message flood")


async def test_garbage_client_does_not_disturb_others(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    other = await client.app[STORE].create(title="Other", video_codec="VP8")
    cid = consultation.id
    neighbour, _ = await join(client, cid, make_token("surgeon", cid))
    elsewhere, _ = await join(client, other.id, make_token("surgeon", other.id))
    vandals = []
    for payload in ("garbage", b"\xff" * 10, "x" * 70_000):
        vandal, _ = await join(client, cid, make_token("observer", cid))
        await (
            vandal.send_bytes(payload) if isinstance(payload, bytes) else vandal.send_str(payload)
        )
        vandals.append(vandal)
    flooder, _ = await join(client, cid, make_token("observer", cid))
    for _ in range(200):
        await flooder.send_json({"type": "ping"})
    for vandal in (*vandals, flooder):
        assert (await closed_with(vandal))[0] in (4400, 1003, 1009, 4429)
    for ws, room in ((neighbour, cid), (elsewhere, other.id)):
        await ws.send_json({"type": "chat", "text": "still here"})
        assert (await next_of(ws, "chat"))["text"] == "still here"
        assert len(client.app[HUB].participants(room)) == 1
    await neighbour.close()
    await elsewhere.close()


async def test_shutdown_closes_joined_and_authenticating_sockets(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    joined, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    waiting = await connect(client, consultation.id)
    await asyncio.sleep(0.05)  # let the server register the unauthenticated socket
    await client.app[HUB].close_all(1001, "server shutting down")
    for ws in (joined, waiting):
        assert await closed_with(ws) == (1001, "server shutting down")


async def test_vanished_client_shows_as_reconnecting_within_seconds(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    stays, _ = await join(client, cid, make_token("surgeon", cid))
    mute = await client.ws_connect(
        f"/ws/{cid}", headers=bearer(make_token("clinic", cid)), autoping=False
    )
    await next_of(mute, "welcome")
    assert len((await next_of(stays, "presence"))["participants"]) == 2
    started = asyncio.get_running_loop().time()
    presence = await next_of(stays, "presence", timeout=10)  # the server's pings go unanswered
    states = [(p["role"], p["state"]) for p in presence["participants"]]
    assert states == [("surgeon", "connected"), ("clinic", "reconnecting")]
    assert asyncio.get_running_loop().time() - started < 5.0
    await stays.close()
    await mute.close()
