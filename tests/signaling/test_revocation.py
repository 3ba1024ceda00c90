"""Withdrawing access: a consultation's links and tokens, or one link, end at once — sockets (4410),
media sessions, tokens (401), links (410) — while new links keep working."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from relay import FeedName
from signaling.auth.revocations import REFRESH_S
from signaling.cli import main
from signaling.db.store import DB_FILENAME
from signaling.keys import RECORDINGS, RELAY, SETTINGS
from signaling.settings import Settings
from signaling.ws.hub import CLOSE_WITHDRAWN
from tests.conftest import MakeToken, bearer, error_of, join
from tests.peers import Received, publisher, viewer, wait_until
from tests.replay_support import make_recording
from tests.signaling.test_websocket import closed_with, next_of
from tests.signaling.test_whip import offer


async def create(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        "/api/consultations", json={"title": "Revocation", "consent_by": "Dr. Bat"}, headers=admin
    )
    assert response.status == 201, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def room(client: TestClient, cid: str, token: str) -> ClientWebSocketResponse:
    ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(token))
    await next_of(ws, "welcome")
    return ws


async def frames_flow(received: Received, timeout: float = 10.0) -> bool:
    start = len(received.counters)
    return await wait_until(lambda: len(received.counters) > start + 5, timeout)


async def media_stopped(received: Received) -> bool:
    """No more than a frame or two in flight arrives over a second."""
    await asyncio.sleep(0.5)
    settled = len(received.counters)
    await asyncio.sleep(1.0)
    return len(received.counters) <= settled + 1


async def test_revoking_a_consultation_ends_its_sockets_media_tokens_and_links(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = await create(client, admin)
    cid, links = made["id"], made["links"]
    clinic = (await join(client, links["clinic"]))["token"]
    surgeon = (await join(client, links["surgeon"]))["token"]
    ws = await room(client, cid, surgeon)
    whip, whep = str(client.make_url(f"/whip/{cid}")), str(client.make_url(f"/whep/{cid}"))
    async with (
        publisher(whip, clinic, audio=False),
        viewer(whep, surgeon, ("video",)) as (
            _,
            _,
            received,
        ),
    ):
        assert await frames_flow(received)
        started = time.monotonic()
        revoked = await client.post(f"/api/consultations/{cid}/revoke", headers=admin)
        assert revoked.status == 200, await revoked.text()
        assert (await revoked.json())["invites_withdrawn"] == 4  # clinic, surgeon, observer, replay
        code, reason = await closed_with(ws)
        assert code == CLOSE_WITHDRAWN and "withdrawn" in reason
        router = client.app[RELAY].find(cid)
        assert await wait_until(lambda: router is None or not router.peers, timeout=3)
        assert await media_stopped(received)
        assert time.monotonic() - started < 5
    for old in (clinic, surgeon):
        refused = await client.get("/api/session", headers=bearer(old))
        assert await error_of(refused, 401) == "access-withdrawn"
        assert "withdrawn" in (await refused.json())["reason"]
    again = await client.ws_connect(f"/ws/{cid}", headers=bearer(surgeon))
    assert (await closed_with(again))[0] == CLOSE_WITHDRAWN
    link_refused = await client.post("/api/join", json={"code": links["clinic"].split("/j/")[1]})
    assert await error_of(link_refused, 410) == "link-withdrawn"
    # The consultation stays usable: the coordinator's new link works, socket and media alike.
    invite = await client.post(
        f"/api/consultations/{cid}/invites", json={"role": "surgeon"}, headers=admin
    )
    fresh = (await join(client, (await invite.json())["link"]))["token"]
    assert (await client.get("/api/session", headers=bearer(fresh))).status == 200
    await (await room(client, cid, fresh)).close()
    async with viewer(whep, fresh, ("video",)):
        pass


async def test_revoking_one_link_ends_only_its_participant(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = await create(client, admin)
    cid = made["id"]
    invite = await client.post(
        f"/api/consultations/{cid}/invites", json={"role": "observer"}, headers=admin
    )
    observer_invite = await invite.json()
    observer = (await join(client, observer_invite["link"]))["token"]
    surgeon = (await join(client, made["links"]["surgeon"]))["token"]
    watching, staying = await room(client, cid, observer), await room(client, cid, surgeon)
    whep = str(client.make_url(f"/whep/{cid}"))
    async with viewer(whep, observer, ("video",)), viewer(whep, surgeon, ("video",)):
        router = client.app[RELAY].find(cid)
        assert router is not None and len(router.peers) == 2
        path = f"/api/consultations/{cid}/invites/{observer_invite['id']}"
        assert (await client.delete(path, headers=admin)).status == 200
        assert (await closed_with(watching))[0] == CLOSE_WITHDRAWN
        assert await wait_until(lambda: len(router.peers) == 1, timeout=3)
        assert not staying.closed
        await staying.send_json({"type": "ping"})
        await next_of(staying, "pong")
    refused = await client.get("/api/session", headers=bearer(observer))
    assert await error_of(refused, 401) == "access-withdrawn"
    assert (await client.get("/api/session", headers=bearer(surgeon))).status == 200


async def test_a_media_token_made_before_a_withdrawal_is_refused(
    client: TestClient, admin: dict[str, str], make_token: MakeToken
) -> None:
    """The 5-minute ``?t=`` token of a replay is withdrawn with the access it came from: the
    consultation's (made before its withdrawal), or its link's (its identity withdrawn)."""
    made = await create(client, admin)
    cid = made["id"]
    data, index = client.app[SETTINGS].data_dir, client.app[RECORDINGS].index
    recording = await make_recording(data, index, cid, segments=(1.0,))

    async def media_url(token: str) -> str:
        path = f"/api/recordings/{recording.id}/media-token"
        answer = await client.get(path, headers=bearer(token))
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["media"][0]["url"])

    invite = await client.post(
        f"/api/consultations/{cid}/invites", json={"role": "surgeon"}, headers=admin
    )
    link = await invite.json()
    linked = await media_url((await join(client, link["link"]))["token"])
    assert (await client.get(linked)).status == 200
    path = f"/api/consultations/{cid}/invites/{link['id']}"
    assert (await client.delete(path, headers=admin)).status == 200
    refused = await client.get(linked)
    assert refused.status == 401 and await error_of(refused, 401) == "access-withdrawn"

    before = await media_url(make_token("surgeon", cid))
    assert (await client.get(before)).status == 200
    assert (await client.post(f"/api/consultations/{cid}/revoke", headers=admin)).status == 200
    refused = await client.get(before)
    assert refused.status == 401 and await error_of(refused, 401) == "access-withdrawn"
    assert "withdrawn" in (await refused.json())["reason"]
    after = await media_url(make_token("surgeon", cid))  # a token issued since: honoured
    assert (await client.get(after)).status == 200


async def test_an_offer_being_answered_when_access_is_withdrawn_gets_no_session(
    client: TestClient, admin: dict[str, str]
) -> None:
    """The window between a WHIP POST's token check and its session joining the Router: the
    withdrawal happens while the offer waits for the feed (held here, as a publish in progress
    holds it) and the answer is a 401, not a session that lives until the token expires."""
    made = await create(client, admin)
    cid = made["id"]
    clinic = (await join(client, made["links"]["clinic"]))["token"]
    sdp = await offer()
    router = client.app[RELAY].router(cid, "VP8")
    headers = {"Content-Type": "application/sdp", **bearer(clinic)}
    async with router._publishing[FeedName.ENDOSCOPE]:
        posting = asyncio.ensure_future(client.post(f"/whip/{cid}", data=sdp, headers=headers))
        assert await wait_until(lambda: router._negotiating > 0, timeout=5)
        revoked = await client.post(f"/api/consultations/{cid}/revoke", headers=admin)
        assert revoked.status == 200
    answer = await asyncio.wait_for(posting, 20)
    assert await error_of(answer, 401) == "access-withdrawn"
    assert await wait_until(lambda: not router.peers, timeout=3)


async def test_the_cli_withdraws_a_consultation_of_a_running_server(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    made = await create(client, admin)
    cid = made["id"]
    surgeon = (await join(client, made["links"]["surgeon"]))["token"]
    ws = await room(client, cid, surgeon)
    args = ["consult", "revoke", "--consultation", cid, "--data-dir", str(settings.data_dir)]
    started = time.monotonic()
    assert await asyncio.to_thread(main, args) == 0
    assert (await closed_with(ws))[0] == CLOSE_WITHDRAWN
    assert time.monotonic() - started < REFRESH_S + 2
    refused = await client.get("/api/session", headers=bearer(surgeon))
    assert await error_of(refused, 401) == "access-withdrawn"
    link = made["links"]["observer"]
    assert await asyncio.to_thread(main, ["consult", "revoke", link, *args[-2:]]) == 0
    with sqlite3.connect(settings.data_dir / DB_FILENAME) as db:
        audited = db.execute(
            "SELECT consultation_id, identity, role, detail FROM audit WHERE action = 'revoke'"
        ).fetchall()
    assert [row[:3] for row in audited] == [(cid, "cli", "admin")] * 2
    assert audited[0][3] == "every link (4 open)" and audited[1][3].startswith("observer link ")
    verify = ["audit", "verify", "--data-dir", str(settings.data_dir)]
    assert await asyncio.to_thread(main, verify) == 0  # the CLI's entries chain with the server's


async def test_who_may_withdraw_a_consultation(
    client: TestClient, admin: dict[str, str], make_token: MakeToken
) -> None:
    cid = (await create(client, admin))["id"]
    path = f"/api/consultations/{cid}/revoke"
    for role in ("clinic", "surgeon", "observer"):
        refused = await client.post(path, headers=bearer(make_token(role, cid)))
        assert await error_of(refused, 403) == "forbidden"
    other = await client.post(path, headers=bearer(make_token("admin", "someoneElse1")))
    assert await error_of(other, 403) == "forbidden"
    unknown = await client.post("/api/consultations/nosuchroom1/revoke", headers=admin)
    assert await error_of(unknown, 404) == "not-found"
    scoped = bearer(make_token("admin", cid))
    assert (await client.post(path, headers=scoped)).status == 200
    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        audited = db.execute(
            "SELECT consultation_id, role, detail FROM audit WHERE action = 'revoke'"
        ).fetchall()
    assert audited == [(cid, "admin", "every link (4 open)")]
    # The scoped admin token was issued for the consultation before now: withdrawn with it.
    assert await error_of(await client.post(path, headers=scoped), 401) == "access-withdrawn"


async def test_an_admin_token_for_one_consultation_cannot_create_others(
    client: TestClient, admin: dict[str, str], make_token: MakeToken
) -> None:
    cid = (await create(client, admin))["id"]
    scoped = bearer(make_token("admin", cid))
    refused = await client.post("/api/consultations", json={}, headers=scoped)
    assert await error_of(refused, 403) == "forbidden"
    assert "one consultation" in (await refused.json())["reason"]
    # Within its own consultation it still manages invites; never another's.
    own = await client.post(
        f"/api/consultations/{cid}/invites", json={"role": "observer"}, headers=scoped
    )
    assert own.status == 201
    other = await client.post(
        "/api/consultations/someoneElse1/invites", json={"role": "observer"}, headers=scoped
    )
    assert await error_of(other, 403) == "forbidden"
    listed = await client.get("/api/recordings", headers=scoped)
    assert listed.status == 200


def test_consult_revoke_takes_a_link_or_a_consultation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = ["consult", "revoke", "--data-dir", str(tmp_path)]
    assert main(base) == 2
    assert main([*base, "http://h/j/aaaa-bbbb-cccc", "--consultation", "abcdef123"]) == 2
    assert main([*base, "--consultation", "abcdef123"]) == 1  # no database there: one line
