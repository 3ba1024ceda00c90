"""Anchored marks on the relay's side, through the producer seam: the synthetic endoscopy sequence
(``client.endoscopy``) encoded like a clinic's and fed to the endoscope Producer; the shared
decoder and the real Tracker follow an anchored mark on it. Placements come at ≥ 15 Hz, follow
the tissue's ground truth, reach the board for the burn-in, and stop (one empty message) with the
last anchored mark — and nothing is decoded before or after."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import av
import numpy as np

from client.endoscopy import SyntheticEndoscopy
from relay.anchoring import Anchoring, Placements, Stride
from relay.annotations import Annotation, AnnotationBoard, Mark, Tool
from relay.decoded import DecodedFeed
from relay.ids import ConsultationId
from relay.overlay import ELLIPSE_SEGMENTS, LOST_COLOR, placed
from relay.producer import Producer
from relay.rendition import new_encoder
from relay.tracker import Placement
from tests.peers import endoscopy_picture, wait_until
from tests.relay.test_decoded import decode_threads

WIDTH, HEIGHT, FPS = 640, 360, 30
SURGEON = "surgeon-1"


class EndoscopyClinic:
    """Encodes the synthetic sequence in real time (30 fps) into a Producer, frames made in a
    thread; ``pts[index]`` is the relay pts each frame got."""

    def __init__(self, sequence: SyntheticEndoscopy) -> None:
        self.sequence = sequence
        self.producer = Producer("video", "VP8", "test")
        self.producer.attach(self._pli)
        self._keyframe = False
        self._encoder = new_encoder("VP8", WIDTH, HEIGHT)
        self.index = 0

    def _pli(self) -> bool:
        self._keyframe = True
        return True

    def _encoded(self, index: int) -> list[bytes]:
        frame = endoscopy_picture(self.sequence, index)
        frame.pts = index * 3000
        if self._keyframe:
            frame.pict_type = av.video.frame.PictureType.I
            self._keyframe = False
        return [bytes(packet) for packet in self._encoder.encode(frame)]

    async def send(self, seconds: float) -> None:
        """Frames in real time, made and encoded in a thread (the loop only hands them over)."""
        start = time.monotonic()
        for _ in range(round(seconds * FPS)):
            for data in await asyncio.to_thread(self._encoded, self.index):
                self.producer.on_frame(data, self.index * 3000)
            self.index += 1
            await asyncio.sleep(max(0.0, start + self.index / FPS - time.monotonic()))


def circle(centre: tuple[float, float], radius: float) -> Mark:
    (x, y), rx, ry = centre, radius, radius * WIDTH / HEIGHT
    points = [[x - rx, y - ry], [x + rx, y + ry]]
    return Mark.from_json(
        {"id": "c1", "tool": "circle", "color": "#00ff00", "width": 0.01, "points": points}
        | {"anchored": True}
    )


def moved(placement: Placement, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = placement.matrix
    return a * x + b * y + c, d * x + e * y + f


async def test_an_anchored_mark_follows_the_tissue_at_15_hz_and_stops_with_the_last_mark() -> None:
    sequence = SyntheticEndoscopy(WIDTH, HEIGHT, FPS, seconds=12.0)
    clinic, board = EndoscopyClinic(sequence), AnnotationBoard()
    feed = DecodedFeed(clinic.producer, "test")
    anchoring = Anchoring(board, feed, lambda pts: None, ConsultationId("c"), "test")
    sent: list[tuple[float, Placements]] = []
    anchoring.on_placements = lambda p: sent.append((time.monotonic(), p))
    try:
        await clinic.send(0.5)
        assert not feed.running and not decode_threads(), "nothing decoded without marks"
        # A plain mark starts nothing; an anchored one does.
        plain = Annotation.from_json(
            {"id": "p", "tool": "pen", "color": "#ffffff", "width": 0.01, "points": [[0.1, 0.1]]},
            SURGEON,
            time.time(),
            None,
        )
        board.add(plain)
        assert not anchoring.active
        # Drawn on frame 15 around the tissue point that frame 0 shows at the picture's centre.
        drawn_on = 15
        truth0 = (WIDTH * 0.5, HEIGHT * 0.5)
        here = sequence.true_point(drawn_on, *truth0)
        assert here is not None
        centre = (here[0] / WIDTH, here[1] / HEIGHT)
        now = time.time()
        board.add(Annotation(circle(centre, 0.05), SURGEON, now, now, None, "", drawn_on * 3000))
        assert anchoring.active
        await clinic.send(4.0)
        placements = [(at, p) for at, p in sent if p.marks]
        assert placements, "placements came"
        # per second of video (a loaded box may send slower than real time: that is the clinic's)
        media_s = (placements[-1][1].pts - placements[0][1].pts) / 90_000
        rate = (len(placements) - 1) / media_s
        assert 14.5 <= rate <= 16, f"{rate:.1f} Hz of a {FPS} fps source: every other frame"
        pts = [p.pts for _, p in placements]
        assert pts == sorted(pts)
        # Never confidently in the wrong place: every placement not ``lost`` puts the mark's
        # centre within 3 % of the width of where that bit of tissue truly is.
        drifts = []
        for _, p in placements:
            placement = p.marks[(SURGEON, "c1")]
            truth = sequence.true_point(p.pts // 3000, *truth0)
            if placement.lost or truth is None:
                continue
            x, y = moved(placement, *centre)
            error_px = np.hypot(x * WIDTH - truth[0], y * HEIGHT - truth[1])
            assert error_px < 0.03 * WIDTH, (p.pts // 3000, error_px)
            drifts.append(np.hypot(truth[0] - here[0], truth[1] - here[1]))
        assert len(drifts) >= 15 and max(drifts) > 20, "followed while the tissue moved"
        last = placements[-1][1]
        assert board.placed_at(last.pts)[(SURGEON, "c1")] is not None, "the burn-in sees it"
        assert feed.cpu_s > 0
        # The last anchored mark goes: one empty message, sampling stops.
        board.remove("c1", SURGEON)
        assert not anchoring.active
        count = len(sent)
        await clinic.send(0.3)
        assert len(sent) == count and not sent[-1][1].marks and sent[-1][1].pts == last.pts
        assert not feed.running
        assert await wait_until(lambda: not decode_threads(), timeout=2)
    finally:
        anchoring.close()
        await feed.close()
    assert not decode_threads()


def test_a_placed_mark_moves_through_its_matrix_and_greys_when_lost() -> None:
    now = time.time()
    box = Mark.from_json(
        {
            "id": "b",
            "tool": "rect",
            "color": "#00ff00",
            "width": 0.01,
            "points": [[0.2, 0.2], [0.4, 0.3]],
            "anchored": True,
        }
    )
    annotation = Annotation(box, SURGEON, now, now, None)
    shift = Placement((1.0, 0.0, 0.1, 0.0, 1.0, 0.2), 0.9, False)
    [moved_box] = placed([annotation], {annotation.key: shift})
    outline = [(0.3, 0.4), (0.5, 0.4), (0.5, 0.5), (0.3, 0.5), (0.3, 0.4)]
    assert np.allclose(moved_box.mark.points, outline), "a box becomes its moved outline"
    assert moved_box.mark.color == "#00ff00"
    [lost] = placed([annotation], {annotation.key: Placement(shift.matrix, 0.1, True)})
    assert lost.mark.color == LOST_COLOR and lost.mark.points == moved_box.mark.points
    turned = Placement((0.0, -1.0, 1.0, 1.0, 0.0, 0.0), 0.9, False)  # a quarter turn
    [ring] = placed(
        [replace(annotation, mark=replace(box, tool=Tool.CIRCLE))], {annotation.key: turned}
    )
    assert ring.mark.tool is Tool.PEN and len(ring.mark.points) == ELLIPSE_SEGMENTS + 1
    xs, ys = np.array(ring.mark.points).T
    assert np.allclose([xs.min(), xs.max(), ys.min(), ys.max()], [0.7, 0.8, 0.2, 0.4], atol=1e-3)
    plain = Annotation(
        Mark.from_json({**box.to_json(), "anchored": False}), SURGEON, now, now, None
    )
    assert placed([plain], {plain.key: shift}) == [plain], "a mark not anchored stays as drawn"


def test_the_stride_keeps_15_hz_whatever_the_frame_rate() -> None:
    """Every other frame at 30 fps, every 4th at 60, every one at 25 (a PAL tower) and 15; a
    frame a few ms early or late never makes a gap longer than 1 / 15 s, a lost one than a frame
    more."""

    def analysed(times_ms: list[float]) -> list[int]:
        stride = Stride()
        return [i for i, t in enumerate(times_ms) if stride.due(round(t * 90))]

    for fps, every in ((30, 2), (60, 4), (25, 1), (15, 1), (50, 3)):
        times = [i * 1000 / fps for i in range(60)]
        assert analysed(times) == list(range(0, 60, every)), fps
    rng = np.random.default_rng(1)
    for fps in (25, 30, 50, 60):
        times = sorted(i * 1000 / fps + rng.uniform(-4, 4) for i in range(300))
        times = [t for i, t in enumerate(times) if i % 17 != 5]  # lost frames
        kept = [times[i] for i in analysed(times)]
        gaps = np.diff(kept)
        assert max(gaps) <= 1000 / 15 + 8 + 1000 / fps, (fps, max(gaps))
        rate = (len(kept) - 1) / (kept[-1] - kept[0]) * 1000
        assert 14 <= rate <= (24 if fps == 25 else 17.5), (fps, rate)
    # a new stream (the clock going back) starts over at its first frame
    stride = Stride()
    due = [stride.due(p) for p in (90_000, 93_000, 96_000, 3_000, 6_000)]
    assert due == [True, False, True, True, False]
