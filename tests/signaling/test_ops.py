"""Health, readiness and Prometheus metrics: scraped from a real app while a real aiortc publisher
streams to a real viewer and pages are connected."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from signaling.app import create_app
from signaling.db.store import Consultation
from signaling.keys import HUB, STORE
from signaling.settings import Settings
from signaling.ws.messages import Restarting
from tests.conftest import MakeToken, bearer, error_of
from tests.peers import publisher, viewer
from tests.signaling.test_websocket import closed_with, join, next_of

ROLES = ("surgeon", "clinic", "observer")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_healthz_answers_without_a_token(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_names_what_is_not_ready(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "disk": "ok", "server": "ok"},
    }
    await client.app[HUB].close_all(1001, "server restarting")  # shutdown begins
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["checks"]["server"] == "the server is shutting down"
    assert body["checks"]["database"] == "ok"


async def test_readyz_refuses_below_the_recording_disk_floor(
    aiohttp_client, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(replace(settings, recording_min_free_mb=2**40)))
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["checks"]["disk"] == "free disk space is below the recording floor"
    assert str(settings.data_dir) not in await response.text()


async def test_readyz_probes_a_stuck_database_once_whatever_the_number_of_requests(
    client: TestClient,
) -> None:
    """200 probes while the database's connection is held (a write that does not end): one
    ping in flight, all answered 503 within the ping's bound, then ready once it is free."""
    store = client.app[STORE]
    ping = store.ping
    in_flight, most = 0, 0

    async def counted() -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await ping()
        finally:
            in_flight -= 1

    store.ping = counted  # type: ignore[method-assign]  # the real ping, counted
    held = store._db._lock  # what every query of the store takes, in its thread
    held.acquire()
    try:
        async with asyncio.timeout(20):
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(200)))
            bodies = [(r.status, await r.json()) for r in answers]
    finally:
        held.release()
    assert most == 1, most
    assert {status for status, _ in bodies} == {503}
    assert {body["checks"]["database"] for _, body in bodies} == {"the database is slow to answer"}
    deadline = time.monotonic() + 10
    while (response := await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, await response.text()
        await asyncio.sleep(0.2)
    assert most == 1 and in_flight == 0


async def test_shutdown_tells_pages_the_server_is_restarting_then_closes_1001(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    ws, _ = await join(client, consultation.id, make_token("surgeon", consultation.id))
    await client.app[HUB].close_all(1001, "server restarting", farewell=Restarting())
    assert (await next_of(ws, "restarting"))["type"] == "restarting"
    assert await closed_with(ws) == (1001, "server restarting")


async def test_metrics_are_for_loopback_only_without_a_token(client: TestClient) -> None:
    await scrape(client)
    proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert await error_of(proxied, 403) == "forbidden"


@pytest.mark.parametrize(
    "overrides", [{"host": "0.0.0.0"}, {"host": "::"}, {"trusted_proxies": ("127.0.0.1",)}]
)
async def test_metrics_need_a_token_once_the_server_is_reachable_from_elsewhere(
    aiohttp_client, settings: Settings, overrides: dict[str, object]
) -> None:
    """Bound to every interface, or behind a proxy: a same-host proxy that adds no
    X-Forwarded-For would otherwise pass every visitor off as this machine."""
    client = await aiohttp_client(create_app(replace(settings, **overrides)))
    response = await client.get("/metrics")
    assert await error_of(response, 403) == "forbidden"
    assert "ENDOLINK_METRICS_TOKEN" in (await response.json())["reason"]


async def test_wrong_metrics_tokens_spend_the_failed_authentication_budget(
    aiohttp_client, settings: Settings
) -> None:
    app = create_app(
        replace(settings, metrics_token="s3cret-metrics", auth_failure_limit=(3, 60.0))
    )
    client = await aiohttp_client(app)
    for _ in range(3):
        wrong = await client.get("/metrics", headers=bearer("guess"))
        assert await error_of(wrong, 401) == "unauthorized"
    refused = await client.get("/metrics", headers=bearer("guess"))
    assert await error_of(refused, 429) == "too-many-attempts"
    assert int(refused.headers["Retry-After"]) > 0
    await scrape(client, **bearer("s3cret-metrics"))  # the right one still reads


@pytest.mark.parametrize("given", [None, "Bearer wrong", "s3cret-metrics"])
async def test_metrics_token_is_required_when_set(
    aiohttp_client, settings: Settings, given: str | None
) -> None:
    client = await aiohttp_client(create_app(replace(settings, metrics_token="s3cret-metrics")))
    headers = {"Authorization": given} if given is not None else {}
    assert await error_of(await client.get("/metrics", headers=headers), 401) == "unauthorized"
    await scrape(client, **bearer("s3cret-metrics"))


async def test_metrics_move_during_a_live_session(
    client: TestClient, make_token: MakeToken, consultation: Consultation
) -> None:
    cid = consultation.id
    pages = [(await join(client, cid, make_token(role, cid)))[0] for role in ROLES]
    await pages[0].send_json({"type": "chat", "text": "ready"})
    await next_of(pages[0], "chat")
    # Pages read all the time (aiohttp answers the server's heartbeat pings while reading).
    readers = [asyncio.ensure_future(_read_until_closed(ws)) for ws in pages]
    whip, whep = str(client.make_url(f"/whip/{cid}")), str(client.make_url(f"/whep/{cid}"))
    async with (
        publisher(whip, make_token("clinic", cid), size=(640, 360)),  # metrics, not throughput
        viewer(whep, make_token("surgeon", cid), kinds=("video",)) as (_, _, received),
    ):
        await asyncio.wait_for(received.video_event.wait(), 15)
        await client.get(f"/api/consultations/{cid}", headers=bearer("not-a-token"))
        first = await scrape(client)
        await asyncio.sleep(3)
        second = await scrape(client)

        feed = {"consultation": cid, "feed": "endoscope"}
        video = {**feed, "kind": "video"}
        frames = [value(s, "endolink_feed_frames_total", **video) or 0 for s in (first, second)]
        assert frames[1] > frames[0] + 20, frames
        sent = [value(s, "endolink_feed_bytes_total", **video) or 0 for s in (first, second)]
        assert sent[1] > sent[0]
        assert (value(second, "endolink_feed_fps", **feed) or 0) > 10
        assert (value(second, "endolink_feed_bitrate_bps", **video) or 0) > 10_000
        assert value(second, "endolink_feed_live", **feed) == 1
        assert (value(second, "endolink_feed_keyframes_total", **feed) or 0) >= 1
        assert (value(second, "endolink_feed_keyframe_requests_total", **feed) or 0) >= 1
        assert (value(second, "endolink_feed_packets_received_total", **feed) or 0) > (
            value(first, "endolink_feed_packets_received_total", **feed) or 0
        )
        assert value(second, "endolink_viewers", consultation=cid) == 1
        assert value(second, "endolink_consultations_live") == 1
        for role in ROLES:
            assert value(second, "endolink_participants", role=role) == 1
        assert value(second, "endolink_sessions", role="publisher", state="connected") == 1
        assert value(second, "endolink_sessions", role="viewer", state="connected") == 1
        assert (value(second, "endolink_ws_messages_received_total", type="chat") or 0) == 1
        assert (value(second, "endolink_ws_messages_sent_total") or 0) >= 4
        routes = {dict(labels).get("route") for (name, labels) in second}
        assert "/whip/{cid}" in routes and "/whep/{cid}" in routes and "/metrics" in routes
        assert not any(cid in str(route) for route in routes)  # templates, never ids
        assert (
            value(
                second,
                "endolink_http_responses_total",
                route="/whip/{cid}",
                method="POST",
                status="201",
            )
            == 1
        )
        assert value(second, "endolink_errors_total", source="http", kind="unauthorized") == 1
        assert (value(second, "process_resident_memory_bytes") or 0) > 0
        assert (value(second, "process_open_fds") or 0) > 0
        assert (value(second, "endolink_asyncio_tasks") or 0) > 0
        # The viewer's receiver reports give its round-trip time within a few seconds.
        deadline = time.monotonic() + 10
        rtt = value(second, "endolink_feed_viewer_rtt_seconds", **feed)
        while rtt is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rtt = value(await scrape(client), "endolink_feed_viewer_rtt_seconds", **feed)
        assert rtt is not None and 0 <= rtt < 1
    for ws in pages:
        await ws.close()
    await asyncio.wait_for(asyncio.gather(*readers), 5)


async def _read_until_closed(ws: ClientWebSocketResponse) -> None:
    while not ws.closed:
        await ws.receive()


def test_the_dashboard_and_the_operations_doc_name_only_metrics_the_server_has() -> None:
    root = Path(__file__).resolve().parents[2]
    source = "".join(p.read_text() for p in (root / "signaling" / "ops").glob("*.py"))
    for doc in ("grafana-endolink.json", "operations.md"):
        named = set(re.findall(r"endolink_[a-z_]+", (root / "docs" / doc).read_text()))
        assert named, doc
        unknown = {n for n in named if f'"{n.removesuffix("_total")}"' not in source}
        assert not unknown, f"{doc} names metrics the server does not have: {sorted(unknown)}"
