"""Consultation leases: which node owns a live consultation, claimed atomically and renewed.

A lease is ``endolink:owner:{cid}`` holding the owner's node id with an expiry. It is claimed
with ``SET NX PX`` (one winner), renewed and released only by its holder (compare-and-set in a
Lua script, so a node that lost its lease during a partition cannot extend or delete the new
owner's). When the owner dies its lease runs out, and the next node asked for the consultation
claims it. ``placed:{cid}`` records where placement sent a consultation before anyone claimed
it, so every node sends the first requests to the same place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import Enum

from redis.asyncio import Redis

from relay import ConsultationId
from signaling.cluster.nodes import PREFIX, text

PLACEMENT_TTL_S = 24 * 3600
"A placement nobody claimed is forgotten after a day (a consultation not started that day)."
PENDING_S = 120.0
"""A consultation placed on a node counts towards its load until it starts there, for this long:
thirty consultations created in one second must not all go to the same node."""

_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return redis.call('GET', KEYS[1]) or false
"""
_REPLACE = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return ARGV[2]
end
return current
"""


class Renewal(Enum):
    RENEWED = 1
    RECLAIMED = 2
    "The lease had run out (Redis was away longer than it) and nobody else took it."
    LOST = 0
    "Another node holds it now: this node must let the consultation go."


def owner_key(cid: ConsultationId) -> str:
    return f"{PREFIX}owner:{cid}"


def placed_key(cid: ConsultationId) -> str:
    return f"{PREFIX}placed:{cid}"


def pending_key(node_id: str) -> str:
    """The consultations placed on ``node_id`` and not started there yet (scored by time)."""
    return f"{PREFIX}pending:{node_id}"


class Leases:
    """This node's side of the leases: claim, renew, release, and who holds one."""

    def __init__(self, redis: Redis, node_id: str, lease_s: float) -> None:
        self._redis = redis
        self.node_id = node_id
        self._lease_ms = int(lease_s * 1000)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._replace = redis.register_script(_REPLACE)
        self._take_over = redis.register_script(_TAKE_OVER)

    async def holder(self, cid: ConsultationId) -> str | None:
        held = await self._redis.get(owner_key(cid))
        return None if held is None else text(held)

    async def claim(self, cid: ConsultationId) -> str:
        """Claim the lease if nobody holds it; the holder afterwards (this node if it won)."""
        for _ in range(3):  # the holder's lease may expire between the two calls
            if await self._redis.set(owner_key(cid), self.node_id, nx=True, px=self._lease_ms):
                await self._redis.zrem(pending_key(self.node_id), cid)
                return self.node_id
            if (held := await self.holder(cid)) is not None:
                return held
        raise RuntimeError("the consultation's lease changed hands three times in a row")

    async def take_over(self, cid: ConsultationId, dead: str) -> str | None:
        """Claim a lease still held by ``dead``, a node whose heartbeat has run out (its lease
        would run out about as soon); the holder afterwards, None if the lease is free."""
        result = await self._take_over(
            keys=[owner_key(cid)], args=[dead, self.node_id, self._lease_ms]
        )
        return None if result is None else str(result)

    async def renew(self, cid: ConsultationId) -> Renewal:
        result = await self._renew(keys=[owner_key(cid)], args=[self.node_id, self._lease_ms])
        return Renewal(int(result))

    async def release(self, cid: ConsultationId) -> None:
        await self._release(keys=[owner_key(cid)], args=[self.node_id])

    async def placed(self, cid: ConsultationId) -> str | None:
        found = await self._redis.get(placed_key(cid))
        return None if found is None else text(found)

    async def place(self, cid: ConsultationId, node_id: str, instead_of: str | None = None) -> str:
        """Record ``node_id`` as the consultation's place unless another node recorded a
        different one first (``instead_of``: the place being replaced, e.g. a dead node).
        Returns the place every node will now use."""
        result = await self._replace(
            keys=[placed_key(cid)], args=[instead_of or "", node_id, PLACEMENT_TTL_S]
        )
        agreed = text(result)
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(pending_key(agreed), {cid: now})
            pipe.zremrangebyscore(pending_key(agreed), "-inf", now - PENDING_S)
            pipe.expire(pending_key(agreed), int(PENDING_S))
            await pipe.execute()
        return agreed

    async def pending(self, node_ids: Iterable[str]) -> dict[str, int]:
        """How many consultations were placed on each node and have not started there."""
        ids = list(node_ids)
        since = time.time() - PENDING_S
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.zcount(pending_key(node_id), since, "+inf")
            counts = await pipe.execute()
        return {node_id: int(n) for node_id, n in zip(ids, counts, strict=True)}
