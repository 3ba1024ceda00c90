"""End to end through the real server: an aiortc clinic publishes the stamped test pattern, a
surgeon draws a stroke over the WebSocket, the clinic's WebSocket receives it, and an aiortc
viewer of the annotated rendition (``/whep/{cid}?annotated=1``) finds the stroke's colour at the
stroke's coordinates in the decoded frames — never before the stroke was sent — while the raw
viewer's frames stay untouched."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import av
from aiohttp.test_utils import TestClient

from relay.overlay import yuv
from relay.rendition import plane_array
from signaling.db.store import Consultation
from signaling.keys import RELAY
from tests.conftest import MakeToken, bearer
from tests.peers import publisher, viewer, wait_until
from tests.relay.test_forwarding_flow import url
from tests.signaling.test_websocket import next_of

GREEN = "#00ff00"
STROKE = {
    "id": "turbinate",
    "tool": "pen",
    "color": GREEN,
    "width": 0.02,
    "points": [[0.3, 0.6], [0.5, 0.6], [0.7, 0.6]],
}
PROBES = ((0.4, 0.6), (0.5, 0.6), (0.6, 0.6))


def green_at(frame: av.VideoFrame, x: float, y: float) -> bool:
    """The stroke's colour at a normalised point, read straight from the YUV planes."""
    luma, u, v = (plane_array(p) for p in frame.planes)
    row, col = int(y * frame.height), int(x * frame.width)
    found = (int(luma[row, col]), int(u[row // 2, col // 2]), int(v[row // 2, col // 2]))
    return all(abs(a - b) < 30 for a, b in zip(found, yuv(GREEN), strict=True))


@dataclass
class Looks:
    """When each frame arrived and whether it showed the stroke."""

    frames: list[tuple[float, bool]] = field(default_factory=list)

    def __call__(self, frame: av.VideoFrame) -> None:
        self.frames.append((time.monotonic(), all(green_at(frame, x, y) for x, y in PROBES)))

    def marked_since(self, t: float) -> bool:
        return any(marked for at, marked in self.frames if at >= t)


def burn_in_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("rendition "))


async def test_a_surgeons_stroke_reaches_the_clinic_and_is_burned_into_the_annotated_rendition(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    clinic_ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("clinic", cid)))
    surgeon_ws = await client.ws_connect(f"/ws/{cid}", headers=bearer(make_token("surgeon", cid)))
    await next_of(clinic_ws, "welcome")
    await next_of(surgeon_ws, "welcome")
    annotated_looks, raw_looks = Looks(), Looks()
    async with (
        publisher(url(client, f"/whip/{cid}"), make_token("clinic", cid)),
        viewer(url(client, f"/whep/{cid}"), make_token("surgeon", cid), ("video",)) as (
            _,
            _,
            raw,
        ),
        viewer(
            url(client, f"/whep/{cid}?annotated=1"), make_token("observer", cid), ("video",)
        ) as (_, _, annotated),
    ):
        raw.on_video.append(raw_looks)
        annotated.on_video.append(annotated_looks)
        assert await wait_until(lambda: len(annotated_looks.frames) >= 15, timeout=10)
        assert annotated.sizes == {(1280, 720)}

        sent_at = time.monotonic()
        await surgeon_ws.send_json({"type": "annotation", "op": "add", "annotation": STROKE})
        received = await next_of(clinic_ws, "annotation")
        assert received["op"] == "add" and received["annotation"]["points"] == STROKE["points"]
        assert received["annotation"]["media_pts"] is not None  # the frame it was drawn on

        assert await wait_until(lambda: annotated_looks.marked_since(sent_at), timeout=5)
        shown_at = next(at for at, marked in annotated_looks.frames if marked)
        assert not any(marked for at, marked in annotated_looks.frames if at < sent_at)
        assert shown_at - sent_at < 1.0
        counters = annotated.counters
        assert counters == sorted(counters), "the rendition keeps the live picture in order"

        before = len(raw_looks.frames)
        assert await wait_until(lambda: len(raw_looks.frames) > before + 15, timeout=5)
        assert len(raw_looks.frames) > 30
        assert not any(marked for _, marked in raw_looks.frames)  # the raw stream is untouched
        assert burn_in_threads() == 1

    router = client.app[RELAY].find(cid)
    assert router is not None
    assert await wait_until(lambda: burn_in_threads() == 0, timeout=5)  # stopped with its viewer
    assert len(router.board.visible(time.time())) == 1  # the mark stays for the next viewer
    await clinic_ws.close()
    await surgeon_ws.close()


async def test_annotated_is_only_for_the_endoscope_feed(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    for query, code in (
        ("?feed=talkback&annotated=1", "bad-feed"),
        ("?annotated=yes", "bad-request"),
    ):
        response = await client.post(
            f"/whep/{cid}{query}",
            data="v=0\r\n",
            headers={**bearer(make_token("surgeon", cid)), "Content-Type": "application/sdp"},
        )
        assert response.status == 400 and (await response.json())["error"] == code
