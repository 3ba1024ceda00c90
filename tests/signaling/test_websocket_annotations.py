"""Annotations over ``/ws/{cid}`` through the real app: strokes, pointer and freeze reach everyone,
land on the board and in the timeline; every bad message is refused to its sender only, while the
other participants keep receiving."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from recorder.annotation_log import read_annotation_log
from relay.annotations import MAX_POINTS
from signaling.db.store import Consultation
from signaling.keys import RELAY, SETTINGS
from tests.conftest import MakeToken, bearer
from tests.peers import wait_until
from tests.signaling.test_snapshots import PNG_BYTES
from tests.signaling.test_websocket import closed_with, join, next_of

STROKE = {
    "id": "stroke-1",
    "tool": "pen",
    "color": "#00ff00",
    "width": 0.006,
    "points": [[0.2, 0.2], [0.3, 0.35]],
}


def add(**changes: Any) -> dict[str, Any]:
    return {"type": "annotation", "op": "add", "annotation": {**STROKE, **changes}}


async def until(ws: ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """Every message up to and including the next one of type ``kind``."""
    seen = []
    while True:
        msg = await ws.receive(timeout=3)
        assert msg.type is WSMsgType.TEXT, f"expected {kind}, got {msg.type}"
        seen.append(json.loads(msg.data))
        if seen[-1]["type"] == kind:
            return seen


async def next_op(ws: ClientWebSocketResponse, op: str) -> dict[str, Any]:
    """The next ``annotation`` message with this ``op``."""
    while (message := await next_of(ws, "annotation"))["op"] != op:
        pass
    return message


async def room(
    client: TestClient, make_token: MakeToken, cid: str, *roles: str
) -> list[tuple[ClientWebSocketResponse, str]]:
    """Join ``roles`` in order; each socket with its identity, presence messages consumed."""
    joined = []
    for role in roles:
        ws, welcome = await join(client, cid, make_token(role, cid))
        for earlier, _ in joined:
            await next_of(earlier, "presence")
        joined.append((ws, welcome["you"]["identity"]))
    return joined


async def test_a_stroke_streams_to_everyone_and_lands_on_the_board_and_in_the_timeline(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon, surgeon_id), (clinic, _) = await room(client, make_token, cid, "surgeon", "clinic")
    await surgeon.send_json(add())
    longer = {**STROKE, "points": [*STROKE["points"], [0.4, 0.4]]}
    await surgeon.send_json({"type": "annotation", "op": "update", "annotation": longer})
    for ws in (surgeon, clinic):  # the sender too: every page draws what the server accepted
        added, updated = await next_of(ws, "annotation"), await next_of(ws, "annotation")
        assert added["op"] == "add" and added["by"] == surgeon_id
        assert added["annotation"]["author"] == surgeon_id
        assert added["annotation"]["points"] == STROKE["points"]
        assert updated["op"] == "update" and len(updated["annotation"]["points"]) == 3
        assert updated["annotation"]["created_at"] == added["annotation"]["created_at"]
    board = client.app[RELAY].find(cid).board  # type: ignore[union-attr]
    assert [a.mark.points[-1] for a in board.visible(0)] == [(0.4, 0.4)]
    log = client.app[SETTINGS].data_dir / "consultations" / cid / "annotations.jsonl"
    assert await wait_until(lambda: len(read_annotation_log(log)) == 2, timeout=3)
    first, second = read_annotation_log(log)
    assert (first.kind, second.kind) == ("add", "update")
    assert first.by == surgeon_id and first.ts is not None and first.ts.endswith("+00:00")
    assert "media_pts" in log.read_text().splitlines()[0]
    await surgeon.close()
    await clinic.close()


async def test_a_late_joiner_gets_the_current_marks_and_freeze_state(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    [(surgeon, surgeon_id)] = await room(client, make_token, cid, "surgeon")
    await surgeon.send_json(add())
    await surgeon.send_json(add(id="arrow-1", tool="arrow", points=[[0.1, 0.1], [0.5, 0.5]]))
    await surgeon.send_json({"type": "freeze", "frozen": True})
    await next_of(surgeon, "freeze")
    observer, welcome = await join(client, cid, make_token("observer", cid))
    assert [a["id"] for a in welcome["annotations"]] == ["stroke-1", "arrow-1"]
    assert welcome["freeze"] == {"frozen": True, "snapshot": None, "by": surgeon_id}
    await surgeon.close()
    await observer.close()


async def test_undo_and_remove_reach_only_the_senders_marks_and_clear_takes_all(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon, surgeon_id), (clinic, clinic_id) = await room(
        client, make_token, cid, "surgeon", "clinic"
    )
    await surgeon.send_json(add(id="a"))
    await surgeon.send_json(add(id="b"))
    await clinic.send_json(add(id="a"))  # the clinic's own "a"
    await surgeon.send_json({"type": "annotation", "op": "undo"})
    undone = await next_op(clinic, "remove")  # undo is announced as the remove it did
    assert (undone["id"], undone["by"]) == ("b", surgeon_id)
    await clinic.send_json({"type": "annotation", "op": "remove", "id": "b"})  # not the clinic's
    assert (await next_of(clinic, "error"))["code"] == "invalid-message"
    await clinic.send_json({"type": "annotation", "op": "remove", "id": "a"})
    await next_op(surgeon, "remove")  # its own undo
    removed = await next_op(surgeon, "remove")
    assert (removed["id"], removed["by"]) == ("a", clinic_id)
    board = client.app[RELAY].find(cid).board  # type: ignore[union-attr]
    assert [a.key for a in board.visible(0)] == [(surgeon_id, "a")]
    await surgeon.send_json({"type": "annotation", "op": "clear"})
    assert (await next_op(clinic, "clear"))["by"] == surgeon_id
    assert board.visible(0) == ()
    await surgeon.close()
    await clinic.close()


async def test_the_pointer_goes_to_everyone_but_the_sender_and_is_never_stored(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon, _), (clinic, clinic_id) = await room(client, make_token, cid, "surgeon", "clinic")
    await clinic.send_json({"type": "pointer", "x": 0.25, "y": 0.75, "color": "#ffd600"})
    await clinic.send_json({"type": "pointer", "x": None, "y": None})
    assert await next_of(surgeon, "pointer") == {
        "type": "pointer",
        "from": clinic_id,
        "x": 0.25,
        "y": 0.75,
        "color": "#ffd600",
        "v": 1,
    }
    assert (await next_of(surgeon, "pointer"))["x"] is None
    await clinic.send_json({"type": "ping"})
    assert [m["type"] for m in await until(clinic, "pong")] == ["pong"]
    log = client.app[SETTINGS].data_dir / "consultations" / cid / "annotations.jsonl"
    assert read_annotation_log(log) == []
    await surgeon.close()
    await clinic.close()


async def test_freeze_with_a_stored_snapshot_and_resume(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    surgeon_token = make_token("surgeon", cid)
    surgeon, welcome = await join(client, cid, surgeon_token)
    surgeon_id = welcome["you"]["identity"]
    [(clinic, _)] = await room(client, make_token, cid, "clinic")
    await next_of(surgeon, "presence")
    response = await client.post(
        f"/api/consultations/{cid}/snapshots",
        data=PNG_BYTES,
        headers={**bearer(surgeon_token), "Content-Type": "image/png"},
    )
    snapshot = await response.json()
    assert (await next_of(clinic, "snapshot"))["snapshot"] == snapshot
    await surgeon.send_json({"type": "freeze", "frozen": True, "snapshot_id": "X" * 16})
    assert (await next_of(surgeon, "error"))["code"] == "invalid-message"  # no such snapshot
    await surgeon.send_json({"type": "freeze", "frozen": True, "snapshot_id": snapshot["id"]})
    frozen = await next_of(clinic, "freeze")
    assert frozen["frozen"] is True and frozen["by"] == surgeon_id
    assert frozen["snapshot"] == {"id": snapshot["id"], "url": snapshot["url"]}
    await surgeon.send_json({"type": "freeze", "frozen": False})
    resumed = await next_of(clinic, "freeze")
    assert resumed == {
        "type": "freeze",
        "frozen": False,
        "snapshot": None,
        "by": surgeon_id,
        "reason": None,
        "v": 1,
    }
    await surgeon.close()
    await clinic.close()


BAD = {
    "too many points": add(points=[[0.5, 0.5]] * (MAX_POINTS + 1)),
    "malformed points": add(points="0.1,0.2"),
    "NaN from JSON.stringify": add(points=[[None, 0.5]]),
    "out of range": add(points=[[0.5, 1.5]]),
    "unknown tool": add(tool="laser"),
    "bad colour": add(color="javascript:alert(1)"),
    "text too long": add(tool="text", points=[[0.1, 0.1]], text="x" * 201),
    "someone else's mark": {"type": "annotation", "op": "update", "annotation": STROKE},
    "nothing to undo": {"type": "annotation", "op": "undo"},
}


@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
async def test_bad_annotations_are_refused_to_the_sender_only(
    client: TestClient, make_token: MakeToken, consultation: Consultation, bad: str
) -> None:
    cid = consultation.id
    (clinic, _), (surgeon, _) = await room(client, make_token, cid, "clinic", "surgeon")
    await clinic.send_json(BAD[bad])
    error = await next_of(clinic, "error")
    assert error["code"] == "invalid-message" and error["reason"]
    await surgeon.send_json(add())
    # the surgeon's next message is its own stroke: nothing of the bad one, no error
    assert [m["type"] for m in await until(surgeon, "annotation")] == ["annotation"]
    assert [m["type"] for m in await until(clinic, "annotation")] == ["annotation"]
    await clinic.close()
    await surgeon.close()


async def test_infinity_is_refused_like_any_out_of_range_number(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon, _), (clinic, _) = await room(client, make_token, cid, "surgeon", "clinic")
    await surgeon.send_str(json.dumps(add()).replace("0.35", "1e999"))  # parses as inf
    assert (await next_of(surgeon, "error"))["code"] == "invalid-message"
    await surgeon.send_json(add())
    assert [m["type"] for m in await until(clinic, "annotation")] == ["annotation"]
    await surgeon.close()
    await clinic.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (json.dumps(add()).replace("0.35", "NaN"), 4400),  # not JSON at all
        (
            json.dumps(add(points=[[0.1234567890123456, 0.1234567890123456]] * 2000)),
            1009,
        ),  # > 64 KiB
    ],
    ids=["nan-literal", "oversized-frame"],
)
async def test_frames_that_break_the_protocol_close_only_the_senders_socket(
    client: TestClient, make_token: MakeToken, consultation: Consultation, frame: str, code: int
) -> None:
    cid = consultation.id
    (surgeon, _), (clinic, _) = await room(client, make_token, cid, "surgeon", "clinic")
    await surgeon.send_str(frame)
    closed, reason = await closed_with(surgeon)
    assert closed == code
    assert code != 4400 or "not JSON" in reason
    await clinic.send_json(add())
    assert (await next_of(clinic, "annotation"))["op"] == "add"
    await clinic.close()


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("observer", add()),
        ("observer", {"type": "pointer", "x": 0.5, "y": 0.5}),
        ("observer", {"type": "annotation", "op": "undo"}),
        ("clinic", {"type": "annotation", "op": "clear"}),
        ("clinic", {"type": "freeze", "frozen": True}),
    ],
    ids=["observer-draws", "observer-points", "observer-undoes", "clinic-clears", "clinic-freezes"],
)
async def test_messages_beyond_the_grant_are_forbidden_to_the_sender_only(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    role: str,
    message: dict[str, Any],
) -> None:
    cid = consultation.id
    (sender, _), (surgeon, _) = await room(client, make_token, cid, role, "surgeon")
    await surgeon.send_json(add())
    await next_of(sender, "annotation")
    await sender.send_json(message)
    assert (await next_of(sender, "error"))["code"] == "forbidden"
    await surgeon.send_json({"type": "pointer", "x": 0.1, "y": 0.1})
    types = [m["type"] for m in await until(sender, "pointer")]
    assert types == ["pointer"]  # the surgeon's pointer still arrives
    board = client.app[RELAY].find(cid).board  # type: ignore[union-attr]
    assert len(board.visible(0)) == 1 and board.freeze is None
    await sender.close()
    await surgeon.close()


async def test_an_annotation_flood_is_rate_limited_and_the_socket_stays_open(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    (surgeon, _), (clinic, _) = await room(client, make_token, cid, "surgeon", "clinic")
    for i in range(45):
        await surgeon.send_json(add(id=f"m{i}"))
    await surgeon.send_json({"type": "ping"})
    replies = await until(surgeon, "pong")
    limited = [m for m in replies if m["type"] == "error"]
    accepted = [m for m in replies if m["type"] == "annotation"]
    assert len(accepted) >= 30 and len(limited) >= 10
    assert {m["code"] for m in limited} == {"rate-limited"}
    assert len(accepted) + len(limited) == 45
    seen: list[dict[str, Any]] = []
    while sum(m["type"] == "annotation" for m in seen) < len(accepted):
        seen += await until(clinic, "annotation")
    assert "error" not in {m["type"] for m in seen}  # the refusals went to the flooder only
    received = [m["annotation"]["id"] for m in seen if m["type"] == "annotation"]
    assert received == [m["annotation"]["id"] for m in accepted]
    await surgeon.close()
    await clinic.close()


async def test_a_token_for_another_consultation_cannot_reach_this_one(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    [(surgeon, _)] = await room(client, make_token, cid, "surgeon")
    intruder = await client.ws_connect(
        f"/ws/{cid}", headers=bearer(make_token("surgeon", "otherConsult1"))
    )
    await intruder.send_json(add())
    assert await closed_with(intruder) == (4403, "token is for another consultation")
    await surgeon.send_json({"type": "ping"})
    assert [m["type"] for m in await until(surgeon, "pong")] == ["pong"]
    assert client.app[RELAY].router(cid, consultation.video_codec).board.visible(0) == ()
    await surgeon.close()
