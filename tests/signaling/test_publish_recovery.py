"""``endolink publish`` comes back by itself: after the server was killed and restarted on the same
port and data directory new stamped frames reach a fresh viewer within one back-off pause of the
server answering (the 60 s outage is ``python -m bench.outage``, figures in docs/benchmarks.md); a
session the server closed is replaced at once; a refusal ends it with the server's reason."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bench.outage import measure
from client.reconnect import BACKOFF_FIRST_S
from relay import FeedName, FeedState
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.clips import stamped_clip
from tests.conftest import MakeToken
from tests.peers import wait_until
from tests.processes import Process, clean_env, publish_command

pytestmark = pytest.mark.timeout(120)

OUTAGE_S = 3.0
RECOVERY_S = 5.0
OUTAGE_RECOVERY_S = BACKOFF_FIRST_S * 4 * 1.2 + 1.0
"A 3 s outage sees pauses of 1, 2 and 4 s (±20 %) between attempts, plus a session set-up."


async def test_publishing_resumes_within_seconds_of_a_restarted_server(tmp_path: Path) -> None:
    result = await measure(OUTAGE_S, tmp_path)
    print(f"outage {OUTAGE_S} s: picture back {result.recovered_s} s after the server answered")
    assert result.recovered_s is not None, (tmp_path / "processes.log").read_text()[-3000:]
    assert result.recovered_s <= OUTAGE_RECOVERY_S
    said = "\n".join(result.publisher_says)
    assert "connection lost — reconnecting" in said
    assert "reconnected after" in said
    assert "token" not in said.lower() and "Bearer" not in said


@pytest.mark.parametrize("looped_file", [False, True], ids=["testpattern", "looped-file"])
async def test_a_session_the_server_closed_is_replaced_by_a_fresh_one(
    client: TestClient,
    make_token: MakeToken,
    consultation: Consultation,
    tmp_path: Path,
    processes: list[Process],
    looped_file: bool,
) -> None:
    cid = consultation.id
    url = str(client.make_url(f"/whip/{cid}"))
    command = publish_command(url, make_token("clinic", cid))
    if looped_file:  # an H.264 MP4 tower recording, sent again and again
        clip = stamped_clip(tmp_path / "scope.mp4", 30, "H264")
        command = [*publish_command(url, make_token("clinic", cid), str(clip)), "--loop"]
    publisher = Process(command, tmp_path / "log", clean_env())
    processes.append(publisher)
    await asyncio.to_thread(publisher.wait_for, "publishing", 30)
    feed = client.app[RELAY].find(cid).feeds[FeedName.ENDOSCOPE]  # type: ignore[union-attr]
    assert await wait_until(lambda: feed.state is FeedState.LIVE, 10)
    first = feed.publisher
    assert first is not None

    await client.app[RELAY].find(cid).close_peer(first.id)  # type: ignore[union-attr]
    closed_at = time.monotonic()
    assert await wait_until(lambda: feed.publisher not in (None, first), RECOVERY_S)
    assert await wait_until(lambda: feed.state is FeedState.LIVE, RECOVERY_S)
    print(f"live again {time.monotonic() - closed_at:.2f} s after the server closed the session")
    await asyncio.to_thread(publisher.wait_for, "reconnected after", 5)
    assert publisher.stop() == 0


async def test_a_refusal_stops_publishing_with_the_servers_reason(
    client: TestClient, make_token: MakeToken, consultation: Consultation, tmp_path: Path
) -> None:
    url = str(client.make_url(f"/whip/{consultation.id}"))
    command = publish_command(url, make_token("observer", consultation.id))
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "publishing failed: HTTP 403: role observer may not publish"
    )
