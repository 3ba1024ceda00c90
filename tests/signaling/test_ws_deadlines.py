"""The WebSocket's deadlines cannot be stretched by the client: a socket that answers every ping
but never authenticates is closed at the auth deadline, and an authenticated socket trickling
an unfinished frame one byte at a time is closed at the frame deadline — raw clients against
the real app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from dataclasses import replace

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from signaling.settings import Settings
from signaling.ws.frames import CLOSE_TIMEOUT, HEARTBEAT_S
from tests.conftest import MakeToken

AUTH_DEADLINE_S = 3.0
"Longer than the heartbeat interval, so pings (and their pongs) happen before it."
FRAME_DEADLINE_S = 3.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings, ws_auth_timeout_s=AUTH_DEADLINE_S, ws_frame_deadline_s=FRAME_DEADLINE_S
    )


async def ping_answering_client(client: TestClient, cid: str) -> tuple[int, float, int]:
    """Connects, answers every ping and never authenticates: (close code, seconds, pings)."""
    started = time.monotonic()
    ws = await client.ws_connect(f"/ws/{cid}", autoping=False, heartbeat=None)
    pings = 0
    while True:
        msg = await ws.receive(timeout=AUTH_DEADLINE_S + 5)
        if msg.type is WSMsgType.PING:
            pings += 1
            await ws.pong(msg.data)
            continue
        assert msg.type is WSMsgType.CLOSE, msg
        return msg.data, time.monotonic() - started, pings


async def test_sockets_answering_pings_are_closed_at_the_auth_deadline(
    client: TestClient, consultation: Consultation
) -> None:
    results = await asyncio.gather(
        *(ping_answering_client(client, consultation.id) for _ in range(20))
    )
    assert AUTH_DEADLINE_S > HEARTBEAT_S
    for code, seconds, pings in results:
        assert code == CLOSE_TIMEOUT
        assert pings >= 1  # the pongs were there, and did not stretch the deadline
        assert AUTH_DEADLINE_S - 0.2 <= seconds <= AUTH_DEADLINE_S + 1.0


async def raw_socket(client: TestClient, path: str, token: str) -> asyncio.StreamReader:
    """A WebSocket opened by hand (so it can send half a frame); returns the reader, after the
    101 and with the writer on ``reader.writer``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    reader.writer = writer  # type: ignore[attr-defined]
    return reader


async def close_code(reader: asyncio.StreamReader, timeout: float) -> int:
    """Reads server frames until the close frame; returns its code."""
    async with asyncio.timeout(timeout):
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


async def test_an_authenticated_socket_trickling_a_frame_is_closed_at_the_frame_deadline(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    token = make_token("surgeon", consultation.id)
    reader = await raw_socket(client, f"/ws/{consultation.id}", token)
    writer: asyncio.StreamWriter = reader.writer  # type: ignore[attr-defined]
    started = time.monotonic()
    writer.write(bytes([0x81, 0x80 | 100]) + os.urandom(4))  # a masked 100-byte text frame...

    async def trickle() -> None:
        for _ in range(40):  # ...of which one byte arrives every 0.25 s
            await asyncio.sleep(0.25)
            writer.write(b"x")
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    try:
        code = await close_code(reader, FRAME_DEADLINE_S + 3)
    finally:
        trickling.cancel()
        writer.close()
    assert code == CLOSE_TIMEOUT
    assert time.monotonic() - started <= FRAME_DEADLINE_S + 1.0


async def test_an_idle_authenticated_socket_that_answers_pings_stays(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    """The frame deadline does not touch a quiet page: its pongs are frames."""
    token = make_token("surgeon", consultation.id)
    ws = await client.ws_connect(
        f"/ws/{consultation.id}", headers={"Authorization": f"Bearer {token}"}
    )
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(FRAME_DEADLINE_S * 2):
            while True:  # the client library answers pings while it reads
                msg = await ws.receive()
                assert msg.type is WSMsgType.TEXT, msg
    assert not ws.closed
    await ws.close()


def test_the_deadlines_are_read_from_the_environment() -> None:
    env = {"ENDOLINK_WS_AUTH_TIMEOUT_S": "2.5", "ENDOLINK_WS_FRAME_DEADLINE_S": "7"}
    settings = Settings.from_env(env)
    assert (settings.ws_auth_timeout_s, settings.ws_frame_deadline_s) == (2.5, 7.0)
    defaults = Settings.from_env({})
    assert (defaults.ws_auth_timeout_s, defaults.ws_frame_deadline_s) == (5.0, 10.0)
