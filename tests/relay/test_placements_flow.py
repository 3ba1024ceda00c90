"""Anchored marks end to end through the real server: an aiortc clinic publishes the synthetic
endoscopy sequence (``client.endoscopy``, each frame's index stamped in it) over WHIP, the surgeon
draws an anchored mark over the WebSocket; every member's connection gets ``placements`` at
15–30 Hz (nobody else's), they are logged, a client cannot send them, and the mark's removal ends
them with one empty message. A viewer of the annotated rendition decodes the burned-in mark and
finds it where the tissue under it truly is (the sequence's ground truth)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import av
import numpy as np
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from client.endoscopy import SyntheticEndoscopy
from client.testpattern import read_stamp
from recorder.annotation_log import read_annotation_log
from recorder.log_entry import LogOp
from relay import Router
from signaling.db.store import Consultation
from signaling.keys import RELAY, SETTINGS, STORE
from tests.conftest import MakeToken
from tests.peers import EndoscopyTrack, publisher, viewer, wait_until
from tests.relay.test_consent import router_of
from tests.relay.test_forwarding_flow import url
from tests.signaling.test_websocket import join, next_of

WIDTH, HEIGHT = 640, 360
MARK_KEYS = {"author", "id", "m", "confidence", "lost"}


def anchored_circle(centre: tuple[float, float], radius: float = 0.05) -> dict[str, Any]:
    (x, y), ry = centre, radius * WIDTH / HEIGHT
    points = [[x - radius, y - ry], [x + radius, y + ry]]
    return {"id": "c1", "tool": "circle", "color": "#00ff00", "width": 0.012, "points": points}


async def placements_within(ws: ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every ``placements`` message for ``seconds`` (other messages skipped). One deadline for
    all: ``receive(timeout=)`` restarts its timeout after each ping it answers."""
    found = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        assert msg.type is WSMsgType.TEXT
        message = json.loads(msg.data)
        if message["type"] == "placements":
            found.append({**message, "at": time.monotonic()})
    return found


async def endoscope_router(client: TestClient, cid: str) -> Router:
    relay = client.app[RELAY]
    assert await wait_until(
        lambda: (r := relay.find(cid)) is not None and r.media_pts() is not None, timeout=10
    )
    return router_of(client, cid)


async def test_placements_reach_every_member_at_15_hz_are_logged_and_end_with_the_mark(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    other = await client.app[STORE].create(title="Elsewhere", video_codec="VP8")
    surgeon, welcome = await join(client, cid, make_token("surgeon", cid))
    surgeon_id = welcome["you"]["identity"]
    clinic, _ = await join(client, cid, make_token("clinic", cid))
    observer, _ = await join(client, cid, make_token("observer", cid))
    outsider, _ = await join(client, other.id, make_token("surgeon", other.id))
    sequence = SyntheticEndoscopy(WIDTH, HEIGHT, seconds=12.0)
    async with publisher(
        url(client, f"/whip/{cid}"),
        make_token("clinic", cid),
        audio=False,
        video_track=EndoscopyTrack(sequence),
    ):
        router = await endoscope_router(client, cid)
        mark = {**anchored_circle((0.5, 0.5)), "anchored": True}
        await surgeon.send_json(
            {"type": "annotation", "op": "add", "annotation": mark, "frame_pts": router.media_pts()}
        )
        added = await next_of(clinic, "annotation")
        assert added["annotation"]["anchored"] is True
        first = await next_of(clinic, "placements", timeout=5)
        # Every member gets them; a member of another consultation does not (all read at once:
        # a socket left unread misses the server's pings).
        received, to_surgeon, to_observer, to_outsider = await asyncio.gather(
            *(placements_within(ws, 3.0) for ws in (clinic, surgeon, observer, outsider))
        )
        assert len(to_surgeon) >= len(received) - 3 and len(to_observer) >= len(received) - 3
        assert to_outsider == []
        # per second of video: a loaded box may publish slower than real time
        media_s = (received[-1]["pts"] - received[0]["pts"]) / 90_000
        rate = (len(received) - 1) / media_s
        assert 14.5 <= rate <= 31, f"{rate:.1f} placements per second of video"
        for message in [first, *received]:
            assert set(message) - {"at"} == {"type", "v", "pts", "capture_ms", "marks"}
            assert isinstance(message["pts"], int)
            assert message["capture_ms"] is None or isinstance(message["capture_ms"], float)
            [placed] = message["marks"]
            assert set(placed) == MARK_KEYS and (placed["author"], placed["id"]) == (
                surgeon_id,
                "c1",
            )
            assert len(placed["m"]) == 6 and all(isinstance(v, float | int) for v in placed["m"])
            assert 0 <= placed["confidence"] <= 1 and isinstance(placed["lost"], bool)
        pts = [m["pts"] for m in received]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
        # A client cannot send them: refused, and its connection stays.
        await clinic.send_json({"type": "placements", "pts": 0, "capture_ms": None, "marks": []})
        refusal = await next_of(clinic, "error")
        assert refusal["code"] == "forbidden"
        assert refusal["reason"] == "placements messages are sent by the server only"
        assert await next_of(clinic, "placements")
        # The last anchored mark goes: one empty message, then none.
        await surgeon.send_json({"type": "annotation", "op": "remove", "id": "c1"})
        while (message := await next_of(clinic, "placements"))["marks"]:
            pass
        assert message["pts"] >= pts[-1]
        assert await placements_within(clinic, 0.5) == []
        # tracking stops (the picture and privacy guards may keep the decoder running)
        assert await wait_until(lambda: not router.anchoring.active, timeout=2)
    log = client.app[SETTINGS].data_dir / "consultations" / cid / "annotations.jsonl"
    assert await wait_until(
        lambda: len([e for e in read_annotation_log(log) if e.kind is LogOp.PLACEMENTS]) > 25,
        timeout=3,
    )
    entries = [e for e in read_annotation_log(log) if e.kind is LogOp.PLACEMENTS]
    logged = [e.media_pts for e in entries if e.media_pts is not None]
    assert logged == sorted(logged) and len(logged) == len(entries), "at their frames' pts"
    assert set(pts) & set(logged), "entries are messages as sent"
    seconds = (logged[-1] - logged[0]) / 90_000
    assert len(logged) <= 20 * seconds + 4, "at most ~15 a second (and at each change)"
    assert [p["id"] for p in entries[0].payload["marks"]] == ["c1"]
    assert entries[-1].payload["marks"] == [], "the mark's going is logged"
    for ws in (surgeon, clinic, observer, outsider):
        await ws.close()


def green_centre(frame: av.VideoFrame) -> tuple[float, float] | None:
    """The centre of the burned-in green circle (pixels), None when no green is drawn (the mark
    lost its place: grey)."""
    bgr = frame.to_ndarray(format="bgr24").astype(np.int16)
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    ys, xs = np.nonzero((g > 150) & (r < 110) & (b < 130))
    if len(xs) < 40:
        return None
    return float(xs.mean()), float(ys.mean())


async def test_the_burned_in_anchored_mark_follows_the_tissue(
    client: TestClient, consultation: Consultation, make_token: MakeToken
) -> None:
    cid = consultation.id
    surgeon, _ = await join(client, cid, make_token("surgeon", cid))
    sequence = SyntheticEndoscopy(WIDTH, HEIGHT, seconds=12.0)
    seen: list[tuple[int, tuple[float, float] | None]] = []
    async with (
        publisher(
            url(client, f"/whip/{cid}"),
            make_token("clinic", cid),
            audio=False,
            video_track=EndoscopyTrack(sequence),
        ),
        viewer(
            url(client, f"/whep/{cid}?annotated=1&quality=original"),
            make_token("observer", cid),
            ("video",),
        ) as (_, _, annotated),
    ):
        router = await endoscope_router(client, cid)
        # Which sequence frame each relay pts is (the stamp), seen by a sampler of our own.
        frames: dict[int, int] = {}
        probe = router.decoded.sample(0, lambda f, pts: frames.update({pts: read_stamp(f)[0]}), "t")
        assert await wait_until(lambda: len(frames) >= 10, timeout=10)
        annotated.on_video.append(lambda f: seen.append((read_stamp(f)[0], green_centre(f))))
        # The tissue point frame 0 shows at the picture's centre, as the surgeon saw it.
        frame_pts = max(frames)
        drawn_on = frames[frame_pts]
        origin = (WIDTH / 2, HEIGHT / 2)
        here = sequence.true_point(drawn_on, *origin)
        assert here is not None
        mark = {**anchored_circle((here[0] / WIDTH, here[1] / HEIGHT)), "anchored": True}
        await surgeon.send_json(
            {"type": "annotation", "op": "add", "annotation": mark, "frame_pts": frame_pts}
        )
        await asyncio.sleep(4.0)
        probe.stop()
    errors, moved = [], []
    for index, centre in seen:
        truth = sequence.true_point(index, *origin)
        if centre is None or truth is None or index < drawn_on + 5:
            continue
        errors.append(float(np.hypot(centre[0] - truth[0], centre[1] - truth[1])))
        moved.append(float(np.hypot(truth[0] - here[0], truth[1] - here[1])))
    assert len(errors) >= 20, "the mark was burned in (green while its place was known)"
    assert max(moved) > 25, "the tissue moved"
    assert float(np.median(errors)) < 0.02 * WIDTH, (np.median(errors), max(errors))
    assert max(errors) < 0.04 * WIDTH, (np.median(errors), max(errors))
    await surgeon.close()
