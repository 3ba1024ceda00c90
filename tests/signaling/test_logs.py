"""What the outside world can put into the logs: tokens in a query string are redacted in the
access log, control characters in a path or header never forge a line, and requests aiohttp's
parser refuses are one warning line. Real requests to the real app on 127.0.0.1; the assertions
read the log records the server wrote."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from signaling.http.logs import loggable
from tests.conftest import MakeToken, bearer
from tests.signaling.test_errors import assert_quiet, raw_http

FAKE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlc2VjcmV0"


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


async def test_tokens_in_a_query_string_are_refused_and_redacted_in_the_access_log(
    client: TestClient, make_token: MakeToken, consultation: Consultation, caplog
) -> None:
    real = make_token("surgeon", consultation.id)
    queries = [
        f"/api/session?token={real}",
        f"/api/session?access_token={real}&x=1",
        f"/api/session?jwt={real}",
        f"/api/consultations/{consultation.id}?t={real}",
        f"/api/session?other={FAKE_JWT}",
        f"/api/{FAKE_JWT}",
    ]
    with caplog.at_level(logging.INFO):
        for query in queries:
            response = await client.get(query)
            assert response.status in (401, 404)
    access = lines(caplog, "aiohttp.access")
    assert len(access) == len(queries)
    assert all("<redacted>" in line for line in access), access
    assert real not in caplog.text and "c2lnbmF0dXJlc2VjcmV0" not in caplog.text
    assert "x=1" in access[1]  # only the token is blanked


async def test_a_control_character_in_a_path_or_header_cannot_forge_a_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        status, _ = await raw_http(
            client,
            b"GET /api/x%0d%0a127.0.0.1%20FORGED%1b[31m HTTP/1.1\r\nHost: x\r\n"
            # aiohttp refuses ASCII controls in header values, not C1 controls or U+2028
            b"User-Agent: evil\xc2\x85ua\r\nReferer: r\xe2\x80\xa8ref\r\n"
            b"Connection: close\r\n\r\n",
        )
    assert status == 404
    for record in caplog.records:
        message = record.getMessage()
        assert not any(c in message for c in "\r\n\x1b\x7f\x85\u2028"), message
    errors_line = lines(caplog, "signaling.http.errors")[0]
    assert "/api/x\\x0d\\x0a127.0.0.1 FORGED\\x1b[31m" in errors_line
    access = lines(caplog, "aiohttp.access")[0]
    assert "evil\\x85ua" in access and "r\\u2028ref" in access
    assert_quiet(caplog)


async def test_structured_access_log_values_are_clean_too(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A JSON formatter reads the values aiohttp passes as ``extra``: they are cleaned too."""
    with caplog.at_level(logging.INFO):
        await client.get(f"/api/session?token={FAKE_JWT}", headers={"User-Agent": "a\tb"})
    record = next(r for r in caplog.records if r.name == "aiohttp.access")
    values = [str(v) for k, v in vars(record).items() if k.startswith(("first_", "request_"))]
    assert values and not any(FAKE_JWT in v or "\t" in v for v in values), values


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # bad request line
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 HTTP/1.1\r\n\r\n",  # TLS to the HTTP port
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",  # a space in a header name
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",  # too long
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
)
async def test_requests_the_http_parser_refuses_are_one_warning_line(
    client: TestClient, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(request_bytes)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:80]
    assert b"Server: EndoLink" in answer and b"aiohttp/" not in answer
    server = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno > logging.DEBUG]
    assert len(server) <= 1
    for record in server:
        assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert_quiet(caplog)


def test_loggable_escapes_and_redacts() -> None:
    assert loggable("/a\nb") == "/a\\x0ab"
    assert loggable("/a\udcff") == "/a\\udcff"
    assert loggable("?t=abc&u=1") == "?t=<redacted>&u=1"
    assert loggable("?T=abc") == "?T=<redacted>"
    assert loggable("/j/7kq2-mx9d-w4hr") == "/j/<redacted>"
    assert loggable(f"Bearer {FAKE_JWT}") == "Bearer <redacted>"
    assert loggable("/api/consultations/abc?feed=endoscope") == (
        "/api/consultations/abc?feed=endoscope"
    )


async def test_the_websocket_never_logs_the_path_it_was_given(
    client: TestClient, caplog: pytest.LogCaptureFixture, make_token: MakeToken
) -> None:
    with caplog.at_level(logging.INFO):
        ws = await client.ws_connect("/ws/x%0aFORGED", headers=bearer(FAKE_JWT))
        await ws.receive(timeout=5)
    assert "FORGED" not in caplog.text.replace("\\x0aFORGED", "")
    assert all("\n" not in r.getMessage() for r in caplog.records)
