"""Headers on every answer (signaling/http/headers.py): ``no-store`` on API answers and anything
carrying a token, ``nosniff`` everywhere, HSTS over TLS, and no version banner — checked on
real answers of the real app, TLS through a real handshake with the server's own CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from signaling.app import create_app
from signaling.db.store import Consultation
from signaling.http.headers import HSTS
from signaling.settings import Settings
from signaling.tls import make_certificates, ssl_context
from tests.conftest import MakeToken, bearer
from tests.signaling.test_errors import raw_http


async def test_every_api_answer_is_no_store_and_nosniff_with_no_banner(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    token = bearer(make_token("surgeon", consultation.id))
    cid = consultation.id
    answers = [
        await client.get("/api/session", headers=token),
        await client.get("/api/session"),  # 401
        await client.get(f"/api/consultations/{cid}", headers=token),
        await client.get(f"/api/consultations/{cid}/snapshots", headers=token),
        await client.get("/api/recordings", headers=token),
        await client.get("/api/nothing"),  # 404
        await client.post(f"/whep/{cid}", data="v=0", headers=token),  # 415
        await client.options(f"/whip/{cid}"),
        await client.get("/j/7kq2-mx9d-w4hr"),
        await client.post("/api/join", json={"code": "7kq2-mx9d-w4hr"}),
        await client.get("/api/openapi.json"),
    ]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store", answer.url
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.url
        assert answer.headers["Server"] == "EndoLink", answer.url
        assert "Strict-Transport-Security" not in answer.headers  # plain HTTP


async def test_pages_and_static_files_keep_their_own_caching_and_get_nosniff(
    client: TestClient,
) -> None:
    page, module = await client.get("/surgeon"), await client.get("/static/js/i18n.js")
    assert page.headers["Cache-Control"] == "no-store"
    assert module.headers["Cache-Control"] == "no-cache"
    for answer in (page, module, await client.get("/static/missing.js")):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Server"] == "EndoLink"


async def test_a_page_fetched_with_a_token_is_not_stored(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    answer = await client.get(
        "/static/js/i18n.js", headers=bearer(make_token("surgeon", consultation.id))
    )
    assert answer.headers["Cache-Control"] == "no-store"


async def test_a_refused_request_line_has_no_version_banner(client: TestClient) -> None:
    status, _ = await raw_http(client, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    reader_answer = await client.get("/")
    assert reader_answer.headers["Server"] == "EndoLink"


async def test_hsts_is_sent_over_tls(aiohttp_server, settings: Settings, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    server: TestServer = await aiohttp_server(create_app(settings), ssl=ssl_context(cert, key))
    trust = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession() as session:
        for path in ("/api/session", "/", "/static/js/i18n.js"):
            async with session.get(f"https://127.0.0.1:{server.port}{path}", ssl=trust) as answer:
                assert answer.headers["Strict-Transport-Security"] == HSTS
                assert answer.headers["Server"] == "EndoLink"
