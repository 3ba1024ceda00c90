"""The quality ladder on its own: rung sizes, and renditions started by the Ladder from a 720p
stamped test pattern encoded like a clinic, decoded again on the far side (real codecs)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from relay.annotations import Annotation, AnnotationBoard
from relay.ladder import RUNGS, Ladder, Quality, rungs
from relay.rendition import Rung
from tests.relay.test_rendition import BOX, Clinic, Player, green_at, stamp_of

HD = (1280, 720)


@pytest.mark.parametrize(
    ("source", "height", "expected"),
    [
        ((1280, 720), 360, (640, 360)),
        ((1280, 720), 540, (960, 540)),
        ((1920, 1080), 540, (960, 540)),
        ((640, 480), 360, (480, 360)),  # 4:3 keeps 4:3
        ((1000, 562), 360, (640, 360)),  # 640.57 rounds to an even width
        ((854, 480), 360, (640, 360)),  # 640.5 → even
        ((720, 576), 361, (450, 360)),  # an odd rung height is made even
        ((640, 360), 540, (640, 360)),  # never upscaled
        ((1280, 720), 720, (1280, 720)),
    ],
)
def test_a_rung_keeps_the_aspect_with_even_sides_and_never_upscales(
    source: tuple[int, int], height: int, expected: tuple[int, int]
) -> None:
    width, lines = Rung(height, 250).size(*source)
    assert (width, lines) == expected
    assert width % 2 == 0 and lines % 2 == 0 or (width, lines) == source


def test_the_rungs_and_their_rates() -> None:
    assert RUNGS == {Quality.P540: Rung(540, 700), Quality.P360: Rung(360, 250)}
    assert rungs((900, 300))[Quality.P360] == Rung(360, 300)
    assert [str(q) for q in Quality] == ["original", "540p", "360p"]


def rendition_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("rendition "))


async def test_the_plain_original_is_the_feed_itself_and_starts_nothing() -> None:
    clinic = Clinic("VP8", HD)
    ladder = Ladder(clinic.producer, AnnotationBoard(), "test")
    assert ladder.producer(False, Quality.ORIGINAL) is clinic.producer
    assert ladder.renditions() == {}
    await ladder.close()


@pytest.mark.parametrize(
    ("quality", "size"), [(Quality.P360, (640, 360)), (Quality.P540, (960, 540))]
)
async def test_a_rung_scales_720p_down_and_keeps_every_frame_in_order(
    quality: Quality, size: tuple[int, int]
) -> None:
    clinic = Clinic("VP8", HD)
    ladder = Ladder(clinic.producer, AnnotationBoard(), "test")
    player = Player(ladder.producer(False, quality).consume("viewer"), "VP8")
    try:
        await clinic.send(30)
        await asyncio.sleep(0.3)
        assert len(player.pictures) >= 20
        assert {p.shape[1::-1] for p in player.pictures} == {size}
        stamps = [stamp_of(p) for p in player.pictures]
        assert stamps == sorted(stamps) and stamps[-1] >= 25
    finally:
        player.close()
        await ladder.close()


async def test_marks_on_an_annotated_rung_land_at_the_same_place_on_the_smaller_picture() -> None:
    clinic, board = Clinic("VP8", HD), AnnotationBoard()
    board.add(Annotation.from_json(BOX, "surgeon-1", time.time(), None))
    ladder = Ladder(clinic.producer, board, "test")
    annotated = Player(ladder.producer(True, Quality.P360).consume("annotated"), "VP8")
    plain = Player(ladder.producer(False, Quality.P360).consume("plain"), "VP8")
    try:
        await clinic.send(20)
        await asyncio.sleep(0.3)
        assert len(ladder.renditions()) == 2
        for picture in annotated.pictures:
            assert picture.shape[:2] == (360, 640)
            assert green_at(picture, 0.4, 0.5) and green_at(picture, 0.5, 0.6)  # box edges
            assert green_at(picture, 0.6, 0.5) and green_at(picture, 0.5, 0.4)
            assert not green_at(picture, 0.5, 0.5) and not green_at(picture, 0.3, 0.5)
        assert not any(green_at(p, 0.4, 0.5) for p in plain.pictures)  # no board on plain rungs
    finally:
        annotated.close()
        plain.close()
        await ladder.close()


async def test_a_rung_stops_after_its_last_viewer_and_starts_again_for_the_next() -> None:
    clinic = Clinic("VP8", HD)
    raw = clinic.producer.consume("original viewer")
    ladder = Ladder(clinic.producer, AnnotationBoard(), "test")
    before = rendition_threads()
    first = ladder.producer(False, Quality.P360).consume("first")
    second = ladder.producer(False, Quality.P360).consume("second")
    assert len(ladder.renditions()) == 1 and rendition_threads() == before + 1  # one per rung
    await clinic.send(5)
    first.stop()
    ladder.release()
    assert len(ladder.renditions()) == 1  # still watched
    second.stop()
    ladder.release()
    assert ladder.renditions() == {}
    deadline = time.monotonic() + 5
    while rendition_threads() > before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert rendition_threads() == before, "the worker thread was joined"
    assert clinic.producer.consumers == {raw}
    again = Player(ladder.producer(False, Quality.P360).consume("next"), "VP8")
    try:
        await clinic.send(10)
        await asyncio.sleep(0.2)
        assert again.pictures and again.pictures[-1].shape[:2] == (360, 640)
        assert raw.frames_forwarded == 15 and raw.frames_dropped == 0  # the original untouched
    finally:
        again.close()
        await ladder.close()
    assert rendition_threads() == before
