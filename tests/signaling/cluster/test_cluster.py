"""Nodes, leases, placement, drain and failover against a real redis-server (no mocks): each
test makes nodes as ``Cluster`` objects in this process, with short leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from bench.redis_server import RedisServer
from relay import ConsultationId
from signaling.cluster import nodes
from signaling.cluster.cluster import Cluster, ClusterUnavailable, NodeIdentity, connect
from signaling.cluster.leases import owner_key

LEASE_S = 0.9
CID = ConsultationId("consultAAAA1")


@pytest.fixture
async def make_node(redis_server: RedisServer) -> AsyncIterator[Callable[..., object]]:
    """``await make_node(name, region, hosted)``: a started node; all closed at the end."""
    made: list[Cluster] = []

    async def make(
        name: str, region: str = "", hosted: set[ConsultationId] | None = None
    ) -> Cluster:
        node = Cluster(
            connect(redis_server.url),
            NodeIdentity(name, f"http://{name}.test:8443", region),
            LEASE_S,
        )
        held = hosted if hosted is not None else set()
        node.hosted = lambda: held
        await node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.close()


async def redis_of(server: RedisServer) -> Redis:
    return connect(server.url)


async def test_nodes_register_and_leave(make_node, redis_server: RedisServer) -> None:
    a = await make_node("a", "seoul")
    await make_node("b", "ulaanbaatar")
    redis = await redis_of(redis_server)
    try:
        found = {n.id: n for n in await nodes.alive(redis)}
        assert set(found) == {"a", "b"}
        assert found["a"].url == "http://a.test:8443" and found["a"].region == "seoul"
        assert not found["a"].draining
        await a.close()
        assert [n.id for n in await nodes.alive(redis)] == ["b"]
    finally:
        await redis.aclose()


async def test_one_owner_and_every_node_routes_to_it(make_node) -> None:
    a, b, c = [await make_node(name) for name in "abc"]
    routes = await asyncio.gather(a.route(CID), b.route(CID), c.route(CID))
    # Asked at once, the three agree: the placed node serves (and claims when it is asked).
    by_url = {node.me.url: node for node in (a, b, c)}
    targets = {url or node.me.url for node, url in zip((a, b, c), routes, strict=True)}
    assert len(targets) == 1, routes
    owner = by_url[targets.pop()]
    assert await owner.route(CID) is None
    assert await owner.leases.holder(CID) == owner.me.id
    for node in (a, b, c):
        if node is not owner:
            assert await node.route(CID) == owner.me.url


async def test_placement_least_loaded_and_by_region(make_node) -> None:
    busy = await make_node("busy", "seoul", {ConsultationId(f"busy{i:08d}") for i in range(3)})
    await make_node("idle", "seoul")
    far = await make_node("far", "ulaanbaatar")
    await busy.beat()
    assert (await busy.place(ConsultationId("placed00001"), None)).id in ("idle", "far")
    assert (await busy.place(ConsultationId("placed00002"), "ulaanbaatar")).id == "far"
    assert (await busy.place(ConsultationId("placed00003"), "seoul")).id == "idle"
    # The placed node is where every node sends the first request.
    assert await busy.route(ConsultationId("placed00002")) == far.me.url
    assert await far.route(ConsultationId("placed00002")) is None


async def test_drain_sends_new_consultations_elsewhere(make_node, redis_server) -> None:
    a = await make_node("a")
    b = await make_node("b", hosted={ConsultationId("bbusy0000001")})
    await a.route(CID)
    assert await a.route(CID) is None  # a owns CID (b is busier)
    redis = await redis_of(redis_server)
    try:
        assert await nodes.request_drain(redis, "a")
        assert not await nodes.request_drain(redis, "nobody")
    finally:
        await redis.aclose()
    await a.beat()  # a sees the request on its next heartbeat
    assert a.draining
    await b.beat()
    fresh = ConsultationId("freshcid0001")
    assert (await a.place(fresh, None)).id == "b"
    assert await a.route(fresh) == b.me.url
    assert await a.route(CID) is None, "a drains: what it owns stays with it until it ends"
    assert await b.route(CID) == a.me.url


async def test_a_dead_owner_is_taken_over(make_node) -> None:
    a = await make_node("a")
    b = await make_node("b")
    await a.leases.claim(CID)
    assert await b.route(CID) == a.me.url
    assert a._beating is not None
    a._beating.cancel()  # a dies: no heartbeat, no renewal, nothing withdrawn
    loop = asyncio.get_running_loop()
    died = loop.time()
    answers: list[str] = []
    async with asyncio.timeout(LEASE_S * 4):
        while True:
            try:
                if await b.route(CID) is None:
                    break
                answers.append("redirect")
            except ClusterUnavailable:  # a's heartbeat is late: nobody is sent to it
                answers.append("try again")
            await asyncio.sleep(0.05)
    taken_s = loop.time() - died
    # Sent to a while its heartbeat may still come, then asked to try again, never after.
    assert "try again" in answers
    assert "redirect" not in answers[answers.index("try again") :]
    assert taken_s <= LEASE_S * 1.5, f"taken over {taken_s:.2f} s after the owner died"
    assert await b.leases.holder(CID) == "b"


async def test_a_node_that_lost_its_lease_lets_go(make_node, redis_server) -> None:
    hosted = {CID}
    a = await make_node("a", hosted=hosted)
    lost: list[ConsultationId] = []
    a.on_lost = lost.append
    assert await a.route(CID) is None
    redis = await redis_of(redis_server)
    try:
        await redis.set(owner_key(CID), "b")  # b took it while a was cut off
    finally:
        await redis.aclose()
    await a.beat()
    assert lost == [CID]


async def test_redis_away_live_consultations_go_on(make_node, redis_server) -> None:
    live = ConsultationId("liveconsult1")
    a = await make_node("a", hosted={live})
    assert await a.route(live) is None
    assert a.problem is None
    redis_server.stop()
    await a.beat()
    assert a.problem is not None and "Redis" in a.problem
    assert await a.route(live) is None, "a hosted consultation goes on without Redis"
    with pytest.raises(ClusterUnavailable):
        await a.route(ConsultationId("notherecid01"))
    redis_server.start()  # back, empty: the lease is claimed again on the next heartbeat
    await a.beat()
    assert a.problem is None
    assert await a.leases.holder(live) == "a"


async def test_consultations_created_at_once_are_spread(make_node) -> None:
    a, b, c = [await make_node(name) for name in "abc"]
    placed = [(await a.place(ConsultationId(f"burst{i:07d}"), None)).id for i in range(30)]
    assert {name: placed.count(name) for name in "abc"} == {"a": 10, "b": 10, "c": 10}
    # Started on its node, a consultation is counted there by the heartbeat, not as pending.
    first = ConsultationId("burst0000000")
    owner = {"a": a, "b": b, "c": c}[placed[0]]
    assert await owner.route(first) is None
    assert (await owner.leases.pending([owner.me.id]))[owner.me.id] == 9
