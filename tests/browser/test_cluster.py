"""The pages in a cluster, in a real browser: the clinic's page on the Ulaanbaatar node (which
owns the consultation), the surgeon's on the Seoul node. The surgeon's page sends its offer to
the owner (``media_url`` from ``GET /api/session``: a redirect to another origin would lose the
token) and its room WebSocket is bridged there: one room, video and presence across nodes.
Two real nodes, one real redis-server and PostgreSQL; Debian's chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.redis_server import RedisServer
from signaling.auth.grants import Role
from signaling.keys import CLUSTER, RELAY, STORE
from tests.signaling.cluster.nodes import node

from .conftest import chromium, playwright_api
from .test_pages import assert_video_plays, start_clinic_stream

expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.mark.parametrize("seoul_region", ["", "seoul"], ids=["from-the-owner", "by-cascade"])
async def test_a_surgeon_on_another_node_watches_and_is_in_the_room(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str, seoul_region: str
) -> None:
    """The Seoul node with no region: the surgeon's page plays from the owner (its offer sent to
    ``media_url``). In a region of its own: Seoul serves the page by cascade, from one stream it
    pulls from Ulaanbaatar (``view_url`` null)."""
    async with (
        node(tmp_path, "ulaanbaatar", redis_server.url, "ulaanbaatar", postgres_url) as ub,
        node(tmp_path, "seoul", redis_server.url, seoul_region, postgres_url) as seoul,
    ):
        consultation = await seoul.client.app[STORE].create(
            "Post-op check", "VP8", "Dr. Paper", "admin-test"
        )
        cid = consultation.id
        assert (await ub.client.app[CLUSTER].place(cid, "ulaanbaatar")).id == "ulaanbaatar"
        async with chromium(tmp_path) as browser:
            clinic = await browser.open(f"{ub.url}/clinic#token={ub.token('clinic', cid)}", "c")
            surgeon = await browser.open(
                f"{seoul.url}/surgeon#token={seoul.token(Role.SURGEON, cid)}", "surgeon"
            )
            # The room is one: each page sees the other, whichever node it reached.
            await expect(clinic.get_by_test_id("surgeon-presence")).to_have_attribute(
                "data-state", "online"
            )
            clicked = await start_clinic_stream(clinic)
            await assert_video_plays(surgeon, "surgeon on the Seoul node", clicked)
            owner = ub.client.app[RELAY].find(cid)
            assert owner is not None
            here = seoul.client.app[RELAY].find(cid)
            identities = [p.identity for p in owner.peers.values()]
            if seoul_region:  # one upstream from Seoul on the owner; the surgeon's session in Seoul
                assert here is not None
                assert any(p.identity.startswith("surgeon") for p in here.peers.values())
                assert sum(i.startswith("node:") for i in identities) == 1
                assert not any(i.startswith("surgeon") for i in identities)
            else:
                assert here is None
                assert any(i.startswith("surgeon") for i in identities)
            offers = [line for line in browser.console if "HTTP" in line]
            assert not offers, offers  # no refused request on the way
