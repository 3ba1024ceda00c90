"""This node in a cluster: its heartbeat, the leases of the consultations it hosts, and where
a request for a consultation should be served.

Routing (``route``): the lease holder serves a consultation. With no holder, the consultation's
placement decides (recorded once, so every node agrees); the placed node claims the lease when
the request reaches it. A placement on a dead or draining node is replaced by the least-loaded
open node. A lease held by a node whose heartbeat ran out is taken over at once.

Redis going away does not end anything: the consultations this node hosts carry on, their
leases are renewed (or claimed again) once Redis is back, and ``/readyz`` says Redis is
unreachable. Meanwhile this node refuses consultations it does not host (503), because it
cannot know whether another node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import ConsultationId
from signaling.cluster import nodes
from signaling.cluster.leases import Leases, Renewal
from signaling.cluster.nodes import NodeInfo

logger = logging.getLogger(__name__)


SILENT_BEATS = 1.5
"An owner whose last heartbeat is older than this many heartbeats is not redirected to."


class ClusterUnavailable(Exception):
    """The cluster cannot say who serves a consultation now (Redis unreachable); try again."""


@dataclass(frozen=True)
class NodeIdentity:
    id: str
    url: str
    "Public base URL other nodes redirect to (``ENDOLINK_PUBLIC_URL``)."
    region: str


class Cluster:
    """``hosted`` and ``sessions`` say what this node serves now (set by the app); ``on_lost``
    is told when another node holds a consultation this node still hosts (after a partition),
    so that its clients reconnect to the owner."""

    def __init__(self, redis: Redis, me: NodeIdentity, lease_s: float) -> None:
        self.redis = redis
        self.me = me
        self.lease_s = lease_s
        self.beat_s = lease_s / nodes.NODE_TTL_BEATS
        self.leases = Leases(redis, me.id, lease_s)
        self.hosted: Callable[[], Collection[ConsultationId]] = lambda: ()
        self.sessions: Callable[[], int] = lambda: 0
        self.on_lost: Callable[[ConsultationId], None] = lambda cid: None
        self.on_claimed: Callable[[ConsultationId], Awaitable[None]] = _nothing
        "Told, before the request that claimed it goes on, of a consultation this node took."
        self.draining = False
        self.problem: str | None = "not started"
        "What is wrong with the link to Redis, in words; None while it is fine."
        self._claimed: dict[ConsultationId, float] = {}
        self.node_urls: tuple[str, ...] = ()
        "The other live nodes' public URLs, as of the last heartbeat (the pages' CSP)."
        self._fresh: set[ConsultationId] = set()
        "Claimed by this node and not yet told to ``on_claimed``."
        self._cpu_mark = (time.monotonic(), _cpu_seconds())
        self._beating: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        """One HTTP client for talking to other nodes (WebSocket bridges), made on first use."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def start(self) -> None:
        """Register (a node started again is open for placement) and start the heartbeat."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(nodes.drain_key(self.me.id))
        await self.beat()
        self._beating = asyncio.get_running_loop().create_task(self._heartbeat())

    async def close(self) -> None:
        """Leave cleanly: out of placement at once, leases freed for the next node."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(2.0):
                for cid in self._renewable():
                    await self.leases.release(cid)
                await nodes.withdraw(self.redis, self.me.id)
        await self.redis.aclose()
        if self._http is not None:
            await self._http.close()

    def drain(self) -> None:
        """No new consultations here; the ones this node hosts go on until they end."""
        if not self.draining:
            logger.info("node %s draining: new consultations go to other nodes", self.me.id)
        self.draining = True

    async def drained(self) -> None:
        """Drain, and return once this node hosts nothing (SIGTERM in a cluster)."""
        self.drain()
        await self.beat()  # other nodes see it now, not at the next heartbeat
        while self.hosted():
            await asyncio.sleep(1.0)

    async def route(self, cid: ConsultationId) -> str | None:
        """The base URL of the node that serves ``cid`` if that is another node; None when it
        is this one (which then holds the lease)."""
        node = await self.serving(cid)
        return None if node is None else node.url

    async def serving(self, cid: ConsultationId) -> NodeInfo | None:
        """The node that serves ``cid`` if that is another node (its region tells whether to
        cascade, ``signaling.cluster.cascade``); None when it is this one."""
        if self.problem is not None:
            if cid in self.hosted():
                return None
            raise ClusterUnavailable(self.problem)
        try:
            node = await self._route(cid)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            if cid in self.hosted():
                return None
            raise ClusterUnavailable(self.problem or "Redis is unreachable") from None
        if cid in self._fresh:
            self._fresh.discard(cid)
            try:
                await self.on_claimed(cid)
            except Exception:  # its recording is not resumed: a new one starts instead
                logger.exception("taking over consultation %s", cid)
        return node

    async def serves_elsewhere(self, cid: ConsultationId) -> bool:
        """Another node holds ``cid`` (or Redis cannot say, which counts as yes: when in
        doubt, what may be another node's is not touched)."""
        try:
            holder = await self.leases.holder(cid)
        except (RedisError, OSError):
            return True
        return holder not in (None, self.me.id)

    async def _route(self, cid: ConsultationId) -> NodeInfo | None:
        holder = await self.leases.holder(cid)
        if holder == self.me.id:
            self._claimed[cid] = time.monotonic()
            return None
        if holder is not None:
            owner = await nodes.read(self.redis, holder)
            if owner is not None and time.time() - owner.seen > SILENT_BEATS * self.beat_s:
                # Not sent to a node that has missed its heartbeats (likely dead: its entry
                # runs out soon and it is taken over): asked again shortly, the client is.
                raise ClusterUnavailable("the consultation's server is not answering; try again")
            if owner is not None:
                return owner
            holder = await self.leases.take_over(cid, holder)  # its heartbeat ran out
            if holder is not None:
                return await self._node(cid, holder)
        target = await self._placement(cid)
        if target.id != self.me.id:
            return target
        return await self._node(cid, await self.leases.claim(cid))

    async def _node(self, cid: ConsultationId, node_id: str) -> NodeInfo | None:
        """The lease holder ``node_id`` just claimed or found; None when that is this node
        (which then has just won the lease)."""
        if node_id == self.me.id:
            self._claimed[cid] = time.monotonic()
            self._fresh.add(cid)
            logger.info("node %s owns consultation %s", self.me.id, cid)
            return None
        owner = await nodes.read(self.redis, node_id)
        if owner is None:
            raise ClusterUnavailable("the consultation's server has just changed; try again")
        return None if owner.id == self.me.id else owner

    async def _placement(self, cid: ConsultationId) -> NodeInfo:
        """Where ``cid`` goes: its recorded place while that node is alive and open, else the
        least-loaded open node (recorded, unless another node recorded one first)."""
        live = {n.id: n for n in await nodes.alive(self.redis)}
        live[self.me.id] = self.info()  # this node's own view is the freshest
        placed = await self.leases.placed(cid)
        if placed is not None and placed in live and not live[placed].draining:
            return live[placed]
        choice = nodes.least_loaded(live.values(), None, await self.leases.pending(live))
        if choice is None:  # every node drains: the last resort is the one asked
            choice = live[self.me.id]
        agreed = await self.leases.place(cid, choice.id, instead_of=placed)
        return live.get(agreed, choice)

    async def place(self, cid: ConsultationId, region: str | None) -> NodeInfo:
        """Placement of a new consultation (``region``: where most of its people are)."""
        live = [n for n in await nodes.alive(self.redis) if n.id != self.me.id] + [self.info()]
        pending = await self.leases.pending(n.id for n in live)
        choice = nodes.least_loaded(live, region, pending) or self.info()
        await self.leases.place(cid, choice.id)
        return choice

    def info(self) -> NodeInfo:
        now, cpu_s = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._cpu_mark
        cpu = (cpu_s - cpu_then) / (now - then) if now - then > 0.5 else 0.0
        if now - then >= self.beat_s:
            self._cpu_mark = (now, cpu_s)
        return NodeInfo(
            self.me.id,
            self.me.url,
            self.me.region,
            len(set(self.hosted()) | set(self._claimed)),
            self.sessions(),
            round(cpu, 4),
            self.draining,
            time.time(),
        )

    async def beat(self) -> None:
        """One heartbeat: this node's entry, then every lease it holds renewed."""
        try:
            if await nodes.publish(self.redis, self.info(), self.lease_s):
                self.drain()
            live = await nodes.alive(self.redis)
            self.node_urls = tuple(sorted({n.url for n in live if n.id != self.me.id}))
            for cid in self._renewable():
                renewal = await self.leases.renew(cid)
                if renewal is Renewal.LOST:
                    logger.warning("consultation %s is owned by another node now", cid)
                    self._claimed.pop(cid, None)
                    self.on_lost(cid)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        if self.problem is not None:
            logger.info("node %s: Redis reachable", self.me.id)
        self.problem = None

    def _renewable(self) -> set[ConsultationId]:
        """Hosted consultations, and those claimed within a lease (their first session may
        still be negotiating)."""
        now = time.monotonic()
        for cid, at in list(self._claimed.items()):
            if now - at > self.lease_s and cid not in self.hosted():
                del self._claimed[cid]
        return set(self.hosted()) | set(self._claimed)

    def _failed(self, exc: Exception) -> None:
        if self.problem is None:
            logger.warning(
                "node %s: Redis unreachable (%s); live consultations continue",
                self.me.id,
                type(exc).__name__,
            )
        self.problem = "Redis is unreachable: live consultations continue, new ones wait"

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)
            await self.beat()


async def _nothing(cid: ConsultationId) -> None:
    return None


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def connect(url: str) -> Redis:
    """A client that fails fast: a request waits at most a second for an unreachable Redis."""
    client: Redis = Redis.from_url(
        url, decode_responses=True, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    return client
