"""RFC 9725 §4.3 (ICE: PATCH, Trickle ICE, ICE restarts) to the letter, one test per MUST and
SHOULD that binds a server; ``[whep]`` where draft-ietf-wish-whep says the same. Real aiortc
peers that trickle their candidates to the real app on 127.0.0.1 and connect; nothing logged
at ERROR or with a traceback (test_rfc9725.py's ``quiet_log``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection, RTCSessionDescription

from client.testpattern import TestPatternTrack
from relay import Peer
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken, bearer, error_of
from tests.peers import ToneTrack, new_pc, wait_until
from tests.signaling.test_rfc9725 import kind, open_session, quiet_log

__all__ = ["kind", "quiet_log"]  # the fixtures, shared with test_rfc9725.py

FRAG = "application/trickle-ice-sdpfrag"
CONNECT_S = 15.0


@dataclass
class Trickling:
    """A real peer whose offer went out without candidates; they are PATCHed afterwards."""

    pc: RTCPeerConnection
    token: str
    location: str
    etag: str
    candidates: list[str]
    "The offer's own ``a=candidate:`` lines, held back from the POST."
    ufrag: str
    pwd: str
    mid: str

    def fragment(self, *candidates: str, ufrag: str = "", pwd: str = "") -> str:
        """An RFC 8840 fragment in RFC 9725 §4.3.2's shape (only the first bundled section)."""
        lines = [
            f"a=ice-ufrag:{ufrag or self.ufrag}",
            f"a=ice-pwd:{pwd or self.pwd}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            f"a=mid:{self.mid}",
            *(f"a=candidate:{c}" for c in candidates),
        ]
        return "\r\n".join(lines) + "\r\n"


@pytest.fixture
async def trickling(
    client: TestClient, consultation: Consultation, make_token: MakeToken, kind: str
) -> AsyncIterator[Trickling]:
    pc = new_pc()
    if kind == "whip":
        pc.addTransceiver(TestPatternTrack(), direction="sendonly")
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    else:
        for media in ("video", "audio"):
            pc.addTransceiver(media, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    full = pc.localDescription.sdp
    held = re.findall(r"^a=candidate:(.+?)\r$", full, re.M)
    first = full.split("\r\nm=")[1]
    offer = re.sub(r"^a=(candidate:.*|end-of-candidates)\r\n", "", full, flags=re.M)
    session = await open_session(client, kind, consultation.id, make_token, offer)
    assert session.response.headers["ETag"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=session.answer, type="answer"))

    def attribute(name: str) -> str:
        found = re.search(rf"^a={name}:(\S+)", first, re.M)
        assert found is not None
        return found.group(1)

    yield Trickling(
        pc,
        session.token,
        session.location,
        session.response.headers["ETag"],
        sorted(set(held), key=held.index),
        attribute("ice-ufrag"),
        attribute("ice-pwd"),
        attribute("mid"),
    )
    await pc.close()


def server_peer(client: TestClient, session: Trickling) -> Peer:
    cid, sid = session.location.split("/")[2], session.location.rpartition("/")[2]
    found = client.app[RELAY].find(cid)
    peer = found.peer(sid) if found else None
    assert peer is not None
    return peer


def remote_addresses(peer: Peer) -> set[tuple[str, int]]:
    transport = peer.pc.getTransceivers()[0].receiver.transport.transport
    return {(c.ip, c.port) for c in transport.getRemoteCandidates()}


async def patch(
    client: TestClient, session: Trickling, body: str, if_match: str | None = "etag", **headers: str
):  # type: ignore[no-untyped-def]
    sent = {"Content-Type": FRAG, **bearer(session.token), **headers}
    if if_match is not None:
        sent["If-Match"] = session.etag if if_match == "etag" else if_match
    return await client.patch(session.location, data=body, headers=sent)


# -- 4.2 and 4.3.1 HTTP PATCH request usage --------------------------------------------------


async def test_4_2_delete_revokes_consent_at_once(client: TestClient, trickling: Trickling) -> None:
    """RFC 7675 §5.2: the relay closes ICE and DTLS (close_notify) rather than letting the
    client find out from 30 s of unanswered consent checks."""
    assert (await patch(client, trickling, trickling.fragment(*trickling.candidates))).ok
    assert await wait_until(lambda: trickling.pc.connectionState == "connected", CONNECT_S)
    assert (await client.delete(trickling.location, headers=bearer(trickling.token))).ok
    assert await wait_until(lambda: trickling.pc.connectionState != "connected", 5.0)


async def test_4_3_1_patch_with_another_content_type_is_4xx(
    client: TestClient, trickling: Trickling
) -> None:
    body = trickling.fragment(*trickling.candidates)
    for content_type in ("application/sdp", "text/plain"):
        response = await patch(client, trickling, body, **{"Content-Type": content_type})
        await error_of(response, 415)


@pytest.mark.parametrize(
    "body",
    [
        "hello",
        "a=candidate:garbage\r\n",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 port typ host\r\n",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 99999 typ host\r\n",
        "a=candidate:1 1 udp 2122260223 not_an%address 5000 typ host\r\n",
        "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host raddr\r\n",
        "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host rport x\r\n",
        "a=mid:0\r\n  indented=line\r\n",
        "\x00\x01\x02",
    ],
    ids=[
        "text",
        "short",
        "port-word",
        "port-range",
        "address",
        "odd-ext",
        "rport",
        "indent",
        "nul",
    ],
)
async def test_4_3_1_malformed_fragment_is_400(
    client: TestClient, trickling: Trickling, body: str
) -> None:
    await error_of(await patch(client, trickling, body), 400)


async def test_4_3_1_ice_restart_is_422_as_only_trickle_is_supported(
    client: TestClient, trickling: Trickling
) -> None:
    restart = trickling.fragment(ufrag="newUfrag", pwd="aNewPasswordOf24Chars000")
    response = await patch(client, trickling, restart, if_match="*")
    assert await error_of(response, 422) == "ice-restart-unsupported"
    only_pwd = trickling.fragment(pwd="aNewPasswordOf24Chars000")
    await error_of(await patch(client, trickling, only_pwd, if_match="*"), 422)


async def test_4_3_1_the_201_carries_a_strong_etag(trickling: Trickling) -> None:
    assert re.fullmatch(r'"[!#-~]+"', trickling.etag)  # strong: no W/ prefix


async def test_4_3_1_patch_without_if_match_is_428(
    client: TestClient, trickling: Trickling
) -> None:
    body = trickling.fragment(*trickling.candidates)
    await error_of(await patch(client, trickling, body, if_match=None), 428)


async def test_4_3_1_patch_with_another_etag_is_412(
    client: TestClient, trickling: Trickling
) -> None:
    body = trickling.fragment(*trickling.candidates)
    for stale in ('"0123456789abcdef"', "W/" + trickling.etag, trickling.etag.strip('"')):
        await error_of(await patch(client, trickling, body, if_match=stale), 412)


async def test_4_3_1_delete_ignores_if_match(client: TestClient, trickling: Trickling) -> None:
    headers = {**bearer(trickling.token), "If-Match": '"not-the-session-etag"'}
    assert (await client.delete(trickling.location, headers=headers)).status == 200


# -- 4.3.2 Trickle ICE -----------------------------------------------------------------------


async def test_4_3_2_trickled_candidates_answer_204_without_body_or_etag_and_connect(
    client: TestClient, trickling: Trickling
) -> None:
    response = await patch(client, trickling, trickling.fragment(*trickling.candidates))
    assert response.status == 204 and await response.read() == b""
    assert "ETag" not in response.headers
    peer = server_peer(client, trickling)
    wanted = {(c.split()[4], int(c.split()[5])) for c in trickling.candidates}
    assert wanted <= remote_addresses(peer)
    assert await wait_until(lambda: trickling.pc.connectionState == "connected", CONNECT_S)


async def test_4_3_2_if_match_star_trickles_too(client: TestClient, trickling: Trickling) -> None:
    body = trickling.fragment(*trickling.candidates) + "a=end-of-candidates\r\n"
    assert (await patch(client, trickling, body, if_match="*")).status == 204


async def test_4_3_2_unusable_candidates_are_discarded_and_the_rest_processed(
    client: TestClient, trickling: Trickling
) -> None:
    unusable = [
        "7 1 sctp 2122260223 127.0.0.1 5001 typ host",  # a transport the relay has not
        "8 1 udp 2122260223 turn.example.org 5002 typ host",  # a name it will not resolve
        "9 1 udp 2122260223 127.0.0.1 5003 typ future",  # a type it does not know
    ]
    body = trickling.fragment(unusable[0], *trickling.candidates, *unusable[1:])
    response = await patch(client, trickling, body)
    assert response.status == 204, await response.text()
    addresses = remote_addresses(server_peer(client, trickling))
    assert {(c.split()[4], int(c.split()[5])) for c in trickling.candidates} <= addresses
    assert not {port for _, port in addresses} & {5001, 5002, 5003}
    assert await wait_until(lambda: trickling.pc.connectionState == "connected", CONNECT_S)


async def test_4_3_2_answer_carries_every_server_candidate(trickling: Trickling) -> None:
    """No server trickle: the relay gathers before it answers (SHALL)."""
    remote = trickling.pc.remoteDescription.sdp
    assert "a=candidate:" in remote and "a=end-of-candidates" in remote


# -- 4.3.3 ICE restarts ----------------------------------------------------------------------


async def test_4_3_3_a_refused_ice_restart_keeps_the_session_and_its_ice(
    client: TestClient, trickling: Trickling
) -> None:
    assert (await patch(client, trickling, trickling.fragment(*trickling.candidates))).ok
    assert await wait_until(lambda: trickling.pc.connectionState == "connected", CONNECT_S)
    restart = trickling.fragment(ufrag="newUfrag", pwd="aNewPasswordOf24Chars000")
    await error_of(await patch(client, trickling, restart, if_match="*"), 422)
    assert (await client.get(trickling.location, headers=bearer(trickling.token))).status == 204
    assert server_peer(client, trickling).state == "connected"
    assert trickling.pc.connectionState == "connected"


# -- 5 Security considerations ---------------------------------------------------------------


async def test_5_patch_flooding_is_bounded_per_session(
    client: TestClient, trickling: Trickling
) -> None:
    """Every candidate is a connectivity check the relay sends: at most 16 a PATCH, 64 a
    session; past that a PATCH is refused without work."""
    fake = [f"{n} 1 udp 1 127.0.0.1 {40000 + n} typ host" for n in range(80)]
    await error_of(await patch(client, trickling, trickling.fragment(*fake[:17])), 400)
    for start in range(0, 64, 16):
        body = trickling.fragment(*fake[start : start + 16])
        assert (await patch(client, trickling, body)).status == 204
    response = await patch(client, trickling, trickling.fragment(fake[64]))
    assert "at most 64" in (await response.json())["reason"]
    await error_of(response, 400)
