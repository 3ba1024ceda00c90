"""Peer helpers that do not need a connection."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration

from relay.peer import Peer, PeerRole, rewrite_host_candidates


def test_announced_address_replaces_host_candidates_and_connection_line() -> None:
    sdp = (
        "c=IN IP4 10.0.0.5\r\n"
        "a=candidate:1 1 udp 2130706431 10.0.0.5 50123 typ host\r\n"
        "a=candidate:2 1 udp 1694498815 198.51.100.7 50123 typ srflx raddr 10.0.0.5 rport 5\r\n"
    )
    rewritten = rewrite_host_candidates(sdp, "203.0.113.9")
    assert "a=candidate:1 1 udp 2130706431 203.0.113.9 50123 typ host" in rewritten
    assert "198.51.100.7 50123 typ srflx" in rewritten
    assert "c=IN IP4 203.0.113.9" in rewritten


async def test_a_failing_close_callback_does_not_skip_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = Peer(PeerRole.VIEWER, "endoscope", "surgeon-1", RTCConfiguration(), "consultation:x")
    told: list[str] = []

    def failing(_: Peer) -> None:
        raise RuntimeError("the audit trail is closed")

    peer.on_closed(failing)
    peer.on_closed(lambda closed: told.append(closed.id))
    await peer.close()
    assert told == [peer.id]
    assert "close callback failed: RuntimeError" in caplog.text
