"""Chat that is kept: history on join and after a reconnect (bounded, ordered, per consultation),
refusals that disturb nothing, and the chat on the replay timeline — through the real app and real
WebSockets."""

from __future__ import annotations

import json
import time

from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from recorder.annotation_log import read_annotation_log
from recorder.log_entry import LogOp
from recorder.storage import consultation_dir
from signaling.db.store import Consultation
from signaling.keys import RECORDINGS, SETTINGS, STORE
from signaling.ws.chat import HISTORY_LIMIT
from tests.conftest import MakeToken, bearer
from tests.peers import wait_until
from tests.replay_support import make_recording, write_log
from tests.signaling.test_websocket import connect, join, next_of


async def join_with_history(
    client: TestClient, cid: str, token: str
) -> tuple[ClientWebSocketResponse, list[dict]]:
    """Connected; ``chat_history`` is the message right after ``welcome``."""
    ws = await connect(client, cid, token)
    assert json.loads((await ws.receive(timeout=3)).data)["type"] == "welcome"
    history = json.loads((await ws.receive(timeout=3)).data)
    assert history["type"] == "chat_history"
    return ws, list(history["messages"])


async def history_of(client: TestClient, cid: str, token: str) -> list[dict]:
    ws, history = await join_with_history(client, cid, token)
    await ws.close()
    return history


async def test_a_joiner_gets_the_history_right_after_welcome_oldest_first(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    surgeon, first = await join_with_history(
        client, cid, make_token("surgeon", cid, name="Dr. Kim")
    )
    assert first == []
    sent = ["Advance 5 cm", "Biopsy the lesion at 3 o'clock", "Line one\nline two"]
    for text in sent:
        await surgeon.send_json({"type": "chat", "text": text})
        await next_of(surgeon, "chat")

    clinic, history = await join_with_history(client, cid, make_token("clinic", cid))
    assert [m["text"] for m in history] == sent
    message = history[0]
    assert set(message) == {"type", "from", "name", "role", "text", "ts"}
    assert message["type"] == "chat" and message["name"] == "Dr. Kim"
    assert message["role"] == "surgeon" and message["from"].startswith("surgeon-")
    assert [m["ts"] for m in history] == sorted(m["ts"] for m in history)
    await clinic.close()
    await surgeon.close()


async def test_a_reconnecting_page_gets_what_was_written_while_it_was_away(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic_token = make_token("clinic", cid)
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    clinic, _ = await join(client, cid, clinic_token)
    await surgeon.send_json({"type": "chat", "text": "Hold still"})
    await next_of(clinic, "chat")
    await clinic.close(code=4000)  # the page's "reconnecting" close
    await surgeon.send_json({"type": "chat", "text": "Withdraw slowly"})
    await next_of(surgeon, "chat")

    assert [m["text"] for m in await history_of(client, cid, clinic_token)] == [
        "Hold still",
        "Withdraw slowly",
    ]
    await surgeon.close()


async def test_history_is_the_newest_messages_read_back_from_the_consultation_log(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    """A server (re)started over a long consultation: the log holds more than the limit, mixed
    with marks; the joiner gets the newest HISTORY_LIMIT chat messages, in order."""
    data = client.app[SETTINGS].data_dir
    entries = []
    for i in range(HISTORY_LIMIT + 50):
        ts = f"2026-01-01T10:{i // 60:02d}:{i % 60:02d}.000+00:00"
        entries.append({"ts": ts, "op": "add", "annotation": {"id": f"m{i}"}, "by": "surgeon-1"})
        chat = {"text": f"message {i}", "name": "Dr. Old", "role": "surgeon"}
        entries.append({"ts": ts, "op": "chat", **chat, "by": "surgeon-1", "media_pts": None})
    write_log(data, consultation.id, entries)

    history = await history_of(client, consultation.id, make_token("clinic", consultation.id))
    assert len(history) == HISTORY_LIMIT
    assert [m["text"] for m in history] == [f"message {i}" for i in range(50, HISTORY_LIMIT + 50)]
    assert history[-1]["name"] == "Dr. Old"


async def test_history_never_leaks_between_consultations(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    other = await client.app[STORE].create("Other", "VP8", consent_by="Dr. B", recorded_by="t")
    a, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    b, _ = await join(client, other.id, make_token("surgeon", other.id))
    await a.send_json({"type": "chat", "text": "for A only"})
    await b.send_json({"type": "chat", "text": "for B only"})
    await next_of(a, "chat")
    await next_of(b, "chat")
    await a.close()
    await b.close()

    texts_a = [
        m["text"]
        for m in await history_of(client, consultation.id, make_token("clinic", consultation.id))
    ]
    texts_b = [
        m["text"] for m in await history_of(client, other.id, make_token("clinic", other.id))
    ]
    assert (texts_a, texts_b) == (["for A only"], ["for B only"])


async def test_overlong_or_control_character_chat_is_refused_and_nothing_else_changes(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    await surgeon.send_json({"type": "chat", "text": "kept"})
    await next_of(surgeon, "chat")
    for text, reason in [
        ("x" * 2001, "at most 2000 characters"),
        ("bell\x07", "control characters"),
        ("escape \x1b[31mred", "control characters"),
        ("   ", "non-empty"),
    ]:
        await surgeon.send_json({"type": "chat", "text": text})
        error = await next_of(surgeon, "error")
        assert error["code"] == "invalid-message" and reason in error["reason"]
    await surgeon.send_json({"type": "ping"})
    await next_of(surgeon, "pong")  # the socket stays open
    assert [m["text"] for m in await history_of(client, cid, make_token("clinic", cid))] == ["kept"]
    await surgeon.close()


async def test_the_replay_lists_the_chat_sent_during_the_recording_at_its_time(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    """Chat sent over the WebSocket during a recording (no media: placed by the server clock)
    comes back in the recording's timeline, on its clock, with the sender's name."""
    cid = consultation.id
    data = client.app[SETTINGS].data_dir
    started = time.time() - 1.0  # the recording is written afterwards, started before the chat
    surgeon, _ = await join(client, cid, make_token("surgeon", cid, name="Dr. Kim"))
    sent_at = []
    for text in ("Scope in", "Please repeat"):
        sent_at.append(time.time() - started)
        await surgeon.send_json({"type": "chat", "text": text})
        await next_of(surgeon, "chat")
    await surgeon.close()
    log = consultation_dir(data, cid) / "annotations.jsonl"
    assert await wait_until(lambda: len(read_annotation_log(log, LogOp.CHAT)) == 2, timeout=5)
    rec = await make_recording(
        data, client.app[RECORDINGS].index, cid, segments=(4.0,), started=started
    )

    token = make_token("surgeon", cid)
    detail = await (
        await client.get(f"/api/recordings/{rec.manifest.recording_id}", headers=bearer(token))
    ).json()
    chat = detail["timeline"]["chat"]
    assert [c["text"] for c in chat] == ["Scope in", "Please repeat"]
    assert chat[0]["name"] == "Dr. Kim" and chat[0]["role"] == "surgeon"
    for line, expected in zip(chat, sent_at, strict=True):
        assert abs(line["t"] - expected) < 0.5, (line, expected)
