"""A frame's datagrams in one system call: Linux UDP segmentation offload (GSO, ``UDP_SEGMENT``).

A viewer's frame is a run of SRTP packets of one size and a shorter last one (the packetizers cut
a frame into full packets and a remainder). Sent one ``sendto`` each, every packet pays a system
call and the kernel's UDP and IP send path; with ``UDP_SEGMENT`` the frame is one ``sendmsg``,
one pass through that path, and the kernel (or the network card) cuts it into the same
datagrams: on the wire nothing changes. On this machine's loopback the sending side's CPU time
for a five-packet frame fell from ~25 to ~8 µs.

``send_datagrams`` sends on asyncio's UDP transport and keeps its guarantees: nothing overtakes
datagrams asyncio still holds (a full socket buffer), a socket that would block hands the rest to
asyncio's ``sendto`` (which buffers them), and any other error goes to asyncio's ``sendto`` too,
datagram by datagram, so the protocol hears of it as before. Where the kernel or the route
refuses segmentation (``EIO`` without checksum offload, ``EINVAL``, ``ENOPROTOOPT``) it is
switched off for the process, once, with one log line; a kernel older than the option (4.18) is
found out before the first send.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from asyncio import selector_events
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103
"``linux/udp.h``: the segment size of one ``sendmsg``."
MAX_SEGMENTS = 64
"``UDP_MAX_SEGMENTS`` of older kernels (newer ones allow 128)."
MAX_BYTES = 60_000
"Under the 64 KiB of one UDP datagram, with the IPv6 and UDP headers."
_UNSUPPORTED = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})

Address = tuple[Any, ...]


class _State:
    enabled: bool | None = None
    "Whether to segment: None until ``kernel_segments`` was asked; False once a send was refused."
    segmented_sends = 0
    "``sendmsg`` calls that carried more than one datagram (tests and benches read it)."


def kernel_segments() -> bool:
    """Whether this kernel knows ``UDP_SEGMENT`` (Linux 4.18 and later): asked once, by reading
    the option on a new socket. A kernel without it would not refuse the control message but
    ignore it, and send the whole frame as one datagram."""
    if _State.enabled is None:
        _State.enabled = False
        if sys.platform == "linux":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.getsockopt(SOL_UDP, UDP_SEGMENT)
                    _State.enabled = True
                except OSError:
                    logger.info("UDP segmentation offload unknown to this kernel: not used")
    return _State.enabled


def segmented_sends() -> int:
    return _State.segmented_sends


def send_datagrams(transport: Any, datagrams: list[bytes], address: Address) -> None:
    """Send ``datagrams`` in order to ``address`` on asyncio's UDP ``transport``."""
    sendto = transport.sendto
    if (
        len(datagrams) < 2
        or not kernel_segments()
        or type(transport) is not selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
        or transport._buffer  # asyncio holds datagrams back: queue behind them
        or transport._address is not None  # a connected socket: asyncio's own path
        or transport.is_closing()
    ):
        for data in datagrams:
            sendto(data, address)
        return
    sock: socket.socket = transport._sock
    for start, end in runs(datagrams):
        if end - start == 1:
            sendto(datagrams[start], address)
            continue
        run = datagrams[start:end]
        size = len(run[0]).to_bytes(2, sys.byteorder)  # a C ``uint16_t``
        try:
            sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, size)], 0, address)
        except (BlockingIOError, InterruptedError):
            for data in datagrams[start:]:  # asyncio buffers them and waits for the socket
                sendto(data, address)
            return
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                for data in run:  # asyncio's sendto reports the error to the protocol
                    sendto(data, address)
                continue
            _State.enabled = False
            logger.info(
                "UDP segmentation offload refused (%s): datagrams are sent one by one",
                errno.errorcode.get(exc.errno or 0, exc.errno),
            )
            for data in datagrams[start:]:  # the frame's later runs too: one refusal, one line
                sendto(data, address)
            return
        _State.segmented_sends += 1


def runs(datagrams: list[bytes]) -> Iterator[tuple[int, int]]:
    """``[start, end)`` index ranges of ``datagrams`` that one segmented send can carry: equal
    sizes, then at most one shorter datagram, within ``MAX_SEGMENTS`` and ``MAX_BYTES``."""
    start, count = 0, len(datagrams)
    while start < count:
        size = len(datagrams[start])
        end, total = start + 1, size
        while end < count and end - start < MAX_SEGMENTS and total + size <= MAX_BYTES:
            length = len(datagrams[end])
            if length > size:
                break
            end += 1
            total += length
            if length < size:
                break
        yield start, end
        start = end
