"""Video through a lossy, delayed link on both hops: the clinic's publisher reaches the server, and
the server reaches the surgeon's viewer, each through its own ``bench.udpproxy.ImpairmentProxy``
(150 ms RTT per hop, with 3 % uniform or ~10 % bursty loss from a fixed seed).

Asserts only that stamped frames keep arriving at the viewer and decode (their frame counters
advance) while packets are really being lost and retransmitted — never how fast: timings on this
shared machine belong in ``bench.impairment`` and docs/benchmarks.md.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from bench.udpproxy import Impairment, ImpairmentProxy
from signaling.db.store import Consultation
from tests.conftest import MakeToken
from tests.peers import publisher, viewer, wait_until

NEW_FRAMES = 20
"""Frames the viewer must decode once both hops lost and retransmitted packets (0.7 s of video)."""
WAIT_S = 40.0

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("impairment", ["uniform3", "bursty10"])
async def test_stamped_frames_keep_arriving_through_loss_on_both_hops(
    client: TestClient, consultation: Consultation, make_token: MakeToken, impairment: str
) -> None:
    cid = consultation.id
    uplink = ImpairmentProxy(Impairment.named(impairment, rtt_ms=150, seed=11))
    downlink = ImpairmentProxy(Impairment.named(impairment, rtt_ms=150, seed=12))
    await uplink.start()
    await downlink.start()
    try:
        async with (
            publisher(
                str(client.make_url(f"/whip/{cid}")),
                make_token("clinic", cid),
                audio=False,
                proxy=uplink,
            ),
            viewer(
                str(client.make_url(f"/whep/{cid}")),
                make_token("surgeon", cid),
                kinds=("video",),
                proxy=downlink,
            ) as (_, _, received),
        ):
            assert await wait_until(lambda: received.counters, timeout=30)
            uplink.impair = downlink.impair = True
            # the impairment really hits both hops, and lost media is retransmitted on both
            # (bounded waits: how long it takes depends on how busy the machine is)
            assert await wait_until(
                lambda: uplink.up.retransmissions > 0 and downlink.down.retransmissions > 0,
                timeout=WAIT_S,
            ), f"publisher hop {uplink.up}, viewer hop {downlink.down}"
            before = len(received.counters)
            # ... and frames keep coming after that, in order, decoded
            assert await wait_until(
                lambda: len(received.counters) - before >= NEW_FRAMES, timeout=WAIT_S
            ), f"only {len(received.counters) - before} frames after the loss began"
            new = received.counters[before:]
            assert all(b > a for a, b in zip(new, new[1:], strict=False)), "frames out of order"
            assert new[0] > received.counters[before - 1]
    finally:
        uplink.close()
        downlink.close()
