"""Offers and trickle bodies that once answered 500 with a traceback (the audit's SDP classes and
their families): each must end in a readable 4xx and log no error."""

from __future__ import annotations

import logging
import re

import pytest
from aiohttp.test_utils import TestClient

from signaling.db.store import Consultation
from tests.conftest import MakeToken, bearer, error_of
from tests.signaling.test_whip import offer, post

FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


def no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def _mangled(sdp: str, kind: str) -> str:
    if kind == "mid-outside-bundle":
        return sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1")
    if kind == "video-mid-renamed":
        return sdp.replace("a=mid:0", "a=mid:zz", 1)
    if kind == "duplicate-mid":
        return sdp.replace("a=mid:1", "a=mid:0")
    if kind == "two-mids-in-one-section":
        return sdp.replace("a=mid:0", "a=mid:0\r\na=mid:1", 1)
    if kind == "bundle-names-unknown-mid":
        return sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7")
    if kind == "no-bundle":
        return sdp.replace("a=group:BUNDLE 0 1\r\n", "")
    if kind == "empty-mid":
        return sdp.replace("a=mid:0", "a=mid:", 1)
    if kind == "two-video-tracks":
        video = sdp[sdp.index("m=video") : sdp.index("m=audio")]
        return sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2") + video.replace(
            "a=mid:0", "a=mid:2"
        )
    if kind == "msid-without-stream":
        return re.sub(r"^a=msid:\S+ ", "a=msid: ", sdp, count=1, flags=re.M)
    raise AssertionError(kind)


MANGLED = [
    "mid-outside-bundle",
    "video-mid-renamed",
    "duplicate-mid",
    "two-mids-in-one-section",
    "bundle-names-unknown-mid",
    "no-bundle",
    "empty-mid",
    "msid-without-stream",
    "two-video-tracks",
]


@pytest.mark.parametrize("kind", MANGLED)
@pytest.mark.parametrize("endpoint", ["whip", "whep"])
async def test_offers_with_broken_mids_or_bundle_are_400_without_a_traceback(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    endpoint: str,
) -> None:
    cid = consultation.id
    direction = "sendonly" if endpoint == "whip" else "recvonly"
    role = "clinic" if endpoint == "whip" else "surgeon"
    body = _mangled(await offer(direction=direction), kind)
    response = await post(client, f"/{endpoint}/{cid}", make_token(role, cid), body)
    assert response.status < 500, await response.text()
    if kind == "two-video-tracks":  # RFC 9725 §4.4.2: 422 or 400
        assert response.status == 422
    if response.status != 201:  # e.g. no BUNDLE at all is legal SDP
        await error_of(response, response.status)
    no_error_logged(caplog)


BAD_CANDIDATES = [
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1\r\n",
    "a=mid:0\r\na=candidate:garbage\r\n",
    "a=mid:0\r\na=candidate:1 1 udp x 127.0.0.1 50000 typ host\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 port typ host\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 type host\r\n",
    "a=mid:0\r\na=candidate:1 one udp 2130706431 127.0.0.1 50000 typ host\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host generation\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 99999999 typ host\r\n",
    "a=mid:9\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n",
    "a=candidate:1 1 udp 2130706431 not-an-address 50000 typ host\r\n",
    "a=mid:0\r\na=candidate:1 \u00b2 udp 2130706431 127.0.0.1 50000 typ host\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 \u0665 typ host\r\n",
    "a=mid:0\r\na=candidate:1 1 udp 2130706431 victim.example.com 50000 typ host\r\n",
]


@pytest.mark.parametrize("body", BAD_CANDIDATES)
async def test_malformed_trickled_candidates_are_4xx_without_a_traceback(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
    body: str,
) -> None:
    token = make_token("surgeon", consultation.id)
    answer = await post(
        client, f"/whep/{consultation.id}", token, await offer(direction="recvonly")
    )
    assert answer.status == 201
    response = await client.patch(
        answer.headers["Location"],
        data=body,
        headers={**FRAG, **bearer(token), "If-Match": answer.headers["ETag"]},
    )
    assert response.status < 500, await response.text()
    if response.status != 204:
        await error_of(response, response.status)
    no_error_logged(caplog)


async def test_candidates_are_bounded_per_patch_and_per_session(
    client: TestClient,
    consultation: Consultation,
    make_token: MakeToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_token("surgeon", consultation.id)
    answer = await post(
        client, f"/whep/{consultation.id}", token, await offer(direction="recvonly")
    )
    assert answer.status == 201
    headers = {**FRAG, **bearer(token), "If-Match": answer.headers["ETag"]}

    def frag(count: int, first_port: int) -> str:
        lines = (
            f"a=candidate:{i} 1 udp 2130706431 192.0.2.1 {first_port + i} typ host\r\n"
            for i in range(count)
        )
        return "a=mid:0\r\n" + "".join(lines)

    response = await client.patch(answer.headers["Location"], data=frag(17, 40000), headers=headers)
    assert "per PATCH" in (await response.json())["reason"] and response.status == 400
    for batch in range(4):
        response = await client.patch(
            answer.headers["Location"], data=frag(16, 41000 + 16 * batch), headers=headers
        )
        assert response.status == 204, await response.text()
    response = await client.patch(answer.headers["Location"], data=frag(1, 42000), headers=headers)
    assert "per session" in (await response.json())["reason"] and response.status == 400
    no_error_logged(caplog)
