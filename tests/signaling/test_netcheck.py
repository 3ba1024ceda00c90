"""The pre-call network check's endpoints: who may measure, the sizes it answers and accepts, the
per-identity budget, and the thresholds it derives from the publisher bitrate settings."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from signaling.auth.grants import Grant, Role, new_identity
from signaling.db.store import Consultation
from signaling.http.netcheck import BUDGET_BURST, BUDGET_REFILL_S, MAX_BYTES, feed_needs
from signaling.http.throttle import FailureBudget
from signaling.keys import NETCHECK_BUDGET, SETTINGS, TOKENS
from signaling.settings import Settings
from tests.conftest import OTHER_CID, MakeToken, bearer, error_of


def url(cid: str, suffix: str = "") -> str:
    return f"/api/consultations/{cid}/netcheck{suffix}"


async def download(client: TestClient, make_token: MakeToken, cid: str, query: str) -> Any:
    """A clinic's download request with ``query`` (``?bytes=N``)."""
    headers = bearer(make_token("clinic", cid))
    return await client.get(url(cid, f"/download{query}"), headers=headers)


async def test_any_member_gets_the_feed_needs_from_the_publisher_settings(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    for role in ("clinic", "surgeon", "observer"):
        response = await client.get(url(cid), headers=bearer(make_token(role, cid)))
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        assert body == feed_needs(client.app[SETTINGS].publisher_kbps)
    # 1500 kbit/s start + audio with 25 % headroom is "good", the 150 kbit/s floor "fair".
    assert body["upload_kbps"] == {"good": 1955, "fair": 268}
    assert body["max_bytes"] == MAX_BYTES == 2 * 1024 * 1024
    assert body["rtt_ms"]["good"] < body["rtt_ms"]["fair"]


@pytest.mark.parametrize("size", [0, 1, 65_537, MAX_BYTES])
async def test_download_answers_exactly_the_bytes_asked_for(
    client: TestClient, make_token: MakeToken, consultation: Consultation, size: int
) -> None:
    response = await download(client, make_token, consultation.id, f"?bytes={size}")
    assert response.status == 200
    assert response.content_type == "application/octet-stream"
    assert response.headers["Cache-Control"] == "no-store"
    data = await response.read()
    assert len(data) == size
    if size > 1024:  # noise: no repeated block for a compressing proxy to shrink
        assert data[:512] != data[512:1024]


async def test_upload_counts_the_bytes_received_with_or_without_a_length(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    headers = {**bearer(make_token("clinic", cid)), "Content-Type": "application/octet-stream"}
    response = await client.post(url(cid, "/upload"), data=b"\x01" * 300_000, headers=headers)
    assert response.status == 200
    assert await response.json() == {"received": 300_000}

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"\x02" * 100_000

    response = await client.post(url(cid, "/upload"), data=chunked(), headers=headers)
    assert await response.json() == {"received": 400_000}
    response = await client.post(url(cid, "/upload"), data=b"", headers=headers)
    assert await response.json() == {"received": 0}


async def test_more_than_2_mib_is_refused_with_a_reason(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    headers = bearer(make_token("clinic", cid))
    for size in (MAX_BYTES + 1, 10**30):
        response = await client.get(url(cid, f"/download?bytes={size}"), headers=headers)
        assert await error_of(response, 413) == "too-large"
        assert "2 MiB" in (await response.json())["reason"]
    too_big = b"\x00" * (MAX_BYTES + 1)
    response = await client.post(url(cid, "/upload"), data=io.BytesIO(too_big), headers=headers)
    assert await error_of(response, 413) == "too-large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(MAX_BYTES // 65536 + 1):
            yield b"\x00" * 65536

    response = await client.post(url(cid, "/upload"), data=chunked(), headers=headers)
    assert await error_of(response, 413) == "too-large"


@pytest.mark.parametrize(
    "query", ["", "?bytes=", "?bytes=-1", "?bytes=1.5", "?bytes=abc", "?bytes=%C2%B2", "?bytes=+1"]
)
async def test_a_download_size_that_is_not_a_whole_number_is_a_400(
    client: TestClient, make_token: MakeToken, consultation: Consultation, query: str
) -> None:
    response = await download(client, make_token, consultation.id, query)
    assert await error_of(response, 400) == "bad-request"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/download?bytes=10"), ("POST", "/upload")],
)
async def test_no_token_is_401_and_another_consultation_is_403(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    method: str,
    suffix: str,
) -> None:
    cid = consultation.id
    response = await client.request(method, url(cid, suffix))
    assert await error_of(response, 401) == "unauthorized"
    outsider = bearer(make_token("surgeon", OTHER_CID))
    response = await client.request(method, url(cid, suffix), headers=outsider)
    assert await error_of(response, 403) == "forbidden"


async def test_each_identity_has_its_own_budget_and_gets_a_retry_time(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(settings)
    now = [1000.0]  # the budget's clock: a loaded machine must not refill it mid-test
    app[NETCHECK_BUDGET] = FailureBudget(BUDGET_BURST, BUDGET_REFILL_S, clock=lambda: now[0])
    client = await aiohttp_client(app)
    cid = "netcheck0001"

    def token(role: Role) -> dict[str, str]:
        return bearer(app[TOKENS].issue(Grant.for_role(role, cid, new_identity(role), 600)))

    clinic = token(Role.CLINIC)
    for _ in range(BUDGET_BURST):
        assert (await client.get(url(cid), headers=clinic)).status == 200
    response = await client.get(url(cid, "/download?bytes=10"), headers=clinic)
    assert await error_of(response, 429) == "too-many-requests"
    assert response.headers["Retry-After"] == str(round(BUDGET_REFILL_S))
    assert "Wait 3 seconds" in (await response.json())["reason"]
    response = await client.post(url(cid, "/upload"), data=b"x", headers=clinic)
    assert response.status == 429
    # Someone else in the room still measures; the clinic again once a token refilled.
    assert (await client.get(url(cid), headers=token(Role.SURGEON))).status == 200
    now[0] += BUDGET_REFILL_S
    assert (await client.get(url(cid), headers=clinic)).status == 200
    assert (await client.get(url(cid), headers=clinic)).status == 429


async def test_refused_requests_do_not_spend_the_budget(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    clinic = bearer(make_token("clinic", cid))
    for _ in range(BUDGET_BURST + 5):
        response = await client.get(url(cid, f"/download?bytes={MAX_BYTES + 1}"), headers=clinic)
        assert response.status == 413
    assert (await client.get(url(cid), headers=clinic)).status == 200


async def test_an_upload_cut_short_by_the_page_ends_quietly(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """netcheck.js aborts a transfer that takes too long on a slow link: no traceback follows."""
    cid = consultation.id
    _, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"POST {url(cid, '/upload')} HTTP/1.1\r\nHost: {client.host}\r\n"
        f"Authorization: Bearer {make_token('clinic', cid)}\r\n"
        f"Content-Length: {MAX_BYTES}\r\n\r\n"
    )
    writer.write(head.encode() + b"x" * 65_536)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    response = await client.get(url(cid), headers=bearer(make_token("clinic", cid)))
    assert response.status == 200  # the server carries on
    await asyncio.sleep(0.2)  # the handler sees the lost connection
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
