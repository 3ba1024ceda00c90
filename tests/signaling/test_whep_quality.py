"""``POST /whep/{cid}?quality=``: the viewer quality ladder's HTTP side — values, refusals with a
reason, the ``EndoLink-Quality`` answer header and the audit trail's detail. (What the renditions
deliver is tests/relay/test_ladder_flow.py.)"""

from __future__ import annotations

import sqlite3

import pytest
from aiohttp.test_utils import TestClient

from relay.ladder import Quality
from signaling.app import create_app
from signaling.db.store import DB_FILENAME, Consultation
from signaling.keys import RELAY, SETTINGS, STORE
from signaling.settings import Settings
from tests.conftest import MakeToken
from tests.signaling.test_whip import offer, post

REASON = "quality must be one of auto, original, 540p, 360p"


@pytest.mark.parametrize("value", ["720p", "", "AUTO", "360", "low", "540p,360p"])
async def test_an_unknown_quality_is_400_with_the_choices(
    client: TestClient, consultation: Consultation, make_token: MakeToken, value: str
) -> None:
    cid = consultation.id
    play = await offer(direction="recvonly")
    response = await post(client, f"/whep/{cid}?quality={value}", make_token("surgeon", cid), play)
    assert response.status == 400
    assert await response.json() == {"error": "bad-quality", "reason": REASON}


@pytest.mark.parametrize("query", ["?feed=talkback&quality=360p", "?feed=talkback&quality=540p"])
async def test_talkback_has_no_lower_renditions(
    client: TestClient, consultation: Consultation, make_token: MakeToken, query: str
) -> None:
    cid = consultation.id
    play = await offer(("audio",), direction="recvonly")
    response = await post(client, f"/whep/{cid}{query}", make_token("clinic", cid), play)
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "bad-quality" and "endoscope" in body["reason"]


@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("", "auto"),
        ("?quality=auto", "auto"),
        ("?quality=original", "original"),
        ("?quality=540p", "540p"),
        ("?quality=360p&annotated=1", "360p"),
        ("?feed=talkback&quality=original", "original"),
    ],
)
async def test_the_answer_says_the_quality_and_the_audit_records_it(
    client: TestClient, consultation: Consultation, make_token: MakeToken, query: str, header: str
) -> None:
    cid = consultation.id
    kinds = ("audio",) if "talkback" in query else ("video", "audio")
    play = await offer(kinds, direction="recvonly")
    response = await post(client, f"/whep/{cid}{query}", make_token("observer", cid), play)
    assert response.status == 201, await response.text()
    assert response.headers["EndoLink-Quality"] == header
    assert "EndoLink-Quality" in response.headers["Access-Control-Expose-Headers"]
    with sqlite3.connect(client.app[SETTINGS].data_dir / DB_FILENAME) as db:
        details = [row[0] for row in db.execute("SELECT detail FROM audit WHERE action = 'view'")]
    assert len(details) == 1 and f" quality {header} session " in details[0]


async def test_a_lower_rendition_in_transcode_mode_is_422(
    aiohttp_client, settings: Settings, make_token: MakeToken
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(relay_mode="transcode")))
    consultation = await client.app[STORE].create("t", "VP8", consent_by="Dr. A", recorded_by="t")
    cid = consultation.id
    play = await offer(direction="recvonly")
    response = await post(client, f"/whep/{cid}?quality=360p", make_token("surgeon", cid), play)
    assert response.status == 422
    assert "renditions" in (await response.json())["reason"]


def test_ladder_kbps_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).ladder_kbps == (700, 250)
    assert Settings.from_env({"ENDOLINK_LADDER_KBPS": "900,300"}).ladder_kbps == (900, 300)
    for bad in ("300,900", "0,0", "700", "a,b"):
        with pytest.raises(ValueError):
            Settings.from_env({"ENDOLINK_LADDER_KBPS": bad})


async def test_the_rungs_run_at_the_configured_rates(
    aiohttp_client, settings: Settings, make_token: MakeToken
) -> None:
    client = await aiohttp_client(create_app(settings.with_overrides(ladder_kbps=(900, 300))))
    consultation = await client.app[STORE].create("t", "VP8", consent_by="Dr. A", recorded_by="t")
    cid = consultation.id
    for quality in ("540p", "360p"):
        play = await offer(direction="recvonly")
        response = await post(
            client, f"/whep/{cid}?quality={quality}", make_token("surgeon", cid), play
        )
        assert response.status == 201
    router = client.app[RELAY].find(cid)
    assert router is not None
    rates = {q: r.rung.kbps for (_, q), r in router.ladder.renditions().items() if r.rung}
    assert rates == {Quality.P540: 900, Quality.P360: 300}
