"""Every outside input is answered: the classes that once answered 500 with a traceback (and
their families) end in a 4xx ``{"error", "reason"}`` or a WebSocket close code, and nothing is
logged at ERROR or with a traceback. Real app on 127.0.0.1; raw sockets where a client library
would refuse to send the input."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from signaling.auth.grants import ANY_CONSULTATION
from signaling.db.store import Consultation
from signaling.http.errors import error_middleware
from signaling.http.json_input import MAX_DEPTH, nesting_depth
from signaling.settings import Settings
from tests.conftest import TEST_SECRET, MakeToken, bearer, error_of

DEEP_ARRAY = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, ws_auth_timeout_s=1.0)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR line and no traceback anywhere in what the server logged."""
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert "Traceback" not in caplog.text


async def raw_http(client: TestClient, request: bytes) -> tuple[int, bytes]:
    """Status and body of one request written byte for byte (``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_non_utf8_authorization_header_is_a_401(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for header in (b"Bearer \xff\xfe", b"\xc3\xa9\xff", b"Bearer eyJ\xed\xa0\x80.a.b"):
        status, body = await raw_http(
            client,
            b"GET /api/session HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + header
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert status == 401 and b'"error": "unauthorized"' in body
    assert_quiet(caplog)


async def test_a_lone_surrogate_token_closes_the_socket_with_4401(
    client: TestClient, consultation: Consultation, caplog: pytest.LogCaptureFixture
) -> None:
    for text in (
        '{"type": "auth", "token": "\\ud800abc"}',
        '{"type":"auth","token":"a.\\udfff.b"}',
    ):
        ws = await client.ws_connect(f"/ws/{consultation.id}")
        await ws.send_str(text)
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4401, msg
    assert_quiet(caplog)


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, '{"title": ' + DEEP_ARRAY + "}"])
async def test_json_nested_1000_deep_is_a_400_on_every_json_route(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    body: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = f"/api/consultations/{consultation.id}"
    for path in ("/api/consultations", "/api/join", f"{base}/consent", f"{base}/invites"):
        response = await client.post(path, data=body, headers=admin)
        assert await error_of(response, 400) == "bad-request"
        assert "nested deeper" in (await response.json())["reason"]
    response = await client.post(f"{base}/recording", data=body, headers=admin)
    assert await error_of(response, 400) == "bad-request"
    assert_quiet(caplog)


async def test_json_nested_1000_deep_closes_the_socket_with_4400(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unauthenticated = await client.ws_connect(f"/ws/{consultation.id}")
    await unauthenticated.send_str(DEEP_OBJECT)
    assert (await unauthenticated.receive(timeout=5)).data == 4400
    token = make_token("surgeon", consultation.id)
    ws = await client.ws_connect(f"/ws/{consultation.id}", headers=bearer(token))
    await ws.send_str('{"type": "stats", "stats": ' + DEEP_ARRAY + "}")
    while (msg := await ws.receive(timeout=5)).type is WSMsgType.TEXT:
        pass
    assert msg.type is WSMsgType.CLOSE and msg.data == 4400 and "nested" in (msg.extra or "")
    assert_quiet(caplog)


def test_nesting_is_counted_outside_strings_only() -> None:
    assert nesting_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[["}') == 1
    assert nesting_depth('{"points": [[0.1, 0.2], [0.3, 0.4]]}') == 3
    assert nesting_depth("[" * (MAX_DEPTH + 1)) == MAX_DEPTH + 1


UNTERMINATED_ESCAPES = '"' + '\\"' * 30_000
"""Quotes that never close, each escaped: with a backtracking string pattern every quote rescanned
to the end (64 KiB took 41 s on the event loop)."""


def test_counting_nesting_is_one_pass_whatever_the_quotes() -> None:
    start = time.perf_counter()
    assert nesting_depth(UNTERMINATED_ESCAPES) == 0
    assert nesting_depth("[" + UNTERMINATED_ESCAPES + "]") == 1
    assert time.perf_counter() - start < 0.2


async def test_an_unterminated_string_of_escaped_quotes_is_answered_at_once(
    client: TestClient, consultation: Consultation, caplog: pytest.LogCaptureFixture
) -> None:
    start = time.perf_counter()
    response = await client.post("/api/join", data=UNTERMINATED_ESCAPES)
    assert await error_of(response, 400) == "bad-request"
    socket = await client.ws_connect(f"/ws/{consultation.id}")
    await socket.send_str(UNTERMINATED_ESCAPES)
    assert (await socket.receive(timeout=5)).type is WSMsgType.CLOSE
    assert time.perf_counter() - start < 2
    assert_quiet(caplog)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("until=9999-12-31", 200),  # the last day there is: no "next day" to add
        ("since=0001-01-01", 200),
        ("since=0001-01-01T00:00:00%2B23:59", 200),
        ("until=9999-12-31T23:59:59-23:59", 200),
        ("until=0000-01-01", 400),
        ("since=99999-01-01", 400),
        ("since=NaN", 400),
        ("until=-1", 400),
        ("since=2026-02-30", 400),
        ("until=" + "9" * 5000, 400),
        ("until=%F0%9F%98%80", 400),
        ("consultation=%F0%9F%98%80", 403),
    ],
)
async def test_recording_list_dates_out_of_range_are_a_400(
    client: TestClient,
    make_token: MakeToken,
    query: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_token("admin", ANY_CONSULTATION)
    if query.startswith("consultation"):
        token = make_token("surgeon", "someoneElse1", may_replay=True)
    response = await client.get(f"/api/recordings?{query}", headers=bearer(token))
    if status == 200:
        assert response.status == 200 and (await response.json()) == {"recordings": []}
    else:
        await error_of(response, status)
    assert_quiet(caplog)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/netcheck/download?bytes=-1", 400),
        ("/netcheck/download?bytes=NaN", 400),
        ("/netcheck/download?bytes=1e9", 400),
        ("/netcheck/download?bytes=" + "9" * 400, 413),
        ("/netcheck/download?bytes=%EF%BC%91", 400),  # a full-width digit one
    ],
)
async def test_numbers_in_queries_out_of_range_are_a_4xx(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    path: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_token("clinic", consultation.id)
    response = await client.get(
        f"/api/consultations/{consultation.id}{path}", headers=bearer(token)
    )
    await error_of(response, status)
    assert_quiet(caplog)


@pytest.mark.parametrize(
    "body",
    [
        {"role": "surgeon", "ttl_s": 10**100},
        {"role": "surgeon", "ttl_s": -(10**30)},
        {"role": "surgeon", "ttl_s": 1e308},
        {"role": "surgeon", "ttl_s": True},
        {"role": ["surgeon"]},
        {"role": {"a": 1}},
        {"role": None},
        {"role": "surgeon", "name": 7},
        {"role": "surgeon", "name": "\ud800"},
        {"role": "surgeon\ud800"},
    ],
)
async def test_wrong_json_types_and_huge_numbers_are_a_400(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    body: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = json.dumps(body)  # ensure_ascii: a lone surrogate travels as \ud800
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites", data=raw, headers=admin
    )
    await error_of(response, 400)
    assert_quiet(caplog)


@pytest.mark.parametrize(
    "raw",
    [
        '{"code": "\\ud800"}',  # valid JSON, no Unicode text
        '{"\\udfff": "x"}',
        "1" * 5000,  # past Python's int digit limit
        '{"code": NaN}',
        '{"code": Infinity}',
        "\xff\xfe",
        '"\\ud800"',
        "[]",
        "null",
    ],
)
async def test_bodies_that_are_no_usable_json_are_a_400(
    client: TestClient, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = raw.encode("latin-1") if raw == "\xff\xfe" else raw.encode()
    response = await client.post("/api/join", data=data)
    await error_of(response, 400)
    assert_quiet(caplog)


@pytest.mark.parametrize(
    "path",
    [
        "/api/consultations/%F0%9F%98%80",
        "/api/consultations/%ED%A0%80",
        "/api/consultations/%00",
        "/api/recordings/%F0%9F%98%80",
        "/api/recordings/%ED%A0%80/download",
        "/api/consultations/" + "x" * 4000,
        "/ws/%ED%A0%80",
        "/j/%ED%A0%80",
        "/api/nothing-here%0d%0a",
    ],
)
async def test_unicode_and_control_characters_in_paths_are_answered(
    client: TestClient, admin: dict[str, str], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, body = await raw_http(
        client,
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {admin['Authorization']}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert 400 <= status < 500 or (status == 200 and path.startswith("/j/")), (status, body)
    assert_quiet(caplog)


async def test_wrong_content_types_and_empty_bodies_are_a_4xx(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clinic = bearer(make_token("clinic", consultation.id))
    cid = consultation.id
    answers = [
        await client.post(f"/whip/{cid}", data="v=0", headers=clinic),
        await client.post(f"/whip/{cid}", data=b"", headers={**clinic, "Content-Type": "x/y"}),
        await client.post(f"/api/consultations/{cid}/snapshots", data=b"", headers=clinic),
        await client.post("/api/join", data=b""),
        await client.post(f"/api/consultations/{cid}/recording", data=b"", headers=clinic),
    ]
    assert [a.status for a in answers] == [415, 415, 415, 400, 400]
    for answer in answers:
        await error_of(answer, answer.status)
    assert_quiet(caplog)


async def test_a_bug_is_a_500_json_and_one_log_line_without_its_message(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The last resort of the error middleware: the shape and a generic reason for the client,
    the exception's type and place (never its message) for the operator."""

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("Dr Patient Name")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/{tail}", broken)
    client = await aiohttp_client(app)
    response = await client.get("/api/broken%0aforged")
    assert await error_of(response, 500) == "internal-error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "KeyError at test_errors.py:" in errors[0].getMessage()
    assert "Patient" not in caplog.text and not errors[0].exc_info
    assert "\\x0aforged" in errors[0].getMessage()


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("consultations", {"title": "Dr \ud800"}),
        ("consultations", {"consent_by": "\udfff"}),
        ("consent", {"confirmed_by": "\ud800", "method": "paper"}),
    ],
)
async def test_a_lone_surrogate_in_a_body_is_a_400_that_quotes_nothing(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    field: str,
    body: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once an encoder's message from SQLite ("'utf-8' codec can't encode character...")."""
    path = "/api/consultations" + (f"/{consultation.id}/consent" if field == "consent" else "")
    response = await client.post(path, data=json.dumps(body), headers=admin)
    await error_of(response, 400)
    reason = (await response.json())["reason"]
    assert "codec" not in reason and "\\ud800" not in reason and "surrogate" in reason
    assert_quiet(caplog)


async def test_a_bug_after_the_answer_began_cuts_the_connection_with_one_log_line(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A second answer would corrupt the first (a stream, a download): the client sees a broken
    transfer instead of a short one that looks complete."""

    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first bytes")
        raise KeyError("Dr Patient Name")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/half", half)
    client = await aiohttp_client(app)
    with pytest.raises(aiohttp.ClientPayloadError):
        await (await client.get("/api/half")).read()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "KeyError" in errors[0].getMessage()
    assert "Patient" not in caplog.text and "Traceback" not in caplog.text


async def test_the_www_authenticate_description_stays_one_quoted_string(
    client: TestClient,
) -> None:
    token = jwt.encode({"iss": "endolink", "sub": "x"}, TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/session", headers=bearer(token))
    await error_of(response, 401)
    challenge = response.headers["WWW-Authenticate"]
    description = challenge.partition('error_description="')[2]
    assert description.endswith('"') and '"' not in description[:-1], challenge
