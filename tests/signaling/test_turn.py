"""TURN credentials minted per participant: their format, where clients find them (``GET
/api/session``, ``Link`` on WHIP/WHEP ``201`` and authenticated ``OPTIONS``), and that the secret
never shows (repr, logs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client.whip import parse_ice_server_links
from signaling.app import create_app
from signaling.auth.turn import TurnCredentials, turn_password
from signaling.db.store import Consultation
from signaling.keys import STORE
from signaling.settings import IceServer, Settings
from tests.conftest import MakeToken, bearer
from tests.coturn import Coturn, coturn
from tests.signaling.test_whip import offer, post

SECRET = "turn-secret-that-must-never-show"
URLS = ("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp")
STUN = IceServer("stun:stun.example.org:3478")


def check_credentials(username: str, credential: str, secret: str, identity: str) -> None:
    """The coturn REST scheme, computed here without the app's code."""
    expiry, _, who = username.partition(":")
    assert who == identity
    assert time.time() < int(expiry) <= time.time() + 3600 + 5
    expected = base64.b64encode(hmac.digest(secret.encode(), username.encode(), "sha1")).decode()
    assert credential == expected


@pytest.fixture
def turn_settings(settings: Settings) -> Settings:
    return replace(settings, turn_urls=URLS, turn_secret=SECRET, ice_servers=(STUN,))


@pytest.fixture
async def turn_client(aiohttp_client: Any, turn_settings: Settings) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(turn_settings))
    return client


def test_credentials_follow_coturns_use_auth_secret_scheme() -> None:
    minted = TurnCredentials(URLS, SECRET, 600, clock=lambda: 1_700_000_000.7)
    servers = minted.mint("surgeon-1a2b3c4d")
    assert [s.url for s in servers] == list(URLS)
    assert {s.username for s in servers} == {"1700000600:surgeon-1a2b3c4d"}
    digest = hmac.new(SECRET.encode(), b"1700000600:surgeon-1a2b3c4d", hashlib.sha1).digest()
    assert servers[0].credential == base64.b64encode(digest).decode()
    assert turn_password(SECRET, "1700000600:surgeon-1a2b3c4d") == servers[0].credential


def test_the_secret_is_not_in_reprs(turn_settings: Settings) -> None:
    assert SECRET not in repr(turn_settings)
    assert SECRET not in repr(TurnCredentials(URLS, SECRET, 600))
    assert "pass" not in repr(IceServer("turn:t.example.org", "user", "pass"))


def test_turn_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    env = {
        "ENDOLINK_TURN_URLS": " ".join(URLS),
        "ENDOLINK_TURN_SECRET": SECRET,
        "ENDOLINK_TURN_TTL_S": "7200",
    }
    settings = Settings.from_env(env, data_dir=tmp_path)
    assert (settings.turn_urls, settings.turn_secret, settings.turn_ttl_s) == (URLS, SECRET, 7200)
    with pytest.raises(ValueError, match="without a user"):
        Settings.from_env({"ENDOLINK_TURN_URLS": "turn:u:p@turn.example.org"})
    with pytest.raises(ValueError, match="turn:HOST"):
        Settings.from_env({"ENDOLINK_TURN_URLS": "stun:turn.example.org"})


def test_turn_urls_without_a_secret_are_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="ENDOLINK_TURN_SECRET"):
        create_app(replace(settings, turn_urls=URLS))
    with pytest.raises(ValueError, match="at least 60"):
        create_app(replace(settings, turn_urls=URLS, turn_secret=SECRET, turn_ttl_s=10))


async def test_the_session_gives_each_participant_its_own_turn_credentials_first(
    turn_client: TestClient, make_token: MakeToken
) -> None:
    response = await turn_client.get("/api/session", headers=bearer(make_token("clinic", "c1")))
    session = await response.json()
    *turn, stun = session["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert [entry["urls"] for entry in turn] == [[url] for url in URLS]
    for entry in turn:
        check_credentials(entry["username"], entry["credential"], SECRET, session["identity"])
    other = await turn_client.get("/api/session", headers=bearer(make_token("surgeon", "c1")))
    assert (await other.json())["ice_servers"][0]["username"] != turn[0]["username"]


async def test_options_with_a_token_carries_minted_link_headers(
    turn_client: TestClient, make_token: MakeToken
) -> None:
    token = make_token("surgeon", "c1")
    identity = (await (await turn_client.get("/api/session", headers=bearer(token))).json())[
        "identity"
    ]
    for kind in ("whip", "whep"):
        response = await turn_client.options(f"/{kind}/c1", headers=bearer(token))
        assert response.status == 200
        links = response.headers.getall("Link")
        assert len(links) == 3
        assert all('rel="ice-server"' in link for link in links)
        assert 'credential-type="password"' in links[0]
        servers = parse_ice_server_links(links)
        assert [s.urls for s in servers] == [*URLS, STUN.url]
        check_credentials(servers[0].username, servers[0].credential, SECRET, identity)


async def test_options_without_a_token_is_a_plain_preflight_and_a_bad_token_is_refused(
    turn_client: TestClient, make_token: MakeToken
) -> None:
    preflight = await turn_client.options("/whip/c1")
    assert preflight.status == 200 and "Link" not in preflight.headers
    refused = await turn_client.options("/whip/c1", headers=bearer("not-a-token"))
    assert refused.status == 401
    elsewhere = await turn_client.options("/whip/c2", headers=bearer(make_token("clinic", "c1")))
    assert elsewhere.status == 403 and "Link" not in elsewhere.headers


def test_link_values_are_rfc_8288_quoted_strings() -> None:
    from signaling.http.whip import ice_server_link

    link = ice_server_link(IceServer("turn:t.example.org", 'us"er', "pa\\ss"))
    assert link == (
        '<turn:t.example.org>; rel="ice-server"; username="us\\"er"; credential="pa\\\\ss"; '
        'credential-type="password"'
    )
    (server,) = parse_ice_server_links([link])
    assert (server.username, server.credential) == ('us"er', "pa\\ss")


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with coturn(tmp_path / "coturn", secret=SECRET) as server:
        yield server


async def test_whip_and_whep_201_carry_minted_links_and_nothing_logs_the_secret(
    turn: Coturn,  # first: coturn must outlive the app, whose peers free their allocations
    aiohttp_client: Any,
    settings: Settings,
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(
        replace(settings, turn_urls=turn.urls("udp"), turn_secret=SECRET, relay_turn=True)
    )
    client: TestClient = await aiohttp_client(app)
    consultation: Consultation = await app[STORE].create(
        title="t", video_codec="VP8", consent_by="Dr. A", recorded_by="x"
    )
    cid = consultation.id
    for kind, role, direction in (("whip", "clinic", "sendonly"), ("whep", "surgeon", "recvonly")):
        response = await post(
            client, f"/{kind}/{cid}", make_token(role, cid), await offer(direction=direction)
        )
        assert response.status == 201
        (server,) = parse_ice_server_links(response.headers.getall("Link"))
        assert server.urls == turn.urls("udp")[0]
        assert server.username.endswith(f":{role}-" + server.username.split("-")[-1])
        check_credentials(server.username, server.credential, SECRET, server.username.split(":")[1])
    assert "TURN allocation created" in caplog.text  # the relay allocated with its own
    assert SECRET not in caplog.text
