"""Shared fixtures: a real app on a temp data dir, tokens for every role, a consultation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role, TokenIssuer, new_identity
from signaling.db.store import Consultation
from signaling.keys import STORE, TOKENS
from signaling.settings import Settings

pytest_plugins = [
    "tests.processes",  # the ``processes`` fixture
    "tests.postgres",  # ``postgres_server`` (one per session) and ``postgres_url`` (per test)
    "tests.redis_server",  # ``redis_server`` (one per test)
]

TEST_SECRET = "test-secret-" + "x" * 40
OTHER_CID = "someoneElse1"

MakeToken = Callable[..., str]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        secret=TEST_SECRET,
        ice_host_addresses=("127.0.0.1",),
        publisher_timeout_s=1.5,
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def tokens(client: TestClient) -> TokenIssuer:
    return client.app[TOKENS]


@pytest.fixture
def make_token(tokens: TokenIssuer) -> MakeToken:
    """make_token(role, consultation, ttl_s=600, **grant_overrides) -> JWT."""

    def make(role: Role | str, consultation: str, ttl_s: int = 600, **overrides: object) -> str:
        role = Role(role)
        grant = Grant.for_role(role, consultation, new_identity(role), ttl_s)
        if overrides:
            grant = Grant(**{**grant.__dict__, **overrides})
        return tokens.issue(grant)

    return make


@pytest.fixture
async def consultation(client: TestClient) -> Consultation:
    """A consultation whose consent was recorded ahead of time (paper form)."""
    return await client.app[STORE].create(
        title="Post-op check", video_codec="VP8", consent_by="Dr. Bat", recorded_by="admin-test"
    )


@pytest.fixture
async def consultation_without_consent(client: TestClient) -> Consultation:
    return await client.app[STORE].create(title="No consent yet", video_codec="VP8")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(make_token: MakeToken) -> dict[str, str]:
    return bearer(make_token("admin", ANY_CONSULTATION))


async def error_of(response: Any, status: int) -> str:
    """Asserts the contract's error shape and returns its code."""
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error", "reason"} and body["reason"]
    return body["error"]


async def join(client: TestClient, link: str) -> dict[str, Any]:
    """What the page at a short link gets for it (``POST /api/join``): token, page, role."""
    response = await client.post("/api/join", json={"code": link.rpartition("/j/")[2]})
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer
