"""A node dies (SIGKILL) in the middle of a consultation: another node takes it over, the
clinic's ``endolink publish`` reconnects through its door, and the media and the recording go on
there — the same recording, a new segment after the gap, since the nodes share the recordings'
storage (here: one directory, linked into both data dirs). Real processes: a redis-server, a
PostgreSQL (shared records), two ``endolink serve`` nodes, the clinic's publisher and viewers;
every one stopped by pid."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.redis_server import RedisServer
from signaling.auth.grants import ANY_CONSULTATION, Grant, Role
from signaling.auth.secret import token_issuer
from signaling.settings import Settings
from tests.peers import viewer, wait_until
from tests.processes import Process, Server, clean_env, publish_command, view_command

SECRET = "cluster-secret-" + "y" * 40
LEASE_S = 3.0
RESUME_S = 10.0
"The issue's bound: media resume within 10 s of the clinic reconnecting."


def start_node(tmp_path: Path, name: str, redis: RedisServer, records: str) -> Server:
    return Server(
        tmp_path / name,
        tmp_path / f"{name}.log",
        ENDOLINK_REDIS_URL=redis.url,
        ENDOLINK_DATABASE_URL=records,
        ENDOLINK_SECRET=SECRET,
        ENDOLINK_NODE_ID=name,
        ENDOLINK_REGION=name,
        ENDOLINK_CLUSTER_LEASE_S=str(LEASE_S),
    )


def token(role: Role, cid: str) -> str:
    issuer = token_issuer(Settings(secret=SECRET))
    return issuer.issue(Grant.for_role(role, cid, f"{role}-1", 3600))


def post_json(url: str, body: dict[str, object], bearer: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def get_json(url: str, bearer: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.mark.timeout(180)
async def test_the_owner_dies_and_another_node_takes_the_consultation_over(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str, processes: list[Process]
) -> None:
    shared = tmp_path / "shared-recordings"  # storage both nodes mount
    shared.mkdir(mode=0o700)
    for name in ("ulaanbaatar", "seoul"):
        (tmp_path / name).mkdir(mode=0o700)
        (tmp_path / name / "recordings").symlink_to(shared)
    ub = start_node(tmp_path, "ulaanbaatar", redis_server, postgres_url)
    processes.append(ub)
    seoul = start_node(tmp_path, "seoul", redis_server, postgres_url)
    processes.append(seoul)
    await asyncio.to_thread(ub.wait_ready)
    await asyncio.to_thread(seoul.wait_ready)

    # Created through Seoul (shared records), placed in Ulaanbaatar by its region.
    created = post_json(
        f"{seoul.url}/api/consultations",
        {"title": "Post-op check", "consent_by": "Dr. Bat", "region": "ulaanbaatar"},
        token(Role.ADMIN, ANY_CONSULTATION),
    )
    assert created["node"] == "ulaanbaatar"
    cid = str(created["id"])

    def started(command: list[str], log: str) -> Process:
        process = Process(command, tmp_path / log, clean_env())
        processes.append(process)
        return process

    # The clinic and a surgeon enter through Seoul; the media is in Ulaanbaatar.
    clinic = started(publish_command(f"{seoul.url}/whip/{cid}", token(Role.CLINIC, cid)), "c.log")
    await asyncio.to_thread(clinic.wait_for, "publishing", 60)
    surgeon = started(view_command(f"{seoul.url}/whep/{cid}", token(Role.SURGEON, cid)), "s.log")
    await asyncio.to_thread(surgeon.wait_for, "frame ", 30)

    await asyncio.to_thread(time.sleep, 2.0)  # some recording on Ulaanbaatar
    ub.kill()  # the owner dies: no goodbye, its lease and heartbeat just stop
    killed_at = time.monotonic()
    await asyncio.to_thread(clinic.wait_for, "connection lost", 30)
    reconnected = await asyncio.to_thread(clinic.wait_for, "reconnected after", 60)
    back_at = time.monotonic()
    print(f"clinic: {reconnected}, {back_at - killed_at:.1f} s after the kill")

    # A viewer entering through Seoul now (in this process: no start-up of its own to time).
    whep = f"{seoul.url}/whep/{cid}"
    async with viewer(whep, token(Role.OBSERVER, cid), ("video",)) as (_, _, seen):
        assert await wait_until(lambda: bool(seen.counters), RESUME_S)
    resumed_s = time.monotonic() - back_at
    print(f"media resumed {resumed_s:.1f} s after the clinic reconnected")
    assert resumed_s <= RESUME_S

    with urllib.request.urlopen(f"{seoul.url}/readyz", timeout=5) as response:
        assert json.loads(response.read())["checks"]["cluster"] == "ok"

    # One recording: Ulaanbaatar's segment (repaired by Seoul), a gap, then Seoul's segment.
    admin = token(Role.ADMIN, ANY_CONSULTATION)
    listed = get_json(f"{seoul.url}/api/recordings?consultation={cid}", admin)["recordings"]
    assert len(listed) == 1, listed

    def detail() -> dict[str, Any]:
        return get_json(f"{seoul.url}{listed[0]['url']}", admin)

    # Seoul's segment opens at its first keyframe: asked for a moment after the media resumed.
    assert await wait_until(lambda: len(detail()["manifest"]["segments"]) >= 2, 10)
    segments = detail()["manifest"]["segments"]
    assert len(segments) >= 2 and segments[0]["status"] != "open", segments
    assert segments[0]["frames"] > 0 and segments[-1]["frames"] >= 0
    gaps = detail()["manifest"]["gaps"]
    assert gaps and 0 < gaps[0]["duration_s"] < 30, gaps
    print(f"recording: {len(segments)} segments, gap {gaps[0]['duration_s']} s")
