"""``endolink publish`` does not hammer a server it cannot use: attempts whose connection never
comes up (a real WHIP endpoint whose DTLS fingerprint cannot match, so DTLS fails at once) and a
server that refuses the TCP connection are retried after 1, 2, 4 ... s, with plain words, and
never reported as a lost connection."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.common import free_port
from tests.peers import wait_until
from tests.processes import Process, clean_env

pytestmark = pytest.mark.timeout(60)

ATTEMPTS = 4
"Pauses of 1, 2 and 4 s (±20 %) between them: about 7 s; an unpaused loop makes these in one."


def publish(url: str, log: Path) -> Process:
    """``endolink publish URL testpattern``, the token from the environment (not in ``ps``)."""
    command = [sys.executable, "-m", "signaling", "publish", "--url", url, "testpattern"]
    return Process(command, log, clean_env(ENDOLINK_TOKEN="clinic-token"))


@pytest.fixture
async def unconnectable() -> AsyncIterator[tuple[str, list[float]]]:
    """A WHIP endpoint on 127.0.0.1 that answers every offer from a real aiortc peer, with that
    peer's fingerprint changed: ICE connects, DTLS fails. Yields its URL and the offers' times."""
    offers: list[float] = []
    peers: list[RTCPeerConnection] = []

    async def options(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def post(request: web.Request) -> web.Response:
        offers.append(time.monotonic())
        pc = RTCPeerConnection()
        peers.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = re.sub(
            r"(a=fingerprint:sha-256 )\S+",
            r"\g<1>" + ":".join(["AB"] * 32),
            pc.localDescription.sdp,
        )
        headers = {"Location": f"/whip/x/{len(peers)}"}
        return web.Response(
            status=201, text=answer, content_type="application/sdp", headers=headers
        )

    async def delete(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("OPTIONS", "/whip/x", options)
    app.router.add_post("/whip/x", post)
    app.router.add_delete("/whip/x/{n}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/whip/x", offers
    finally:
        await runner.cleanup()
        await asyncio.gather(*(pc.close() for pc in peers))


def pauses(lines: list[str], words: str) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(words + r" (\d+) s", line))]


async def test_a_connection_that_never_comes_up_is_retried_after_growing_pauses(
    unconnectable: tuple[str, list[float]], tmp_path: Path, processes: list[Process]
) -> None:
    url, offers = unconnectable
    publisher = publish(url, tmp_path / "publish.log")
    processes.append(publisher)
    assert await wait_until(lambda: len(offers) >= ATTEMPTS, 30)
    said = publisher.output()
    assert publisher.stop() == 0
    gaps = [round(b - a, 2) for a, b in pairwise(offers)]
    print(f"offers {gaps} s apart; said {said}")
    assert len(offers) == ATTEMPTS, gaps
    # Pauses of 1, 2 and 4 s ±20 %, each gap plus one attempt (offer, ICE, failing DTLS).
    for gap, (low, high) in zip(gaps, [(0.8, 2.0), (1.6, 3.2), (3.2, 5.8)], strict=True):
        assert low <= gap <= high, gaps
    said_pauses = pauses(said, "could not connect, trying again in")
    assert said_pauses[:2] == [1, 2] and 3 <= said_pauses[2] <= 5, said
    assert not any("connection lost" in line or "publishing" in line for line in said)


async def test_a_server_that_refuses_the_connection_is_tried_after_growing_pauses(
    tmp_path: Path, processes: list[Process]
) -> None:
    publisher = publish(f"http://127.0.0.1:{free_port()}/whip/x", tmp_path / "publish.log")
    processes.append(publisher)
    await asyncio.to_thread(publisher.wait_for, "trying again in 2 s", 20)
    await asyncio.sleep(0.5)
    said = publisher.output()
    assert publisher.stop() == 0
    assert pauses(said, "could not reach the server, trying again in") == [1, 2]
    assert not any("connection lost" in line for line in said)
