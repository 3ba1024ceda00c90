"""EndoLink nodes of a cluster in the test's process: real apps on real loopback ports, one
Redis (tests/redis_server.py), one signing secret, each its own data directory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bench.common import free_port
from signaling.app import create_app
from signaling.auth.grants import Grant, Role, new_identity
from signaling.keys import CLUSTER, TOKENS
from signaling.settings import Settings
from tests.conftest import TEST_SECRET


@dataclass
class Node:
    client: TestClient
    url: str

    def token(self, role: Role | str, cid: str) -> str:
        role = Role(role)
        """A link's token, named after its role (pages then ask no name)."""
        grant = Grant.for_role(role, cid, new_identity(role), 600, name=str(role).capitalize())
        return self.client.app[TOKENS].issue(grant)

    async def beat(self) -> None:
        await self.client.app[CLUSTER].beat()


@contextlib.asynccontextmanager
async def node(
    tmp_path: Path, name: str, redis_url: str, region: str = "", records: str | None = None
) -> AsyncIterator[Node]:
    """A node; ``records``: the shared PostgreSQL database (else its own SQLite file)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / name,
        secret=TEST_SECRET,
        ice_host_addresses=("127.0.0.1",),
        publisher_timeout_s=1.5,
        port=port,
        public_url="https://endolink.example.org",  # invite links: the name every node has
        node_url=url,  # this node: where the others redirect and bridge
        redis_url=redis_url,
        node_id=name,
        region=region,
        cluster_lease_s=1.5,
        database_url=records,
    )
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield Node(client, url)
    finally:
        await client.close()
