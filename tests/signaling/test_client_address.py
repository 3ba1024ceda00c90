"""Which address a request counts as: the TCP peer, or behind a trusted reverse proxy the client
``X-Forwarded-For`` names — for the refused-token limit, the audit trail and the access log."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from signaling.app import create_app
from signaling.db.audit import AuditAction, AuditRecord
from signaling.db.store import DB_FILENAME
from signaling.http.client_address import ClientAccessLogger, client_of, trusted_networks
from signaling.keys import AUDIT, REFUSED_TOKENS, SETTINGS
from signaling.settings import Settings
from tests.conftest import bearer
from tests.signaling.test_limits import BURST
from tests.signaling.test_logs import lines

CLIENT, NEIGHBOUR = "203.0.113.7", "203.0.113.8"


async def served(aiohttp_client, settings: Settings, proxies: tuple[str, ...]) -> TestClient:  # type: ignore[no-untyped-def]
    """A server with the access log ``endolink serve`` has (``serving.run_app``)."""
    server = TestServer(create_app(replace(settings, trusted_proxies=proxies)))
    await server.start_server(access_log_class=ClientAccessLogger)
    client: TestClient = await aiohttp_client(server)
    return client


async def guess(client: TestClient, forwarded_for: str) -> int:
    response = await client.get(
        "/api/session", headers={**bearer("guess.a.x"), "X-Forwarded-For": forwarded_for}
    )
    await response.release()
    return response.status


async def refused_token_addresses(client: TestClient) -> set[str]:
    client.app[REFUSED_TOKENS].flush()
    barrier = AuditRecord(None, "", "", "", AuditAction.REFUSED_TOKEN, detail="barrier")
    await client.app[AUDIT].record(barrier)
    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'refused-token'").fetchall()
    return {str(detail).split(":")[0] for (detail,) in rows if detail != "barrier"}


async def burst(client: TestClient, forwarded_for: str) -> list[int]:
    """One more guess than the budget, each with ``forwarded_for`` (``{n}``: the guess's number)."""
    return [await guess(client, forwarded_for.format(n=n)) for n in range(BURST + 1)]


async def test_x_forwarded_for_names_the_client_behind_a_trusted_proxy(
    aiohttp_client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    client = await served(aiohttp_client, settings, ("127.0.0.1",))
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        # The left part is the client's own writing (it varies); the proxy appended the address.
        assert await burst(client, "10.9.9.{n}, " + CLIENT) == [401] * BURST + [429]
        assert await guess(client, NEIGHBOUR) == 401  # the next person behind the proxy
    access = lines(caplog, "aiohttp.access")
    assert access[0].startswith(f"{CLIENT} ") and access[-1].startswith(f"{NEIGHBOUR} ")
    assert await refused_token_addresses(client) == {f"from {CLIENT}", f"from {NEIGHBOUR}"}


async def test_a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    aiohttp_client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    client = await served(aiohttp_client, settings, ("10.0.0.2",))
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        # A new made-up address each time, and yet no new budget.
        assert await burst(client, "198.51.100.{n}") == [401] * BURST + [429]
    assert all(line.startswith("127.0.0.1 ") for line in lines(caplog, "aiohttp.access"))
    assert await refused_token_addresses(client) == {"from 127.0.0.1"}


def test_the_right_most_untrusted_entry_is_the_client() -> None:
    proxies = trusted_networks(["10.0.0.0/24", "::1"])
    assert client_of("10.0.0.5", ["1.1.1.1, 2.2.2.2", "10.0.0.9"], proxies) == "2.2.2.2"
    assert client_of("::1", [], proxies) == "::1"
    assert client_of("::ffff:10.0.0.5", [CLIENT], proxies) == CLIENT
    assert client_of("10.0.0.5", ["10.0.0.6, 10.0.0.7"], proxies) == "10.0.0.6"
    assert client_of("10.0.0.5", [f"{CLIENT}, not-an-address"], proxies) == "10.0.0.5"
    assert client_of("192.0.2.1", [CLIENT], proxies) == "192.0.2.1"
    assert client_of(None, [CLIENT], proxies) == "unknown"


def test_trusted_proxies_are_parsed_and_nonsense_refused() -> None:
    env = {"ENDOLINK_TRUSTED_PROXIES": "10.0.0.2, 10.0.1.0/24,::1"}
    assert Settings.from_env(env).trusted_proxies == ("10.0.0.2", "10.0.1.0/24", "::1")
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(ValueError, match="ENDOLINK_TRUSTED_PROXIES"):
        Settings.from_env({"ENDOLINK_TRUSTED_PROXIES": "proxy.example"})


async def test_an_ipv6_client_is_counted_by_its_64(
    aiohttp_client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    client = await served(aiohttp_client, settings, ("127.0.0.1",))
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        # A new address from the same /64 each time: one budget. Another /64: its own.
        assert await burst(client, "2001:db8:1:2::{n:x}") == [401] * BURST + [429]
        assert await guess(client, "2001:db8:1:3::1") == 401
    assert lines(caplog, "aiohttp.access")[0].startswith("2001:db8:1:2::0 ")  # logged in full
    await refused_token_addresses(client)  # flushed and written
    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'refused-token'").fetchall()
    details = " ".join(str(detail) for (detail,) in rows)
    assert "from 2001:db8:1:2::/64" in details and "from 2001:db8:1:3::/64" in details
