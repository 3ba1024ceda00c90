"""No lock-out: sessions that never connect are closed at the connect deadline, one identity
cannot fill a consultation, and the clinic and the surgeon always get in (the audit's attacks,
replayed with offers that carry no ICE candidate)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCSessionDescription

from client.testpattern import TestPatternTrack
from signaling.app import create_app
from signaling.db.store import Consultation
from signaling.keys import AUDIT, RELAY, SETTINGS, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken, error_of
from tests.peers import new_pc, publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url
from tests.signaling.test_whip import offer, post

DEADLINE_S = 1.5


async def dead_offer(direction: str) -> str:
    """An offer without a single ICE candidate: its session can never connect."""
    sdp = await offer(direction=direction)
    return "".join(line for line in sdp.splitlines(True) if not line.startswith("a=candidate:"))


async def assert_the_surgeon_sees(
    client: TestClient, cid: str, clinic: str, make_token: MakeToken
) -> None:
    """A real clinic publishes with ``clinic`` and a real surgeon viewer gets 201 and frames."""
    async with (
        publisher(url(client, f"/whip/{cid}"), clinic),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, surgeon),
    ):
        assert await wait_until(lambda: len(surgeon.counters) >= 10, timeout=10)


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings.with_overrides(connect_deadline_s=DEADLINE_S)))


@pytest.fixture
async def consultation(client: TestClient) -> Consultation:
    return await client.app[STORE].create("t", "VP8", consent_by="Dr. Bat", recorded_by="x")


async def test_a_session_that_never_connects_frees_its_slot_at_the_deadline(
    aiohttp_client,
    settings: Settings,
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings.with_overrides(connect_deadline_s=DEADLINE_S, max_viewers=1))
    client = await aiohttp_client(app)
    cid = (await client.app[STORE].create("t", "VP8")).id
    token = make_token("observer", cid)
    first = await post(client, f"/whep/{cid}", token, await dead_offer("recvonly"))
    answered = time.monotonic()
    assert first.status == 201
    other = make_token("observer", cid)
    assert (
        await error_of(
            await post(client, f"/whep/{cid}", other, await offer(direction="recvonly")), 503
        )
        == "full"
    )
    router = client.app[RELAY].find(cid)
    assert router is not None
    assert await wait_until(lambda: router.viewer_count() == 0, timeout=DEADLINE_S + 3)
    held_s = time.monotonic() - answered
    assert DEADLINE_S - 0.1 <= held_s <= DEADLINE_S + 1.0, held_s
    again = await post(client, f"/whep/{cid}", other, await offer(direction="recvonly"))
    assert again.status == 201
    lines = [r.getMessage() for r in caplog.records if "not connected within" in r.getMessage()]
    assert len(lines) == 1 and token not in caplog.text and other not in caplog.text


async def test_one_observer_bursting_50_dead_sessions_gets_429_and_the_surgeon_still_sees(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    observer = make_token("observer", cid)
    offers = [await dead_offer("recvonly") for _ in range(50)]
    answers = await asyncio.gather(*(post(client, f"/whep/{cid}", observer, o) for o in offers))
    statuses = [a.status for a in answers]
    limit = client.app[RELAY].admission.limits.pending_per_identity
    assert statuses.count(201) == limit and statuses.count(429) == 50 - limit, statuses
    # Offers past the identity's rate budget are refused before admission, so which reason
    # an offer gets depends on the order the server took them in, not on the list's order.
    refused = [a for a in answers if a.status == 429]
    reasons = [await error_of(a, 429) for a in refused]
    burst, _ = client.app[SETTINGS].session_limit_per_identity
    assert set(reasons) == {"too-many-sessions", "rate-limited"}, reasons
    assert reasons.count("rate-limited") <= len(offers) - burst, reasons
    pending = refused[reasons.index("too-many-sessions")]
    assert int(pending.headers["Retry-After"]) >= DEADLINE_S
    await assert_the_surgeon_sees(client, cid, make_token("clinic", cid), make_token)


async def test_many_observers_fill_the_pending_limit_but_never_keep_the_surgeon_out(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    observers = [make_token("observer", cid) for _ in range(4)]
    offers = [await dead_offer("recvonly") for _ in range(32)]
    answers = await asyncio.gather(
        *(post(client, f"/whep/{cid}", observers[i % 4], o) for i, o in enumerate(offers))
    )
    statuses = [a.status for a in answers]
    assert statuses.count(201) == client.app[RELAY].admission.limits.pending_per_consultation
    assert set(statuses) == {201, 503}, statuses
    assert "Retry-After" in next(a for a in answers if a.status == 503).headers
    await assert_the_surgeon_sees(client, cid, make_token("clinic", cid), make_token)


async def test_another_clinics_dead_publish_keeps_the_real_clinic_out_only_until_the_deadline(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    squatter = await post(
        client, f"/whip/{cid}", make_token("clinic", cid), await dead_offer("sendonly")
    )
    assert squatter.status == 201
    started = time.monotonic()
    clinic = make_token("clinic", cid)
    busy = await post(client, f"/whip/{cid}", clinic, await offer())
    assert await error_of(busy, 409) == "feed-busy"
    assert busy.headers["Retry-After"]
    router = client.app[RELAY].find(cid)
    assert router is not None
    feed = next(iter(router.feeds.values()))
    assert await wait_until(lambda: feed.publisher is None, timeout=DEADLINE_S + 3)
    assert time.monotonic() - started <= DEADLINE_S + 1.0
    await assert_the_surgeon_sees(client, cid, clinic, make_token)


async def test_a_second_clinic_link_re_posting_dead_offers_cannot_keep_the_real_clinic_off(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """The squatter renews its never-connecting publish every 0.5 s (and so re-posts the moment
    any deadline fires); the real clinic retries as the page does, after ``Retry-After``: it
    gets the feed one connect deadline after its first refusal, and the squatter gets 429.
    The squatter re-posts one prepared offer: making an offer each time could, on a loaded
    machine, leave a gap longer than the deadline, and its session would simply expire; and
    0.5 s keeps it under the offers' rate limit (20 at once, then one per 3 s) for the test."""
    cid = consultation.id
    whip = f"/whip/{cid}"
    squatter, clinic = make_token("clinic", cid), make_token("clinic", cid)
    dead = await dead_offer("sendonly")
    assert (await post(client, whip, squatter, dead)).status == 201
    squatted: list[tuple[int, dict[str, str]]] = []
    stop = asyncio.Event()

    async def squat() -> None:
        while not stop.is_set():
            answer = await post(client, whip, squatter, dead)
            squatted.append((answer.status, await answer.json() if answer.status >= 400 else {}))
            await asyncio.sleep(0.5)

    squatting = asyncio.get_running_loop().create_task(squat())
    pc = new_pc()
    pc.addTransceiver(TestPatternTrack(), direction="sendonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        started, refusals = time.monotonic(), []
        while (answer := await post(client, whip, clinic, pc.localDescription.sdp)).status != 201:
            assert time.monotonic() - started < 4 * DEADLINE_S, refusals
            refusals.append(answer.status)
            await asyncio.sleep(int(answer.headers["Retry-After"]))
        took_s = time.monotonic() - started
        assert refusals and set(refusals) == {409}, refusals
        assert took_s <= DEADLINE_S + 1.5, took_s  # one deadline (Retry-After rounds it up)
        await pc.setRemoteDescription(RTCSessionDescription(await answer.text(), "answer"))
        assert await wait_until(lambda: pc.connectionState == "connected", timeout=10)
        async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as seen:
            assert await wait_until(lambda: len(seen[2].counters) >= 10, timeout=10)
        await wait_until(lambda: False, timeout=2 * DEADLINE_S + 0.5)  # the squatter cools down
    finally:
        stop.set()
        await squatting
        await pc.close()
    assert pc.connectionState == "closed"
    refused = [body for status, body in squatted if status == 429]
    assert refused and "never connected" in refused[0]["reason"], squatted
    assert squatted[-1][0] == 409  # after its cool-down: the feed has a connected publisher


async def test_a_connected_session_outlives_the_connect_deadline(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    clinic, observer = make_token("clinic", cid), make_token("observer", cid)
    async with (
        publisher(url(client, f"/whip/{cid}"), clinic) as (_, clinic_session),
        viewer(url(client, f"/whep/{cid}"), observer, kinds=("video",)) as (_, _, seen),
    ):
        assert clinic_session.location is not None
        assert await wait_until(lambda: len(seen.counters) >= 5, timeout=10)
        await wait_until(lambda: False, timeout=DEADLINE_S + 0.5)
        count = len(seen.counters)
        assert await wait_until(lambda: len(seen.counters) >= count + 10, timeout=5)
        router = client.app[RELAY].find(cid)
        assert router is not None and len(router.peers) == 2


async def test_one_link_holds_at_most_its_session_limit(
    aiohttp_client, settings: Settings, make_token: MakeToken
) -> None:
    app = create_app(
        settings.with_overrides(max_sessions_per_identity=3, max_pending_per_identity=8)
    )
    client = await aiohttp_client(app)
    cid = (await client.app[STORE].create("t", "VP8")).id
    token = make_token("observer", cid)
    statuses = [
        (await post(client, f"/whep/{cid}", token, await dead_offer("recvonly"))).status
        for _ in range(4)
    ]
    assert statuses == [201, 201, 201, 429]


async def test_the_server_wide_cap_answers_503(
    aiohttp_client, settings: Settings, make_token: MakeToken
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(max_sessions=2)))
    store = client.app[STORE]
    cids = [(await store.create(f"t{i}", "VP8")).id for i in range(3)]
    answers = [
        await post(client, f"/whep/{cid}", make_token("surgeon", cid), await dead_offer("recvonly"))
        for cid in cids
    ]
    assert [a.status for a in answers] == [201, 201, 503]
    assert await error_of(answers[2], 503) == "full" and answers[2].headers["Retry-After"]


async def test_a_session_the_audit_trail_cannot_record_is_ended_and_refused(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    await client.app[AUDIT].close()  # e.g. the disk failed under the trail
    answer = await post(
        client,
        f"/whep/{consultation.id}",
        make_token("surgeon", consultation.id),
        await offer(direction="recvonly"),
    )
    assert await error_of(answer, 503) == "unavailable"
    router = client.app[RELAY].find(consultation.id)
    assert router is None or await wait_until(lambda: not router.peers, timeout=3)
