"""Any node is a door: offers for a consultation another node owns are redirected there (307),
the media flows through the owner, and pages are told where the media is (``media_url``).
Two real nodes in this process, one real redis-server, real peer connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from bench.redis_server import RedisServer
from client.testpattern import TestPatternTrack
from signaling.keys import CLUSTER, HUB, RELAY, STORE
from tests.peers import publisher, viewer, wait_until
from tests.signaling.cluster.nodes import node


async def test_offers_through_another_node_are_published_and_seen_on_the_owner(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The door node has no region: a viewer reaching it is redirected, not served by cascade
    # (test_cascade.py), which a region other than the owner's would turn on.
    async with (
        node(tmp_path, "seoul", redis_server.url) as seoul,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        await seoul.beat()
        # Made on the Ulaanbaatar node (its records), placed there by region.
        created = await ub.client.post(
            "/api/consultations",
            json={"title": "Post-op check", "consent_by": "Dr. Bat", "region": "ulaanbaatar"},
            headers={"Authorization": f"Bearer {ub.token('admin', '*')}"},
        )
        assert created.status == 201, await created.text()
        answer = await created.json()
        assert answer["node"] == "ulaanbaatar"
        cid = answer["id"]
        clinic = ub.token("clinic", cid)

        # A bare WHIP POST through Seoul: 307 to the same path on the owner, token not echoed.
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{seoul.url}/whip/{cid}",
                data="v=0\r\n",
                headers={"Authorization": f"Bearer {clinic}", "Content-Type": "application/sdp"},
                allow_redirects=False,
            ) as response:
                assert response.status == 307
                assert response.headers["Location"] == f"{ub.url}/whip/{cid}"
                assert response.headers["Access-Control-Allow-Origin"] == "*"
            # Without a valid token nobody learns where the consultation is.
            async with http.post(
                f"{seoul.url}/whip/{cid}",
                data="v=0\r\n",
                headers={"Authorization": "Bearer nope", "Content-Type": "application/sdp"},
                allow_redirects=False,
            ) as response:
                assert response.status == 401
            # A page on Seoul is told where the media is.
            async with http.get(
                f"{seoul.url}/api/session", headers={"Authorization": f"Bearer {clinic}"}
            ) as response:
                body = await response.json()
                assert body["media_url"] == body["view_url"] == ub.url  # no cascade: no region

        # The clinic and a surgeon both enter through Seoul; the media is on Ulaanbaatar.
        async with (
            publisher(f"{seoul.url}/whip/{cid}", clinic, audio=False) as (pc, whip),
            viewer(f"{seoul.url}/whep/{cid}", seoul.token("surgeon", cid), ("video",)) as (
                _,
                whep,
                seen,
            ),
        ):
            assert whip.location is not None and whip.location.startswith(f"{ub.url}/whip/")
            assert whep.location is not None and whep.location.startswith(f"{ub.url}/whep/")
            pattern = pc.getTransceivers()[0].sender.track
            assert isinstance(pattern, TestPatternTrack)
            assert await wait_until(lambda: len(seen.counters) >= 30, timeout=15)
            assert all(b > a for a, b in zip(seen.counters, seen.counters[1:], strict=False))
            assert max(seen.counters) <= pattern.counter
            assert cid in ub.client.app[RELAY].routers
            assert cid not in seoul.client.app[RELAY].routers
            assert await seoul.client.app[STORE].get(cid) is None  # Seoul never needed it


async def test_without_redis_a_live_consultation_goes_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with node(tmp_path, "seoul", redis_server.url) as seoul:
        consultation = await seoul.client.app[STORE].create("Post-op check", "VP8", "Dr. Bat", "t")
        cid = consultation.id
        whip, whep = f"{seoul.url}/whip/{cid}", f"{seoul.url}/whep/{cid}"
        async with (
            publisher(whip, seoul.token("clinic", cid), audio=False),
            viewer(whep, seoul.token("surgeon", cid), ("video",)) as (_, _, before),
        ):
            assert await wait_until(lambda: len(before.counters) >= 10, timeout=15)
            redis_server.stop()
            await seoul.beat()
            assert (await (await seoul.client.get("/readyz")).json())["status"] == "degraded"
            seen = len(before.counters)
            assert await wait_until(lambda: len(before.counters) >= seen + 30, timeout=15)
            # Someone joining the consultation this node hosts is still let in.
            async with viewer(whep, seoul.token("observer", cid), ("video",)) as (_, _, late):
                assert await wait_until(lambda: len(late.counters) >= 10, timeout=15)


async def test_readyz_says_when_redis_is_away_and_the_node_serves_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with node(tmp_path, "seoul", redis_server.url) as seoul:
        ready = await seoul.client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["checks"]["cluster"] == "ok"
        redis_server.stop()
        await seoul.beat()
        ready = await seoul.client.get("/readyz")
        body = await ready.json()
        assert ready.status == 200 and body["status"] == "degraded"
        assert "Redis is unreachable" in body["checks"]["cluster"]
        # A consultation it does not host: 503 with a reason and Retry-After, not a guess.
        token = seoul.token("clinic", "unknownCid01")
        refused = await seoul.client.post(
            "/whip/unknownCid01",
            data="v=0\r\n",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
        )
        assert refused.status == 503
        assert (await refused.json())["error"] == "cluster-unavailable"
        assert refused.headers["Retry-After"] == "1"
        redis_server.start()
        await seoul.beat()
        body = await (await seoul.client.get("/readyz")).json()
        assert body["status"] == "ready" and body["checks"]["cluster"] == "ok"


async def test_a_page_on_any_node_is_in_the_owners_room(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        node(tmp_path, "seoul", redis_server.url, "seoul") as seoul,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        consultation = await ub.client.app[STORE].create("Post-op check", "VP8", "Dr. Bat", "t")
        cid = consultation.id
        await ub.client.app[CLUSTER].place(cid, "ulaanbaatar")
        async with aiohttp.ClientSession() as http:
            clinic = await http.ws_connect(f"{ub.url}/ws/{cid}")
            surgeon = await http.ws_connect(f"{seoul.url}/ws/{cid}")  # bridged to Ulaanbaatar
            for ws, role in ((clinic, "clinic"), (surgeon, "surgeon")):
                await ws.send_json({"type": "auth", "token": ub.token(role, cid)})
                assert (await next_message(ws, "welcome"))["you"]["role"] == role
            await surgeon.send_json({"type": "chat", "text": "Hold still"})
            chat = await next_message(clinic, "chat")
            assert chat["text"] == "Hold still" and chat["name"] == "Surgeon"  # the link's name
            assert ub.client.app[HUB].census()[cid]["surgeon"] == 1
            assert cid not in seoul.client.app[HUB].census()
            await surgeon.close()
            await clinic.close()


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind:
                return message  # type: ignore[no-any-return]


async def test_a_token_for_another_consultation_is_refused_not_redirected(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        node(tmp_path, "seoul", redis_server.url, "seoul") as seoul,
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar") as ub,
    ):
        mine = await ub.client.app[STORE].create("Mine", "VP8", "Dr. Bat", "t")
        other = await ub.client.app[STORE].create("Someone else's", "VP8", "Dr. Bat", "t")
        for made in (mine, other):
            await ub.client.app[CLUSTER].place(made.id, "ulaanbaatar")
        wrong_room = {"Authorization": f"Bearer {ub.token('clinic', mine.id)}"}
        for path in (f"/whip/{other.id}", f"/whep/{other.id}"):
            refused = await seoul.client.post(
                path,
                data="v=0\r\n",
                headers={**wrong_room, "Content-Type": "application/sdp"},
                allow_redirects=False,
            )
            assert refused.status == 403, path  # nobody learns where it is without a grant
            assert "Location" not in refused.headers
        junk = await seoul.client.post(
            f"/whip/{mine.id}",
            data=b"\xff\xfe not an offer",
            headers={**wrong_room, "Content-Type": "application/sdp"},
            allow_redirects=False,
        )
        assert junk.status == 307  # the owner reads the body, and refuses it (tested there)
