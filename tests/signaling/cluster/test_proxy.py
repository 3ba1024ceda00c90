"""A recording is kept by the node that wrote it; any node answers for it. Two real nodes on one
Redis and one PostgreSQL (shared index), each with its own data dir (no shared storage): the
Ulaanbaatar node records, and the recording is listed, described, played (with a range) and
downloaded through the Seoul node, byte for byte; with its writer gone, Seoul says so (503)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bench.redis_server import RedisServer
from recorder.manifest import SegmentStatus
from signaling.auth.grants import ANY_CONSULTATION
from signaling.keys import CLUSTER, RECORDINGS, STORE
from tests.peers import publisher, wait_until
from tests.signaling.cluster.nodes import node


async def test_a_recording_is_served_through_any_node(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    async with node(tmp_path, "seoul", redis_server.url, "seoul", postgres_url) as seoul:
        async with node(tmp_path, "ulaanbaatar", redis_server.url, "ub", postgres_url) as ub:
            consultation = await ub.client.app[STORE].create("Post-op check", "VP8", "Dr", "t")
            cid = consultation.id
            await ub.client.app[CLUSTER].place(cid, "ub")
            recordings = ub.client.app[RECORDINGS]
            whip = f"{ub.url}/whip/{cid}"
            async with publisher(whip, ub.token("clinic", cid), audio=False, size=(320, 240)):
                assert await wait_until(
                    lambda: (r := recordings.active(cid)) is not None and r.segment_open, 15
                )
                await asyncio.sleep(2.0)
            recorder = recordings.active(cid)
            assert recorder is not None
            assert await wait_until(
                lambda: recorder.manifest.segments[0].status is not SegmentStatus.OPEN, 10
            )
            segment = recorder.directory / recorder.manifest.segments[0].file
            original = segment.read_bytes()
            admin = {"Authorization": f"Bearer {seoul.token('admin', ANY_CONSULTATION)}"}
            async with aiohttp.ClientSession(headers=admin) as http:
                async with http.get(f"{seoul.url}/api/recordings?consultation={cid}") as listed:
                    (entry,) = (await listed.json())["recordings"]
                base = f"{seoul.url}{entry['url']}"
                async with http.get(base) as detail:
                    assert detail.status == 200
                    assert (await detail.json())["manifest"]["consultation"]["id"] == cid
                async with http.get(f"{base}/media/1", headers={"Range": "bytes=0-999"}) as part:
                    assert part.status == 206
                    assert part.headers["Content-Range"].startswith("bytes 0-999/")
                    assert await part.read() == original[:1000]
                async with http.get(f"{base}/media/1") as whole:
                    assert whole.status == 200 and await whole.read() == original
                assert not (tmp_path / "seoul" / "recordings" / entry["id"]).exists()
            # The writer checks the token: one for another consultation is refused there.
            elsewhere = {"Authorization": f"Bearer {seoul.token('surgeon', 'someoneElse1')}"}
            async with aiohttp.ClientSession(headers=elsewhere) as http:
                async with http.get(base) as refused:
                    assert refused.status == 403
                    assert (await refused.json())["error"] == "forbidden"
                async with http.get(f"{seoul.url}/api/recordings/not-a-recording-id") as junk:
                    assert junk.status in (400, 404)  # answered here: nothing to pass on
        # Ulaanbaatar has stopped (and left the cluster): its recording cannot be had now.
        async with aiohttp.ClientSession(headers=admin) as http:
            async with http.get(base) as gone:
                assert gone.status == 503
                assert (await gone.json())["error"] == "recording-elsewhere"
                assert gone.headers["Retry-After"] == "30"
