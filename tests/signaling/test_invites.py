"""Invites and their short links: creating (admins), opening (``POST /api/join``), expiry,
withdrawal, the rate limit on failed lookups, and codes kept out of the logs."""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.auth.grants import Role, TokenIssuer
from signaling.auth.invite_codes import ALPHABET, BITS, code_hash, new_code, normalise
from signaling.db.store import Consultation
from signaling.http.throttle import FailureBudget
from signaling.keys import FAILED_JOINS, INVITES
from signaling.settings import Settings
from tests.conftest import OTHER_CID, MakeToken, bearer, error_of, join
from tests.postgres import BACKENDS, query

CODE = re.compile(r"[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}")


async def invite(
    client: TestClient, admin: dict[str, str], cid: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/consultations/{cid}/invites", json={"role": "clinic", **body}, headers=admin
    )
    assert response.status == 201, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """conftest's settings, with the records in SQLite or in a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return settings
    url: str = request.getfixturevalue("postgres_url")
    return settings.with_overrides(database_url=url)


def code_of(link: str) -> str:
    return link.rpartition("/j/")[2]


# --- the code ---------------------------------------------------------------------------------


def test_a_code_is_short_readable_and_carries_60_random_bits() -> None:
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(CODE.fullmatch(code) and 12 <= len(code) <= 16 for code in codes)
    assert len(ALPHABET) == 32 and BITS >= 60
    assert not set("ilou") & set(ALPHABET)
    # Every symbol is drawn: over 2000 codes each of the 32 appears (expected ~750 times).
    counts = {symbol: sum(code.count(symbol) for code in codes) for symbol in ALPHABET}
    assert min(counts.values()) > 500


def test_a_code_survives_dictation_and_retyping() -> None:
    assert normalise("AB0C-D1EF-GH2J") == "ab0cd1efgh2j"
    assert normalise(" abOc dIef gh2j ") == normalise("ab0c-dLef-gh2j") == "ab0cd1efgh2j"
    for bad in ("", "abcd-efgh", "abcd-efgh-jkmnp", "abcd-efgh-jkmu", "x" * 5000, "ab/c-efgh-jkmn"):
        assert normalise(bad) is None
    assert len(code_hash("ab0cd1efgh2j")) == 64


# --- POST /api/consultations/{cid}/invites ------------------------------------------------


@pytest.mark.parametrize(("role", "page"), [("clinic", "clinic"), ("observer", "surgeon")])
async def test_an_admin_invites_a_participant(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    tokens: TokenIssuer,
    settings: Settings,
    role: str,
    page: str,
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites",
        json={"role": role, "ttl_s": 120},
        headers=admin,
    )
    assert response.status == 201
    invite = await response.json()
    assert set(invite) == {"id", "link", "role", "page", "expires_at"}
    assert invite["link"].startswith(f"{settings.base_url}/j/")
    answer = await join(client, invite["link"])
    assert answer["page"] == invite["page"] == page
    grant = tokens.verify(answer["token"])
    assert (grant.role, grant.cid, invite["role"]) == (Role(role), consultation.id, role)
    assert invite["expires_at"] == grant.expires_at
    assert abs(grant.expires_at - time.time() - 120) < 5


async def test_an_invite_without_ttl_lasts_the_default_time(
    client: TestClient, admin: dict[str, str], consultation: Consultation, settings: Settings
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites", json={"role": "surgeon"}, headers=admin
    )
    invite = await response.json()
    assert abs(invite["expires_at"] - time.time() - settings.token_ttl_s) < 5


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"role": "admin"},
        {"role": "janitor"},
        {"role": 1},
        {"role": "clinic", "ttl_s": 59},
        {"role": "clinic", "ttl_s": 7 * 24 * 3600 + 1},
        {"role": "clinic", "ttl_s": "600"},
        {"role": "clinic", "ttl_s": 600.5},
        {"role": "clinic", "ttl_s": True},
    ],
)
async def test_invalid_invites_are_a_400(
    client: TestClient, admin: dict[str, str], consultation: Consultation, body: dict[str, Any]
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites", json=body, headers=admin
    )
    assert await error_of(response, 400) == "bad-request"


@pytest.mark.parametrize("role", ["clinic", "surgeon", "observer"])
async def test_only_admins_invite(
    client: TestClient, make_token: MakeToken, consultation: Consultation, role: str
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites",
        json={"role": "observer"},
        headers=bearer(make_token(role, consultation.id)),
    )
    assert await error_of(response, 403) == "forbidden"


async def test_an_admin_of_another_consultation_cannot_invite(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    response = await client.post(
        f"/api/consultations/{consultation.id}/invites",
        json={"role": "observer"},
        headers=bearer(make_token("admin", OTHER_CID)),
    )
    assert await error_of(response, 403) == "forbidden"


async def test_an_invite_to_an_unknown_consultation_is_a_404(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/api/consultations/unknown1234/invites", json={"role": "observer"}, headers=admin
    )
    assert await error_of(response, 404) == "not-found"


# --- POST /api/join -------------------------------------------------------------------------


async def test_a_short_link_opens_as_the_same_participant_every_time(
    client: TestClient, admin: dict[str, str], consultation: Consultation, tokens: TokenIssuer
) -> None:
    link = (await invite(client, admin, consultation.id, role="observer"))["link"]
    base, _, code = link.rpartition("/j/")
    first, again = await join(client, link), await join(client, f"{base}/j/{code.upper()}")
    assert (first["page"], first["role"]) == ("surgeon", "observer")
    grants = [tokens.verify(answer["token"]) for answer in (first, again)]
    assert grants[0].identity == grants[1].identity
    assert (grants[0].role, grants[0].cid) == (Role.OBSERVER, consultation.id)
    session = await client.get("/api/session", headers=bearer(first["token"]))
    assert (await session.json())["role"] == "observer"


async def test_the_code_is_stored_hashed(
    client: TestClient, admin: dict[str, str], consultation: Consultation, settings: Settings
) -> None:
    code = code_of((await invite(client, admin, consultation.id))["link"])
    if settings.database_url:
        raw = repr(query(settings.database_url, "SELECT * FROM invites")).encode()
    else:
        raw = (settings.data_dir / "endolink.sqlite3").read_bytes()
        for path in settings.data_dir.glob("endolink.sqlite3*"):
            raw += path.read_bytes()
    assert code.encode() not in raw and normalise(code).encode() not in raw  # type: ignore[union-attr]
    assert code_hash(normalise(code) or "").encode() in raw


async def test_an_unknown_code_is_a_404_with_a_reason(client: TestClient) -> None:
    response = await client.post("/api/join", json={"code": new_code()})
    assert await error_of(response, 404) == "unknown-link"
    assert "coordinator" in (await response.json())["reason"]


async def test_an_expired_link_is_a_410(
    client: TestClient, consultation: Consultation, settings: Settings
) -> None:
    book = client.app[INVITES]
    _, code = await book.add(
        consultation.id, Role.CLINIC, "clinic", "clinic-x", int(time.time()) - 1
    )
    response = await client.post("/api/join", json={"code": code})
    assert await error_of(response, 410) == "link-expired"
    assert "This link has expired" in (await response.json())["reason"]


async def test_a_withdrawn_link_is_a_410_and_revoking_is_for_admins(
    client: TestClient, admin: dict[str, str], consultation: Consultation, make_token: MakeToken
) -> None:
    made = await invite(client, admin, consultation.id)
    path = f"/api/consultations/{consultation.id}/invites/{made['id']}"
    for role in ("clinic", "surgeon"):
        refused = await client.delete(path, headers=bearer(make_token(role, consultation.id)))
        assert await error_of(refused, 403) == "forbidden"
    other = await client.delete(path, headers=bearer(make_token("admin", OTHER_CID)))
    assert await error_of(other, 403) == "forbidden"
    await join(client, made["link"])  # still valid
    revoked = await client.delete(path, headers=admin)
    assert revoked.status == 200 and (await revoked.json())["revoked_at"]
    response = await client.post("/api/join", json={"code": code_of(made["link"])})
    assert await error_of(response, 410) == "link-withdrawn"
    assert "withdrawn" in (await response.json())["reason"]
    missing = await client.delete(f"{path}x", headers=admin)
    assert await error_of(missing, 404) == "not-found"


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'"abc"', b'{"code": 5}', b'{"code": null}', b'{"code": "x", "y": 1}'],
)
async def test_garbage_join_bodies_are_a_400(client: TestClient, body: bytes) -> None:
    response = await client.post("/api/join", data=body)
    assert await error_of(response, 400) == "bad-request"


@pytest.mark.parametrize("code", ["", "x" * 100_000, "../../etc", "\u0000\u202e", "abcd-efgh-jkmu"])
async def test_codes_that_cannot_exist_are_a_404(client: TestClient, code: str) -> None:
    response = await client.post("/api/join", json={"code": code})
    assert response.status in (404, 413)


@pytest.mark.parametrize("method", ("GET", "PUT", "DELETE"))
async def test_join_takes_only_post(client: TestClient, method: str) -> None:
    response = await client.request(method, "/api/join")
    assert await error_of(response, 405) == "method-not-allowed"


async def test_the_short_link_page_is_served_without_looking_the_code_up(
    client: TestClient,
) -> None:
    response = await client.get(f"/j/{new_code()}")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "/static/js/join.js" in await response.text()
    refused = await client.post(f"/j/{new_code()}")
    assert await error_of(refused, 405) == "method-not-allowed"


async def test_failed_lookups_are_rate_limited_per_address(
    client: TestClient, admin: dict[str, str], consultation: Consultation
) -> None:
    budget = client.app[FAILED_JOINS]
    link = (await invite(client, admin, consultation.id))["link"]
    for _ in range(budget.burst - 1):
        response = await client.post("/api/join", json={"code": new_code()})
        assert response.status == 404
    assert (await client.post("/api/join", data="{not json")).status == 400  # spends too
    limited = await client.post("/api/join", json={"code": new_code()})
    assert await error_of(limited, 429) == "too-many-attempts"
    # Over its budget the address still opens a working link: one mistyped link on a hospital's
    # shared address does not lock everyone behind it out.
    assert (await client.post("/api/join", json={"code": code_of(link)})).status == 200
    wait_s = int(limited.headers["Retry-After"])
    assert 1 <= wait_s <= math.ceil(budget.refill_s)
    assert f"Wait {wait_s} seconds" in (await limited.json())["reason"]


def test_the_failure_budget_refills_and_stays_bounded() -> None:
    now = [0.0]
    budget = FailureBudget(burst=3, refill_s=10.0, max_clients=100, clock=lambda: now[0])
    for _ in range(3):
        assert budget.retry_after("a") == 0
        budget.spend("a")
    assert budget.retry_after("a") == 10
    assert budget.retry_after("b") == 0
    now[0] += 4.0
    assert budget.retry_after("a") == 6
    now[0] += 6.0
    assert budget.retry_after("a") == 0
    for n in range(1000):
        budget.spend(f"10.0.{n // 256}.{n % 256}")
    assert len(budget._buckets) <= 100


async def test_codes_are_never_logged(
    client: TestClient,
    admin: dict[str, str],
    consultation: Consultation,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    link = (await invite(client, admin, consultation.id))["link"]
    code = code_of(link)
    await join(client, link)
    await client.get(f"/j/{code}")
    await client.post(f"/j/{code}")
    await client.post("/api/join", json={"code": code + "x"})
    await client.delete(f"/api/consultations/{consultation.id}/invites/nosuch", headers=admin)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    symbols = normalise(code) or ""
    assert code not in logged and symbols not in logged
    assert "/j/<redacted>" in logged
