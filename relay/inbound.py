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
session and handled at once: RTCP by aiortc's own ``_handle_rtcp_data`` (``relay.eager``), RTP
as aiortc's ``_handle_rtp_data`` does it (parsed, by ``relay.rtp_header``; routed by SSRC, MID
or payload type), then by the receiver: a tapped one's ``relay.tapped.TappedReceiver``, any
other aiortc's own coroutine.
Receiver statistics, REMB, NACK and PLI generation, the jitter buffers of ``relay.forwarding``
are aiortc's and the relay's as before. STUN, DTLS and anything arriving before the transport is
connected take aioice's path unchanged.

asyncio reads one datagram per readiness event, one turn of the event loop (an ``epoll_wait``
and the loop's bookkeeping) each; a frame's packets arrive together, so the pair's socket is
read until it is empty (``read_all_ready``, at most ``MAX_DATAGRAMS_PER_WAKE`` at a time).
"""

from __future__ import annotations

import time
from asyncio import selector_events
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtp import is_rtcp

from .eager import packet_failed, run_eagerly
from .rtp_header import parse_rtp
from .tapped import tapped

Address = tuple[Any, ...]

_NTP_EPOCH_MS = 2_208_988_800_000
"aiortc's arrival clock (``aiortc.clock.current_ms``) counts from 1900, not 1970."

MAX_DATAGRAMS_PER_WAKE = 32
"Datagrams read from one socket per readiness event before the loop's other work gets a turn."


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
        read_all_ready(pair.protocol.transport)
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
                run_eagerly(dtls._handle_rtcp_data(srtp.unprotect_rtcp(data)))
            else:
                self._rtp(srtp.unprotect(data), int(time.time() * 1000) + _NTP_EPOCH_MS)
        except pylibsrtp.Error:
            pass  # as aiortc: a replayed or forged packet is dropped
        except ConnectionError:
            pass  # an answer (NACK, RTX) to a pair closing under it: aiortc's disconnect
        except Exception as exc:
            # aiortc's receive task would die on this; here it must not reach the socket's
            # reader, which runs every datagram of the pair
            packet_failed(exc)

    def _rtp(self, data: bytes, arrival_time_ms: int) -> None:
        """aiortc's ``RTCDtlsTransport._handle_rtp_data``, except that a tapped receiver's packets
        go to its ``relay.tapped.TappedReceiver``, a plain call."""
        dtls = self._dtls
        try:
            packet = parse_rtp(data, dtls._rtp_header_extensions_map)
        except ValueError:
            return  # as aiortc: a packet that does not parse is dropped
        receiver = dtls._rtp_router.route_rtp(packet)
        if receiver is None:
            return
        handler = tapped(receiver)
        if handler is not None:
            handler.handle(packet, arrival_time_ms)
        else:
            run_eagerly(receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms))


def read_all_ready(transport: Any) -> bool:
    """Make ``transport`` (asyncio's UDP transport; a TURN relay's is left alone) read every
    datagram waiting when its socket is readable, not one: asyncio's ``_read_ready`` in a loop.
    False if it is not such a transport or is not reading."""
    if type(transport) is not selector_events._SelectorDatagramTransport:  # type: ignore[attr-defined]
        return False
    if not transport.is_reading():
        return False

    def read_ready() -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKE):
            if transport.is_closing():  # asyncio's force-close sets it with _conn_lost
                return
            try:
                data, addr = transport._sock.recvfrom(transport.max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                transport._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            transport._protocol.datagram_received(data, addr)

    transport._add_reader(transport._sock_fd, read_ready)  # replaces asyncio's reader
    return True


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
