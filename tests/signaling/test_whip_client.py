"""`endolink publish`'s engine: a file or the test pattern published over WHIP."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiohttp.test_utils import TestClient

from client.whip import WhipError, publish_source
from signaling.db.store import Consultation
from tests.clips import stamped_clip
from tests.conftest import MakeToken
from tests.peers import viewer, wait_until
from tests.relay.test_forwarding_flow import url


async def test_a_video_file_is_published_and_every_frame_reaches_the_viewer_in_order(
    client: TestClient, consultation: Consultation, make_token: MakeToken, tmp_path: Path
) -> None:
    cid = consultation.id
    source = stamped_clip(tmp_path / "scope.webm", frames=60)
    async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen):
        publishing = asyncio.ensure_future(
            publish_source(url(client, f"/whip/{cid}"), make_token("clinic", cid), str(source))
        )
        await asyncio.wait_for(publishing, timeout=20)  # returns when the file ends
        assert await wait_until(lambda: seen.counters and seen.counters[-1] >= 50, timeout=5)
    assert seen.counters == sorted(seen.counters)
    assert seen.sizes == {(640, 360)}


async def test_the_test_pattern_can_be_published_without_a_camera(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    publishing = asyncio.ensure_future(
        publish_source(url(client, f"/whip/{cid}"), make_token("clinic", cid), "testpattern")
    )
    try:
        async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen):
            assert await wait_until(lambda: len(seen.counters) > 15, timeout=10)
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing


async def test_a_refused_publish_raises_the_servers_reason(
    client: TestClient, consultation_without_consent: Consultation, make_token: MakeToken
) -> None:
    cid = consultation_without_consent.id
    try:
        await publish_source(url(client, f"/whip/{cid}"), make_token("clinic", cid), "testpattern")
    except WhipError as exc:
        assert exc.status == 403 and "consent" in exc.reason
    else:
        raise AssertionError("publishing without consent must fail")
