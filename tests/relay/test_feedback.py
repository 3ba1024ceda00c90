"""A viewer's RTCP as samples (``relay.feedback``): the aiortc 1.16.0 seam, and real reports
between two real peer connections on loopback."""

from __future__ import annotations

import asyncio
import inspect

import aiortc
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, VideoStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

from relay import feedback, forwarding
from relay.quality import Sample
from tests.peers import new_pc, wait_until

pytestmark = pytest.mark.timeout(60)


def test_the_seam_is_the_one_written_against() -> None:
    """Fails when aiortc moves what ``relay.feedback`` wraps and reads: re-check it then."""
    assert aiortc.__version__ == forwarding.AIORTC_VERSION == "1.16.0"
    handle = RTCRtpSender._handle_rtcp_packet
    assert inspect.iscoroutinefunction(handle)
    assert list(inspect.signature(handle).parameters) == ["self", "packet"]
    source = inspect.getsource(RTCRtpSender)
    for private in (
        "self.__lsr = ",
        "self.__lsr_time = ",
        "self.__packet_count += 1",
        "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE]",
    ):
        assert private in source, private


async def _connect(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)


async def test_remb_loss_and_rtt_of_a_real_receiver_arrive_as_samples() -> None:
    forwarding.use_host_addresses(("127.0.0.1",))
    sending, receiving = new_pc(), new_pc()
    transceiver = sending.addTransceiver(VideoStreamTrack(), direction="sendonly")
    samples: list[Sample] = []
    watched = feedback.watch(transceiver.sender, samples.append)
    tasks: list[asyncio.Future[None]] = []

    @receiving.on("track")
    def on_track(track: aiortc.MediaStreamTrack) -> None:
        async def drain() -> None:
            while True:
                await track.recv()

        tasks.append(asyncio.ensure_future(drain()))

    try:
        await _connect(sending, receiving)
        assert await wait_until(
            lambda: (
                any(s.remb_bps for s in samples)
                and any(s.loss is not None for s in samples)
                and any(s.rtt_s is not None for s in samples)
            ),
            timeout=20,
        ), samples
        rtts = [s.rtt_s for s in samples if s.rtt_s is not None]
        assert all(0 <= rtt < 1 for rtt in rtts), rtts  # loopback
        assert all(s.loss == 0 for s in samples if s.loss is not None)
        # NACKs count, and the next report carries their share of what was sent
        sender = transceiver.sender
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
        nack.lost = [1, 2, 3]
        await sender._handle_rtcp_packet(nack)
        assert watched.nacked == 3
        seen = len(samples)  # a REMB may follow the report before the wait below returns
        assert await wait_until(lambda: any(s.loss is not None for s in samples[seen:]), timeout=5)
        report = next(s for s in samples[seen:] if s.loss is not None)
        assert report.loss is not None and report.loss > 0
        # after a source swap, NACKs of what was sent before are not answered
        history = sender._RTCRtpSender__rtp_history
        old = next(iter(history.values())).sequence_number
        watched.forget_sent()
        stale = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
        stale.lost = [old]
        await sender._handle_rtcp_packet(stale)
        assert watched.forgotten_nacks == 1 and watched.nacked == 3  # not loss on the new one
        # a packet is resent at most once per RTT, however fast the viewer re-NACKs it
        again = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
        again.lost = [(old + 30_000) % 65_536]
        await sender._handle_rtcp_packet(again)
        await sender._handle_rtcp_packet(again)
        assert watched.nacked == 4 and watched.repeated_nacks == 1
    finally:
        for task in tasks:
            task.cancel()
        await sending.close()
        await receiving.close()


async def test_a_fault_in_using_a_report_is_logged_and_aiortc_still_handles_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hook runs inside aiortc's DTLS receive loop: an exception escaping it would end the
    viewer's connection."""
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("video", direction="sendonly").sender
    handled: list[object] = []

    async def aiortc_handles(packet: object) -> None:
        handled.append(packet)

    sender._handle_rtcp_packet = aiortc_handles  # type: ignore[method-assign]

    def broken(sample: Sample) -> None:
        raise RuntimeError("a policy bug")

    feedback.watch(sender, broken)
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [sender._ssrc])
    )
    try:
        for _ in range(3):
            await sender._handle_rtcp_packet(remb)
        assert handled == [remb, remb, remb]
        faults = [r for r in caplog.records if "could not be used" in r.getMessage()]
        assert len(faults) == 1  # once a minute, not per report
    finally:
        await pc.close()
