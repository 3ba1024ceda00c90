"""The direct receive path (``relay.inbound``): real VP8 frames, stamped, through two real peer
connections on loopback; the receiving side takes its SRTP where it arrives, aiortc's receiver
decodes what arrives, and a lost packet is NACKed and comes back in RTX."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import Any

import aioice.ice
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from relay import forwarding
from relay.inbound import (
    MAX_DATAGRAMS_PER_WAKE,
    InboundRtp,
    read_all_ready,
)
from tests.encoded_track import (
    FRAMES,
    OneLost,
    collect_stamps,
    connect,
    count_retransmissions,
    send_stamped_vp8,
)
from tests.peers import new_pc, socket_reader, wait_until

pytestmark = pytest.mark.timeout(60)

DROPPED = 120
"The index, among the SRTP media datagrams the direct path sees, of the one the test loses."


def test_the_seam_is_the_one_written_against() -> None:
    """Fails when aiortc or aioice move what ``InboundRtp`` short-cuts: re-check it then."""
    assert aioice.__version__ == "0.13.0"
    dtls = inspect.getsource(RTCDtlsTransport._recv_next)
    for line in (
        "elif first_byte > 127 and first_byte < 192 and self._rx_srtp:",
        "self.__rx_bytes += len(data)",
        "self.__rx_packets += 1",
        "arrival_time_ms = clock.current_ms()",
        "data = self._rx_srtp.unprotect_rtcp(data)",
        "await self._handle_rtcp_data(data)",
        "data = self._rx_srtp.unprotect(data)",
        "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)",
    ):
        assert line in dtls, line
    received = inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    assert "self.receiver.data_received(data, self.local_candidate.component)" in received
    queued = inspect.getsource(aioice.ice.Connection.data_received)
    assert "self._queue.put_nowait((data, component))" in queued


async def test_stamped_frames_arrive_whole_and_in_order_and_a_loss_is_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forwarding.use_host_addresses(("127.0.0.1",))
    sending, receiving = new_pc(), new_pc()
    transceiver = send_stamped_vp8(sending)
    sender = transceiver.sender
    resent = count_retransmissions(sender)
    paths: list[InboundRtp] = []
    stamps = collect_stamps(receiving)
    losing = OneLost(DROPPED)

    @receiving.on("connectionstatechange")
    def on_state() -> None:
        if receiving.connectionState == "connected":
            paths.extend(losing.install(receiving))

    try:
        await connect(sending, receiving)
        # aiortc's receiver hands a frame on when the next one starts: all but the last arrive
        assert await wait_until(lambda: len(stamps) >= FRAMES - 1, timeout=20), stamps
        assert stamps[: FRAMES - 1] == list(range(FRAMES - 1))
        assert len(paths) == 1  # BUNDLE: one DTLS transport
        path = paths[0]
        assert losing.media_seen > DROPPED

        # the media went this way, not through aioice's queue
        stats = [s for s in (await receiving.getStats()).values() if s.type == "inbound-rtp"]
        assert path.packets >= stats[0].packetsReceived - 20  # a few before it was installed
        connection = path._dtls.transport._connection
        udp = connection._nominated[1].protocol.transport
        assert socket_reader(udp) == "read_all_ready.<locals>.read_ready"
        assert forwarding.packets_received(receiving) >= path.packets

        # the lost packet was asked for (a NACK went out from the direct path) and resent in RTX
        assert resent
        # sender reports (SRTCP) reached the receiver the same way
        assert receiving.getTransceivers()[0].receiver._RTCRtpReceiver__lsr

        # forged SRTP and SRTCP from anyone are dropped quietly: nothing reaches the loop's
        # exception handler or the log, and the socket stays open
        handled = path.packets
        loop = asyncio.get_running_loop()
        escaped: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: escaped.append(context))
        with (
            caplog.at_level(logging.WARNING, logger="relay.eager"),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger,
        ):
            forger.bind(("127.0.0.1", 0))
            for forged in (b"\x80\x60" + bytes(30), b"\x80\xc8" + bytes(30), b"\x80"):
                forger.sendto(forged, udp.get_extra_info("sockname"))
            # the sender's own reports may arrive meanwhile: count the forger's datagrams alone
            forged_from = forger.getsockname()
            assert await wait_until(lambda: losing.sources.count(forged_from) == 3, timeout=5)
        assert path.packets >= handled + 3
        loop.set_exception_handler(None)
        assert escaped == [] and caplog.text == ""
        assert not udp.is_closing()

        # STUN still reaches aioice: a binding request on the nominated pair is answered
        assert await forwarding.probe(receiving)
        assert not path.install()  # taken already
    finally:
        await asyncio.wait_for(sending.close(), 10)
        await receiving.close()


class Received(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.datagrams.append(data)


@pytest.mark.parametrize("sent", [10, MAX_DATAGRAMS_PER_WAKE + 8])
async def test_one_readiness_event_reads_every_waiting_datagram(sent: int) -> None:
    """A frame's packets arrive together: they are read in one turn of the loop, not one each."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Received, local_addr=("127.0.0.1", 0))
    try:
        assert read_all_ready(transport)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for index in range(sent):
                client.sendto(index.to_bytes(2, "big"), transport.get_extra_info("sockname"))
        for _ in range(1000):  # the test yields between two callbacks of the loop, never inside
            if protocol.datagrams:
                break
            await asyncio.sleep(0)
        assert len(protocol.datagrams) == min(sent, MAX_DATAGRAMS_PER_WAKE)
        assert await wait_until(lambda: len(protocol.datagrams) == sent, timeout=2)
        assert [int.from_bytes(d, "big") for d in protocol.datagrams] == list(range(sent))
    finally:
        transport.close()


async def test_a_relayed_or_closed_transport_is_left_to_asyncio() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Received, local_addr=("127.0.0.1", 0))
    transport.close()
    assert not read_all_ready(transport)
    assert not read_all_ready(object())
