"""A surgeon's link expires while the video runs: the server ends the WHEP session at the token's
expiry, and the page says in plain words that the link has expired and a new one is needed —
it does not keep reconnecting with a token that can only be refused."""

from __future__ import annotations

import time

import pytest

from bench.recovery import start_stream, wait_moving
from relay import FeedName, PeerRole
from signaling.keys import RELAY

from .conftest import Browser, LiveServer, playwright_api

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TTL_S = 20
EXPIRED = "This link has expired: ask the consultation coordinator for a new one."


async def test_the_surgeons_video_ends_with_a_clear_message_when_the_link_expires(
    live_server: LiveServer, browser: Browser
) -> None:
    cid = (await live_server.consultation(consent=True)).id
    clinic = await browser.open(
        live_server.url("clinic", live_server.token("clinic", cid)), "clinic"
    )
    await start_stream(clinic)
    expires_at = time.time() + TTL_S
    token = live_server.token("surgeon", cid, ttl_s=TTL_S)
    surgeon = await browser.open(live_server.url("surgeon", token), "surgeon", window=True)
    posts: list[float] = []
    surgeon.on(
        "request",
        lambda r: r.method == "POST" and "/whep/" in r.url and posts.append(time.time()),
    )
    await wait_moving(surgeon, 15)
    overlay = surgeon.get_by_test_id("remote-overlay")
    await expect(overlay).to_contain_text(EXPIRED, timeout=(TTL_S + 5) * 1000)
    router = live_server.app[RELAY].find(cid)
    assert router is not None
    watching = [p for p in router.peers.values() if p.feed == FeedName.ENDOSCOPE]
    assert [p.role for p in watching] == [PeerRole.PUBLISHER]  # the surgeon's session is gone
    assert time.time() <= expires_at + 5
    told_at = time.time()
    await surgeon.wait_for_timeout(3000)
    assert not [t for t in posts if t > told_at], "the page kept reconnecting"
    await expect(overlay).to_contain_text(EXPIRED)
