"""Rate limits: failed authentications per address, WHIP/WHEP offers per identity and per address;
each 429 with ``Retry-After`` and a readable reason."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient

from signaling.app import create_app
from signaling.auth.grants import Grant, Role, new_identity
from signaling.db.store import Consultation
from signaling.keys import STORE, TOKENS
from signaling.settings import Settings
from tests.conftest import MakeToken, bearer, error_of
from tests.signaling.test_websocket import closed_with, next_of
from tests.signaling.test_whip import offer

BURST = Settings().auth_failure_limit[0]


async def refused_after(client: TestClient, attempts: int, request) -> int:  # type: ignore[no-untyped-def]
    """How many requests were answered before the first 429 (``attempts`` if none was)."""
    for n in range(attempts):
        response = await request(n)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            await error_of(response, 429)
            return n
        await response.release()
    return attempts


async def offer_and_hang_up(client: TestClient, cid: str, sdp: str, token: str):  # type: ignore[no-untyped-def]
    """A WHEP offer; a session it made is ended at once, so only the offer rate counts (the
    limits on sessions held at once are tests/signaling/test_whip_limits.py's)."""
    response = await client.post(
        f"/whep/{cid}", data=sdp, headers={"Content-Type": "application/sdp", **bearer(token)}
    )
    if response.status == 201:
        await (await client.delete(response.headers["Location"], headers=bearer(token))).release()
    return response


async def test_bad_token_guesses_hit_429_after_the_burst(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    def guess(n: int):  # type: ignore[no-untyped-def]
        return client.get("/api/session", headers=bearer(f"guess.{n}.x"))

    assert await refused_after(client, 500, guess) == BURST
    refused = await guess(0)
    assert await error_of(refused, 429) == "too-many-attempts"
    assert "Wait" in (await refused.json())["reason"]
    ws = await client.ws_connect(f"/ws/{consultation.id}")
    await ws.send_json({"type": "auth", "token": "guess.ws.x"})
    code, reason = await closed_with(ws)
    assert code == 4429 and "Wait" in reason


async def test_a_valid_token_from_an_address_over_its_budget_is_still_served(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    """One sender of bad tokens behind a hospital's NAT must not lock everyone there out: only
    refused tokens get the 429."""
    for n in range(BURST + 5):
        await (await client.get("/api/session", headers=bearer(f"guess.{n}.x"))).release()
    assert (await client.get("/api/session", headers=bearer("guess.again.x"))).status == 429
    good = make_token("surgeon", consultation.id)
    assert (await client.get("/api/session", headers=bearer(good))).status == 200
    ws = await client.ws_connect(f"/ws/{consultation.id}")
    await ws.send_json({"type": "auth", "token": good})
    assert (await next_of(ws, "welcome"))["type"] == "welcome"
    await ws.close()


async def test_refused_websocket_tokens_count_as_failures(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    for n in range(BURST):
        ws = await client.ws_connect(f"/ws/{cid}")
        await ws.send_json({"type": "auth", "token": f"guess.{n}.x"})
        assert (await closed_with(ws))[0] == 4401
    refused = await client.get("/api/session", headers=bearer("guess.http.x"))
    assert await error_of(refused, 429) == "too-many-attempts"
    served = await client.get("/api/session", headers=bearer(make_token("surgeon", cid)))
    assert served.status == 200


async def test_good_tokens_and_no_tokens_never_count(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    token = make_token("surgeon", consultation.id)
    for _ in range(BURST + 10):
        assert (await client.get("/api/session")).status == 401  # no token: no guess
        assert (await client.get("/api/session", headers=bearer(token))).status == 200


async def test_one_identity_cannot_open_200_sessions(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid, token = consultation.id, make_token("observer", consultation.id)
    sdp = await offer(kinds=("video",), direction="recvonly")

    async def view(n: int):  # type: ignore[no-untyped-def]
        return await offer_and_hang_up(client, cid, sdp, token)

    allowed = await refused_after(client, 200, view)
    assert allowed == Settings().session_limit_per_identity[0]
    refused = await view(0)
    assert await error_of(refused, 429) == "rate-limited"
    assert "Wait" in (await refused.json())["reason"]


async def test_one_address_is_limited_across_identities(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(
        create_app(replace(settings, session_limit_per_address=(5, 60.0)))
    )
    cid = (await client.app[STORE].create("Limits", "VP8", consent_by="Dr. Bat")).id
    sdp = await offer(kinds=("video",), direction="recvonly")
    tokens = client.app[TOKENS]

    async def view(n: int):  # type: ignore[no-untyped-def]
        # A new identity each time.
        token = tokens.issue(Grant.for_role(Role.OBSERVER, cid, new_identity(Role.OBSERVER), 60))
        return await offer_and_hang_up(client, cid, sdp, token)

    assert await refused_after(client, 20, view) == 5


def test_limit_settings_parse_and_refuse_nonsense() -> None:
    env = {"ENDOLINK_SESSION_LIMIT_PER_ADDRESS": "200,0.25"}
    assert Settings.from_env(env).session_limit_per_address == (200, 0.25)
    for bad in ("0,1", "5", "5,0", "x,y"):
        with pytest.raises(ValueError, match="BURST,REFILL_S"):
            Settings.from_env({"ENDOLINK_AUTH_FAILURE_LIMIT": bad})
