"""The clinic's session replaced while a surgeon keeps watching (a page reload, ``endolink
publish`` reconnecting before the relay noticed the old session die): the same identity
publishes again while its old session is still open, and the viewer that never left sees the
new stream within seconds."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from tests.conftest import MakeToken
from tests.peers import publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url

BACK_WITHIN_S = 2.0


async def test_a_viewer_sees_the_new_stream_when_the_clinic_replaces_its_open_session(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    token = make_token("clinic", cid)
    async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen):
        async with publisher(url(client, f"/whip/{cid}"), token):
            assert await wait_until(lambda: len(seen.counters) > 30, timeout=10)
            before = len(seen.counters)
            async with publisher(url(client, f"/whip/{cid}"), token):  # the old one still open
                replaced = time.monotonic()
                # The new stream's counter starts at 0: frames from it, not the old one's last.
                assert await wait_until(
                    lambda: any(c < 30 for c in seen.counters[before:]), timeout=10
                )
                back_s = time.monotonic() - replaced
                print(f"\nnew stream seen {back_s:.2f} s after the replacing session connected")
                assert back_s < BACK_WITHIN_S
                new = len(seen.counters)
                assert await wait_until(lambda: len(seen.counters) > new + 30, timeout=5)
