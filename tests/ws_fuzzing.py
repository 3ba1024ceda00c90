"""WebSocket message fuzzing (hypothesis): random and mutated protocol messages, wrong types,
huge strings, unknown types, deep nesting, binary frames and non-UTF-8 text, sent to an
authenticated and to an unauthenticated socket. Each one must end in an ``error`` reply, a
normal answer, or a close code the protocol names — never an abnormal close — and a bystander
in another consultation must not notice. Used by tests/signaling/test_ws_fuzz.py and
bench/fuzz_http.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from hypothesis import strategies as st

from tests.fuzzing import JSON_VALUES, Tally, Target, fuzz

ALLOWED_CLOSE = {1003, 1007, 1008, 1009, 4400, 4401, 4403, 4404, 4408, 4422, 4429}
TYPES = ["auth", "chat", "stats", "ping", "annotation", "pointer", "freeze"]
TEMPLATES: list[dict[str, Any]] = [
    {"type": "chat", "text": "hello"},
    {"type": "stats", "stats": {"fps": 30, "direction": "recv", "feed": "endoscope"}},
    {"type": "pointer", "x": 0.5, "y": 0.5, "color": "#ff0000"},
    {"type": "freeze", "frozen": True},
    {"type": "annotation", "op": "undo"},
    {
        "type": "annotation",
        "op": "add",
        "annotation": {"id": "m1", "kind": "arrow", "points": [[0.1, 0.2], [0.3, 0.4]]},
    },
    {"type": "auth", "token": "x", "name": "Dr Kim"},
]


def _mutated(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(sorted(template)) | st.text(max_size=8)
    return st.dictionaries(keys, JSON_VALUES, max_size=3).map(lambda m: {**template, **m})


# (opcode, payload): TEXT frames carry str (or bytes that are no UTF-8), BINARY bytes.
FRAMES = st.one_of(
    st.sampled_from(TEMPLATES).flatmap(_mutated).map(lambda d: ("text", json.dumps(d))),
    st.fixed_dictionaries({"type": st.sampled_from(TYPES) | st.text(max_size=12)})
    .flatmap(lambda d: st.dictionaries(st.text(max_size=8), JSON_VALUES).map(lambda m: {**m, **d}))
    .map(lambda d: ("text", json.dumps(d))),
    JSON_VALUES.map(lambda v: ("text", json.dumps(v))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.sampled_from(
        [
            ("text", '{"type": "chat", "text": "' + "x" * 70_000 + '"}'),
            ("text", '{"type": "ping", "a": ' + "[" * 1000 + "]" * 1000 + "}"),
            ("text", '{"type": "auth", "token": "\\ud800"}'),
            ("text", '{"type": "chat", "text": "\\udfff"}'),
            ("bytes", b"\xff\xfe\xc3("),
        ]
    ),
    st.binary(max_size=64).map(lambda b: ("binary", b)),
)


async def _socket(
    session: aiohttp.ClientSession, target: Target, cid: str, token: str | None
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await session.ws_connect(f"{target.base_url}/ws/{cid}", headers=headers)


async def _send(ws: aiohttp.ClientWebSocketResponse, kind: str, payload: Any) -> None:
    if kind == "text":
        await ws.send_str(payload)
    elif kind == "binary":
        await ws.send_bytes(payload)
    else:  # a TEXT frame whose bytes are no UTF-8
        await ws.send_frame(payload, WSMsgType.TEXT)


async def _outcome(ws: aiohttp.ClientWebSocketResponse) -> str:
    """``close:<code>``, ``error:<code>`` (and the socket still answers a ping) or ``ok``."""
    replied = "ok"
    if not ws.closed:
        await ws.send_str('{"type": "ping"}')
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                code = ws.close_code
                assert code in ALLOWED_CLOSE, f"closed with {code} {msg.extra!r}"
                return f"close:{code}"
            assert msg.type is WSMsgType.TEXT, msg
            message = json.loads(msg.data)
            if message["type"] == "error" and replied == "ok":
                assert message["code"] and message["reason"], message
                replied = f"error:{message['code']}"
            if message["type"] == "pong":
                return replied


def run(
    loop: asyncio.AbstractEventLoop,
    session: aiohttp.ClientSession,
    target: Target,
    examples: int,
    bystander: tuple[str, str],
    derandomize: bool = True,
) -> Tally:
    """``examples`` frames, each to an authenticated (surgeon) or a fresh unauthenticated
    socket; then the bystander (cid, token) in another consultation must still answer."""
    tally = Tally()

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    watcher = call(_socket(session, target, *bystander))
    heard: list[str] = []

    async def listen() -> None:  # reading is what answers the server's pings
        async for msg in watcher:
            heard.append(json.loads(msg.data)["type"])

    async def start_listening() -> asyncio.Task[None]:
        return asyncio.create_task(listen())

    listening = call(start_listening())
    authenticated: list[aiohttp.ClientWebSocketResponse] = []

    async def one(authed: bool, frame: tuple[str, Any]) -> str:
        kind, payload = frame
        if authed:
            if not authenticated or authenticated[0].closed:
                authenticated[:] = [
                    await _socket(session, target, target.cid, target.tokens["surgeon"])
                ]
            ws = authenticated[0]
        else:
            ws = await _socket(session, target, target.cid, None)
        await _send(ws, kind, payload)
        outcome = await _outcome(ws)
        if not authed:
            await ws.close()
        return ("auth " if authed else "anon ") + outcome

    fuzz(st.tuples(st.booleans(), FRAMES), examples, derandomize, tally, lambda f: call(one(*f)))

    async def bystander_answers() -> bool:
        await watcher.send_str('{"type": "ping"}')
        for _ in range(100):
            if "pong" in heard:
                return not listening.done()
            await asyncio.sleep(0.05)
        return False

    if not call(bystander_answers()):
        tally.problems.append("the bystander in the other consultation was disturbed")
    for ws in [watcher, *authenticated]:
        call(ws.close())
    return tally
