"""The nodes of a cluster as Redis knows them: each writes its own entry on every heartbeat.

An entry is a hash that expires unless renewed (``NODE_TTL_BEATS`` heartbeats), so a node that
died, or lost Redis, drops out of placement by itself; nobody has to declare it dead. The set
``endolink:nodes`` only lists ids to look at: an id whose hash has expired is pruned by readers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

PREFIX = "endolink:"
NODES = f"{PREFIX}nodes"
NODE_TTL_BEATS = 3
"An entry not renewed for this many heartbeats is gone: its node is taken for dead."


def text(value: bytes | str) -> str:
    """Redis answers ``str`` with ``decode_responses``; typed for both."""
    return value.decode() if isinstance(value, bytes) else value


def node_key(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


def drain_key(node_id: str) -> str:
    """Set by ``endolink node drain``; the node reads it on its next heartbeat."""
    return f"{PREFIX}drain:{node_id}"


@dataclass(frozen=True)
class NodeInfo:
    """One node's heartbeat: where it is, and how loaded."""

    id: str
    url: str
    region: str
    consultations: int
    sessions: int
    cpu: float
    "Share of one core the process used over the last heartbeat (0.25 = 25 %)."
    draining: bool
    seen: float
    "Wall-clock time of the heartbeat (Unix seconds)."

    def to_redis(self) -> dict[str, str]:
        return {
            "url": self.url,
            "region": self.region,
            "consultations": str(self.consultations),
            "sessions": str(self.sessions),
            "cpu": f"{self.cpu:.4f}",
            "draining": "1" if self.draining else "0",
            "seen": f"{self.seen:.3f}",
        }

    @classmethod
    def from_redis(cls, node_id: str, fields: dict[str, str]) -> NodeInfo | None:
        """None for an entry that is missing or malformed (another version, a half write)."""
        try:
            return cls(
                node_id,
                fields["url"],
                fields.get("region", ""),
                int(fields["consultations"]),
                int(fields.get("sessions", "0")),
                float(fields["cpu"]),
                fields.get("draining") == "1",
                float(fields["seen"]),
            )
        except (KeyError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "region": self.region,
            "consultations": self.consultations,
            "sessions": self.sessions,
            "cpu_percent": round(self.cpu * 100, 1),
            "draining": self.draining,
            "seen_s_ago": round(max(0.0, time.time() - self.seen), 1),
        }


async def publish(redis: Redis, info: NodeInfo, ttl_s: float) -> bool:
    """Write ``info`` with its expiry; True when ``endolink node drain`` asked it to drain."""
    key = node_key(info.id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={k: v for k, v in info.to_redis().items()})  # hset: invariant keys
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.sadd(NODES, info.id)
        pipe.exists(drain_key(info.id))
        results = await pipe.execute()
    return bool(results[-1])


async def withdraw(redis: Redis, node_id: str) -> None:
    """A node leaving cleanly: gone from placement at once rather than at expiry."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(node_key(node_id), drain_key(node_id))
        pipe.srem(NODES, node_id)
        await pipe.execute()


async def read(redis: Redis, node_id: str) -> NodeInfo | None:
    """The node's entry if it is alive."""
    fields = await redis.hgetall(node_key(node_id))
    return NodeInfo.from_redis(node_id, _texts(fields)) if fields else None


async def alive(redis: Redis) -> list[NodeInfo]:
    """Every live node, by id; ids whose entry expired are pruned from the set."""
    ids = sorted(text(member) for member in await redis.smembers(NODES))
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for node_id in ids:
            pipe.hgetall(node_key(node_id))
        entries = await pipe.execute()
    found: list[NodeInfo] = []
    gone: list[str] = []
    for node_id, fields in zip(ids, entries, strict=True):
        info = NodeInfo.from_redis(node_id, _texts(fields)) if fields else None
        if info is None:
            gone.append(node_id)
        else:
            found.append(info)
    if gone:
        await redis.srem(NODES, *gone)
    return found


async def request_drain(redis: Redis, node_id: str) -> bool:
    """Ask ``node_id`` to drain (it sees it on its next heartbeat); False if no such live node.
    The request lasts until that process ends: a node started again takes consultations."""
    if not await redis.exists(node_key(node_id)):
        return False
    await redis.set(drain_key(node_id), "1")
    return True


def _texts(fields: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in fields.items()}


def least_loaded(
    nodes: Iterable[NodeInfo], region: str | None = None, pending: Mapping[str, int] | None = None
) -> NodeInfo | None:
    """Where a new consultation goes: a node that is not draining, in ``region`` if one is
    there, with the fewest consultations (those placed there and not started yet included:
    ``pending``), then the lowest CPU, then the id (deterministic)."""
    waiting = pending or {}
    open_nodes = [n for n in nodes if not n.draining]
    if region:
        local = [n for n in open_nodes if n.region == region]
        open_nodes = local or open_nodes
    return min(
        open_nodes,
        key=lambda n: (n.consultations + waiting.get(n.id, 0), n.cpu, n.id),
        default=None,
    )
