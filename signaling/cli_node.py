"""``endolink node list`` and ``endolink node drain NODE``: the cluster as Redis sees it.

Both read ``ENDOLINK_REDIS_URL``; without it there is no cluster to show. ``drain`` asks a node
to take no new consultations (it sees the request on its next heartbeat, within a third of
``ENDOLINK_CLUSTER_LEASE_S``); its current consultations go on until they end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from signaling.cli_consult import CliError, settings_of
from signaling.cluster import nodes
from signaling.cluster.cluster import connect

T = TypeVar("T")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    node = commands.add_parser("node", help="the nodes of a cluster (ENDOLINK_REDIS_URL)")
    node_commands = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = node_commands.add_parser(
        "list", parents=[common], help="every live node: where, load, consultations"
    )
    listing.add_argument("--json", action="store_true", help="print the nodes as JSON")
    listing.set_defaults(handler=_list)
    drain = node_commands.add_parser(
        "drain", parents=[common], help="send new consultations to other nodes"
    )
    drain.add_argument("node", help="the node's id (see: endolink node list)")
    drain.set_defaults(handler=_drain)


def _list(args: argparse.Namespace) -> int:
    found = _with_redis(args, nodes.alive)
    if args.json:
        print(json.dumps([n.to_json() for n in found], indent=2))
        return 0
    if not found:
        print("no live nodes")
        return 0
    rows = [("NODE", "URL", "REGION", "CONSULTATIONS", "SESSIONS", "CPU", "STATE")]
    for n in found:
        state = "draining" if n.draining else "open"
        cpu = f"{n.cpu * 100:.1f} %"
        rows.append(
            (n.id, n.url, n.region or "-", str(n.consultations), str(n.sessions), cpu, state)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _drain(args: argparse.Namespace) -> int:
    async def drain(redis: Redis) -> bool:
        return await nodes.request_drain(redis, args.node)

    if not _with_redis(args, drain):
        raise CliError(f"no live node {args.node!r} (see: endolink node list)", exit_code=1)
    print(f"node {args.node} drains: new consultations go to other nodes")
    return 0


def _with_redis(args: argparse.Namespace, action: Callable[[Redis], Awaitable[T]]) -> T:
    settings = settings_of(args)
    if not settings.redis_url:
        raise CliError("no cluster: set ENDOLINK_REDIS_URL to the cluster's Redis", exit_code=2)
    url = settings.redis_url

    async def run() -> T:
        redis = connect(url)
        try:
            return await action(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as exc:
        raise CliError(f"Redis is unreachable ({type(exc).__name__})", exit_code=1) from None
