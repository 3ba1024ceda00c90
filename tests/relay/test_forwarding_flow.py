"""End to end through the real server: an aiortc clinic publishes a stamped 720p stream over WHIP,
aiortc surgeons play it over WHEP, and the tests read the stamps out of the decoded frames."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from client.testpattern import TestPatternTrack
from relay import FeedName
from relay.forwarding import dtls_transports
from signaling.app import create_app
from signaling.auth.grants import Grant, Role
from signaling.db.store import Consultation
from signaling.keys import RELAY, STORE, TOKENS
from signaling.settings import Settings
from tests.conftest import MakeToken
from tests.peers import publisher, socket_reader, viewer, wait_until


def url(client: TestClient, path: str) -> str:
    return str(client.make_url(path))


async def test_two_viewers_receive_every_frame_the_clinic_sends_in_order(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)) as (clinic, _),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, first),
        viewer(url(client, f"/whep/{cid}"), make_token("observer", cid)) as (_, _, second),
    ):
        pattern = clinic.getTransceivers()[0].sender.track
        assert isinstance(pattern, TestPatternTrack)
        assert await wait_until(lambda: first.counters and second.counters, timeout=10)
        start, first_sent = time.monotonic(), pattern.counter
        assert await wait_until(lambda: time.monotonic() - start >= 5.0, timeout=6)
        # The clinic's rate is what a loaded 2-core box lets it encode; the relay's job is to
        # pass every frame of it on, in order, whatever that rate is.
        last_sent = pattern.counter
        sent = range(first_sent, last_sent)
        assert len(sent) >= 25, f"the clinic sent {len(sent)} frames in 5 s"  # it streams
        assert await wait_until(
            lambda: min(max(first.counters), max(second.counters)) >= last_sent - 1, timeout=5
        )
        for received in (first, second):
            got = set(received.counters)
            missing = [counter for counter in sent if counter not in got]
            assert len(missing) <= len(sent) // 100, f"{len(missing)} of {len(sent)} frames lost"
            steps = [b - a for a, b in zip(received.counters, received.counters[1:], strict=False)]
            assert all(step >= 1 for step in steps), "frames arrived out of order or repeated"
            assert received.sizes == {(1280, 720)}
            assert received.audio_frames > 100 and received.audio_peak > 1000

        # every session's media took the direct receive path (relay.inbound), none aioice's queue
        router = client.app[RELAY].find(cid)
        assert router is not None and len(router.peers) == 3
        for peer in router.peers.values():
            (dtls,) = dtls_transports(peer.pc)
            pair = dtls.transport._connection._nominated[1]
            assert "datagram_received" in vars(pair.protocol)
            assert socket_reader(pair.protocol.transport) == "read_all_ready.<locals>.read_ready"


async def test_surgeon_talk_back_reaches_the_clinic(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("surgeon", cid), video=False),
        viewer(url(client, f"/whep/{cid}"), make_token("clinic", cid), kinds=("audio",)) as (
            _,
            _,
            clinic,
        ),
    ):
        assert await wait_until(lambda: clinic.audio_frames > 50, timeout=10)
        assert clinic.audio_peak > 1000  # the tone, not silence


async def test_a_late_viewers_keyframe_request_reaches_the_clinic_and_it_sees_a_picture(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    # the recorder asks for a keyframe every 2 s, which would hide whether the viewer's ask worked
    await client.app[STORE].set_recording_enabled(cid, False)
    async with publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)) as (pc, _):
        sender = pc.getTransceivers()[0].sender
        pattern = sender.track
        assert isinstance(pattern, TestPatternTrack)
        requests: list[float] = []
        original = sender._send_keyframe

        def counting_send_keyframe() -> None:
            requests.append(time.monotonic())
            original()

        sender._send_keyframe = counting_send_keyframe  # type: ignore[method-assign]
        await wait_until(lambda: False, timeout=2.5)  # the stream is well past its first keyframe
        joined, made = time.monotonic(), pattern.counter
        async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, late):
            assert await wait_until(lambda: late.counters, timeout=5)
            assert made > 0 and late.counters[0] >= made, "the viewer began on a stale frame"
            assert any(t >= joined for t in requests), "the viewer's keyframe request was lost"


async def test_viewers_keep_their_session_when_the_clinic_reconnects_or_replaces_its_session(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    token = make_token("clinic", cid)
    async with viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen):
        async with publisher(url(client, f"/whip/{cid}"), token):
            assert await wait_until(lambda: len(seen.counters) > 10, timeout=10)
        before = len(seen.counters)
        async with publisher(url(client, f"/whip/{cid}"), token):
            assert await wait_until(lambda: len(seen.counters) > before + 60, timeout=10)
            # the second clinic stream restarts its counter at 0: the viewer sees the new stream
            assert min(seen.counters[before:]) < 5
            # A reload the relay has not noticed yet: the clinic publishes again while its
            # session is still open; the new stream (its counter from 0 again) within 2 s.
            before = len(seen.counters)
            async with publisher(url(client, f"/whip/{cid}"), token) as (pc, _):
                assert await wait_until(lambda: pc.connectionState == "connected", 10)
                replaced = time.monotonic()
                assert await wait_until(lambda: min(seen.counters[before:], default=99) < 30, 10)
                back_s = time.monotonic() - replaced
                print(f"\nthe replacing stream seen {back_s:.2f} s after it connected")
                assert back_s < 2.0
                now = len(seen.counters)
                assert await wait_until(lambda: len(seen.counters) > now + 30, timeout=5)


async def test_h264_consultation_is_forwarded_without_transcoding(
    client: TestClient, make_token: MakeToken
) -> None:
    consultation = await client.app[STORE].create(
        "h264", "H264", consent_by="Dr. A", recorded_by="t"
    )
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (pc, _, seen),
    ):
        assert await wait_until(lambda: len(seen.counters) > 30, timeout=10)
        assert "H264" in pc.remoteDescription.sdp and "VP8" not in pc.remoteDescription.sdp


async def test_the_naive_transcoding_baseline_still_delivers_the_stream(
    aiohttp_client, settings: Settings, make_token: MakeToken
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(relay_mode="transcode")))
    consultation = await client.app[STORE].create(
        "naive", "VP8", consent_by="Dr. A", recorded_by="t"
    )
    cid = consultation.id
    token = client.app[TOKENS].issue(Grant.for_role(Role.CLINIC, cid, "clinic-1", 60))
    viewer_token = client.app[TOKENS].issue(Grant.for_role(Role.SURGEON, cid, "surgeon-1", 60))
    async with publisher(url(client, f"/whip/{cid}"), token):
        assert await wait_until(
            lambda: client.app[RELAY].find(cid).feeds[FeedName.ENDOSCOPE].state == "live", 10
        )
        async with viewer(url(client, f"/whep/{cid}"), viewer_token) as (_, _, seen):
            assert await wait_until(lambda: len(seen.counters) > 15, timeout=10)
            assert seen.counters == sorted(seen.counters)


async def test_video_recovers_from_a_packet_whose_retransmissions_are_lost_too(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    """Stock aiortc freezes until 512 packets later; the relay skips the gap, asks for a keyframe
    and viewers continue with intact frames."""
    cid = consultation.id
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)) as (pc, _),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid)) as (_, _, seen),
    ):
        assert await wait_until(lambda: len(seen.counters) > 20, timeout=10)
        sender = pc.getTransceivers()[0].sender
        transport = sender.transport
        original_send = transport._send_rtp
        state = {"target": None, "dropped": 0}

        async def lossy_send(data: bytes) -> None:
            seq, ssrc = int.from_bytes(data[2:4], "big"), int.from_bytes(data[8:12], "big")
            if ssrc == sender._ssrc and state["target"] is None and not data[1] & 0x80:
                state["target"] = seq  # lose a packet in the middle of a frame...
            if (ssrc == sender._ssrc and seq == state["target"]) or ssrc == sender._rtx_ssrc:
                state["dropped"] += 1  # ...and every retransmission of it
                return
            await original_send(data)

        transport._send_rtp = lossy_send
        producer = client.app[RELAY].find(cid).feeds[FeedName.ENDOSCOPE].producers["video"]
        before = len(seen.counters)
        assert await wait_until(lambda: producer.discontinuities >= 1, timeout=10)
        transport._send_rtp = original_send
        assert await wait_until(lambda: len(seen.counters) > before + 30, timeout=10)
        resumed = seen.counters[before:]
        assert resumed == sorted(resumed), "a damaged frame reached the viewer"
