"""relay.segmented: a frame's datagrams in one segmented ``sendmsg``, arriving as the same
datagrams, in order; and asyncio's own path wherever the kernel or the socket says no."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from relay import segmented
from relay.segmented import MAX_BYTES, MAX_SEGMENTS, runs, segmented_sends, send_datagrams


def sizes(*lengths: int) -> list[bytes]:
    return [bytes(n) for n in lengths]


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ((1200,) * 5 + (300,), [(0, 6)]),  # VP8: full packets and the rest
        ((1201, 1201, 1200, 1200, 1200), [(0, 3), (3, 5)]),  # H.264 FU-A: one byte more first
        ((300, 1200, 1200), [(0, 1), (1, 3)]),  # a shorter datagram ends a run
        ((1200, 300, 300), [(0, 2), (2, 3)]),
        ((900,), [(0, 1)]),
        ((), []),
    ],
)
def test_runs_are_equal_sizes_then_at_most_one_shorter(
    lengths: tuple[int, ...], expected: list[tuple[int, int]]
) -> None:
    assert list(runs(sizes(*lengths))) == expected


def test_runs_stay_within_the_kernels_limits() -> None:
    many = list(runs(sizes(*(200,) * (MAX_SEGMENTS + 6))))
    assert many == [(0, MAX_SEGMENTS), (MAX_SEGMENTS, MAX_SEGMENTS + 6)]
    big = sizes(*(1200,) * 60)
    for start, end in runs(big):
        assert sum(map(len, big[start:end])) <= MAX_BYTES
    assert [end for _, end in runs(big)][-1] == 60


def test_this_kernel_segments() -> None:
    """Debian 12's 6.1, and anything from Linux 4.18 on; the other tests rely on it."""
    assert segmented.kernel_segments()


class Receiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.address = self.sock.getsockname()

    def receive(self, count: int) -> list[bytes]:
        return [self.sock.recv(65536) for _ in range(count)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    r.sock.close()


async def udp_transport(sock: socket.socket) -> asyncio.DatagramTransport:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, sock=sock
    )
    return transport


class Refusing(socket.socket):
    """A UDP socket whose segmented sends fail as ``fail`` says."""

    fail: Callable[[], BaseException]

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        raise self.fail()


def frame() -> list[bytes]:
    return [os.urandom(1200) for _ in range(5)] + [os.urandom(333)]


async def test_a_frame_leaves_in_one_segmented_send_and_arrives_as_its_datagrams(
    receiver: Receiver,
) -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    transport = await udp_transport(sender)
    try:
        first, second = frame(), [os.urandom(1201)] * 2 + [os.urandom(1200)] * 3
        before = segmented_sends()
        send_datagrams(transport, first, receiver.address)
        send_datagrams(transport, second, receiver.address)
        assert segmented_sends() - before == 3  # one run, then two
        assert receiver.receive(11) == first + second
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("fail", "still_enabled"),
    [
        (lambda: OSError(errno.EIO, "no checksum offload"), False),
        (lambda: BlockingIOError(errno.EAGAIN, "full"), True),
        (lambda: OSError(errno.ENETUNREACH, "no route"), True),
    ],
    ids=["refused", "would-block", "other-error"],
)
async def test_when_the_segmented_send_fails_asyncio_sends_the_datagrams(
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fail: Callable[[], BaseException],
    still_enabled: bool,
) -> None:
    monkeypatch.setattr(segmented._State, "enabled", True)
    sender = Refusing(socket.AF_INET, socket.SOCK_DGRAM)
    sender.fail = fail
    sender.bind(("127.0.0.1", 0))
    transport = await udp_transport(sender)
    try:
        datagrams = frame() + [os.urandom(1201)] * 2  # two runs: the refusal is met once
        before = segmented_sends()
        with caplog.at_level(logging.INFO, logger="relay.segmented"):
            send_datagrams(transport, datagrams, receiver.address)
            send_datagrams(transport, datagrams, receiver.address)
        assert segmented_sends() == before
        assert segmented._State.enabled is still_enabled
        refused = [r for r in caplog.records if "segmentation offload refused" in r.message]
        assert len(refused) == (0 if still_enabled else 1)
        assert receiver.receive(16) == datagrams * 2
    finally:
        transport.close()
