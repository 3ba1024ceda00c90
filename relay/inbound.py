"""The receive path of a peer's SRTP and SRTCP (aiortc 1.16.0 / aioice 0.13.0 seam): handled where
the datagram arrives, not one event loop turn later.

Per datagram, aioice first tries to parse it as STUN (a ``ValueError`` for every media packet),
then puts it in an ``asyncio.Queue``; on the next turn of the event loop the DTLS transport's
task wakes through four coroutine layers (its ``_recv_next``, aioice's ``recv`` and
``recvfrom``, the queue's ``get``), sorts DTLS from SRTP, unprotects and hands the packet to
aiortc's RTP or RTCP handling. A publisher sends ~200 datagrams a second; that hop was a large
part of a consultation's fixed cost.

``InboundRtp`` takes the datagrams of the nominated candidate pair before aioice does. SRTP and
SRTCP (first byte 128–191, RFC 7983) are counted where aiortc counts them (the DTLS transport's
``rx`` counters, which ``relay.liveness`` reads), unprotected with the transport's own SRTP
session and given to aiortc's own ``_handle_rtp_data`` / ``_handle_rtcp_data``, run at once
(``run_eagerly``): receiver statistics, REMB, NACK and PLI generation, the jitter buffers of
``relay.forwarding`` are aiortc's and the relay's as before. STUN, DTLS and anything arriving
before the transport is connected take aioice's path unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection
from aiortc.clock import current_ms
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtp import is_rtcp

logger = logging.getLogger(__name__)

_resuming: set[asyncio.Task[None]] = set()
"Handlers that did suspend (a send waiting on a TURN channel binding), until they finish."

Address = tuple[Any, ...]


class InboundRtp:
    """The SRTP/SRTCP receive path of one DTLS transport (see the module doc)."""

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self._dtls = dtls
        self._aioice: Callable[[bytes | str, Address], None] | None = None
        self.packets = 0
        "Datagrams this path handled (the rest went through aioice)."

    def install(self) -> bool:
        """Take the datagrams of the nominated pair (call once connected). False if there is
        none yet or it is taken already."""
        pair = self._dtls.transport._connection._nominated.get(1)
        if pair is None or "datagram_received" in vars(pair.protocol):
            return False
        self._aioice = pair.protocol.datagram_received
        pair.protocol.datagram_received = self._datagram_received  # type: ignore[method-assign,assignment]
        return True

    def _datagram_received(self, data: bytes, addr: Address) -> None:
        dtls = self._dtls
        first = data[0] if data else 0
        srtp = dtls._rx_srtp
        if not (127 < first < 192) or srtp is None or dtls._state != State.CONNECTED:
            assert self._aioice is not None
            self._aioice(data, addr)
            return
        self.packets += 1
        dtls._RTCDtlsTransport__rx_bytes += len(data)  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]
        try:
            if is_rtcp(data):
                handling = dtls._handle_rtcp_data(srtp.unprotect_rtcp(data))
            else:
                arrival_time_ms = current_ms()
                handling = dtls._handle_rtp_data(srtp.unprotect(data), arrival_time_ms)
        except pylibsrtp.Error:
            return  # as aiortc: a replayed or forged packet is dropped
        try:
            run_eagerly(handling)
        except Exception:
            # aiortc's receive task would die on this; here it must not reach asyncio's
            # datagram transport, which closes the socket on an exception from its protocol
            logger.warning("InboundRtp: handling a packet failed", exc_info=True)


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` now, on the caller's stack. If it suspends (awaits a future that is not
    done), a task finishes it — what Python 3.12's eager task factory does; 3.11 has none."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return
    task = asyncio.get_running_loop().create_task(_finish(coroutine, awaited))
    _resuming.add(task)
    task.add_done_callback(_resuming.discard)


async def _finish(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a suspended ``coroutine`` as an ``asyncio.Task`` would: wait for the future it
    yielded, resume it, until it returns."""
    try:
        while True:
            if isinstance(awaited, asyncio.Future):
                awaited._asyncio_future_blocking = False
                await asyncio.wait((awaited,))
            else:  # a bare yield (``asyncio.sleep(0)``): give the loop one turn
                await asyncio.sleep(0)
            try:
                awaited = coroutine.send(None)
            except StopIteration:
                return
    except Exception:
        logger.warning("InboundRtp: handling a packet failed", exc_info=True)
    finally:
        coroutine.close()


def receive_where_it_arrives(pc: RTCPeerConnection) -> list[InboundRtp]:
    """Give each DTLS transport of ``pc`` (connected: ICE nominated, DTLS done) the direct
    receive path."""
    paths: list[InboundRtp] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and all(p._dtls is not dtls for p in paths):
            path = InboundRtp(dtls)
            if path.install():
                paths.append(path)
    return paths
