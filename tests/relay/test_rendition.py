"""The burn-in pipeline on its own: encoded test-pattern frames in, encoded annotated frames out,
decoded again to look at the pixels. Real codecs (libvpx, libx264), no peer connections."""

from __future__ import annotations

import asyncio
import threading
import time

import av
import numpy as np
import pytest

from client.testpattern import TestPatternTrack, read_stamp
from relay.annotations import Annotation, AnnotationBoard, Freeze
from relay.codecs import is_keyframe
from relay.consumer import Consumer
from relay.decoded import DECODERS, SHOW_EVERY_S, STALE_S, fresh
from relay.producer import Producer
from relay.rendition import Rendition, new_encoder
from tests import glyphs
from tests.peers import wait_until

WIDTH, HEIGHT = 640, 360
GREEN = "#00ff00"
BOX = {
    "id": "box",
    "tool": "rect",
    "color": GREEN,
    "width": 0.02,
    "points": [[0.4, 0.4], [0.6, 0.6]],
}


class Clinic:
    """Encodes stamped test-pattern frames like a publisher and feeds them to a Producer; a
    keyframe request makes its next frame a keyframe."""

    def __init__(self, codec: str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
        self.producer = Producer("video", codec, "test")
        self.plis = 0
        self._keyframe_wanted = False
        self.producer.attach(self._pli)
        self._pattern = TestPatternTrack(*size)
        self._encoder = new_encoder(codec, *size)
        self.counter = 0

    def _pli(self) -> bool:
        self.plis += 1
        self._keyframe_wanted = True
        return True

    async def send(self, frames: int) -> None:
        for _ in range(frames):
            frame = self._pattern.frame(self.counter, int(time.time() * 1000))
            frame.pts = self.counter * 3000
            if self._keyframe_wanted:
                frame.pict_type = av.video.frame.PictureType.I
                self._keyframe_wanted = False
            for packet in self._encoder.encode(frame):
                self.producer.on_frame(bytes(packet), self.counter * 3000)
            self.counter += 1
            await asyncio.sleep(1 / 30)


class Player:
    """Decodes what an annotated viewer's Consumer hands out."""

    def __init__(self, consumer: Consumer, codec: str) -> None:
        self.consumer = consumer
        self.codec = codec
        self.pictures: list[np.ndarray] = []
        self.keyframes: list[int] = []
        self._decoder = av.CodecContext.create(DECODERS[codec], "r")
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            packet = await self.consumer.recv()
            if is_keyframe(self.codec, bytes(packet)):
                self.keyframes.append(len(self.pictures))
            for frame in self._decoder.decode(packet):
                self.pictures.append(frame.to_ndarray(format="bgr24"))

    def close(self) -> None:
        self.consumer.stop()
        self._task.cancel()


def green_at(picture: np.ndarray, x: float, y: float) -> bool:
    """Is the picture (of any size) the mark's green at ``x``, ``y`` (0..1 of its size)?"""
    height, width = picture.shape[:2]
    b, g, r = (int(c) for c in picture[int(y * height), int(x * width)])
    return g > 180 and r < 90 and b < 90


def stamp_of(picture: np.ndarray) -> int:
    return read_stamp(av.VideoFrame.from_ndarray(picture, format="bgr24"))[0]


async def shown(player: Player, counter: int) -> bool:
    """Wait (bounded) until the viewer has decoded the rendition of frame ``counter`` or later:
    the rendition's worker and the decoder run behind the sender on a busy box."""
    return await wait_until(
        lambda: bool(player.pictures) and stamp_of(player.pictures[-1]) >= counter, timeout=3
    )


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_the_rendition_burns_the_visible_marks_into_every_frame(codec: str) -> None:
    clinic, board = Clinic(codec), AnnotationBoard()
    board.add(Annotation.from_json(BOX, "surgeon-1", time.time(), None))
    rendition = Rendition(clinic.producer, board, "test")
    player = Player(rendition.producer.consume("viewer"), codec)
    try:
        await clinic.send(30)
        await shown(player, 29)
        assert len(player.pictures) >= 15
        assert player.keyframes[0] == 0, "the viewer starts at a keyframe"
        for picture in player.pictures:
            assert green_at(picture, 0.4, 0.5) and green_at(picture, 0.5, 0.6)  # box edges
            assert not green_at(picture, 0.5, 0.5)  # its inside is the endoscope picture
        stamps = [stamp_of(p) for p in player.pictures]
        assert stamps == sorted(stamps) and stamps[-1] >= 25  # the live picture, in order
    finally:
        player.close()
        await rendition.stop()


async def test_marks_appear_and_disappear_with_the_board() -> None:
    clinic, board = Clinic("VP8"), AnnotationBoard()
    rendition = Rendition(clinic.producer, board, "test")
    player = Player(rendition.producer.consume("viewer"), "VP8")
    try:
        await clinic.send(10)
        before = len(player.pictures)
        board.add(Annotation.from_json(BOX, "surgeon-1", time.time(), None))
        await clinic.send(10)
        board.clear()
        await clinic.send(10)
        await shown(player, 29)
        marked = [green_at(p, 0.4, 0.5) for p in player.pictures]
        assert before >= 5 and not any(marked[:before])
        assert any(marked[before:])
        assert not any(marked[-3:])
    finally:
        player.close()
        await rendition.stop()


async def test_a_viewers_keyframe_request_makes_the_next_encoded_frame_a_keyframe() -> None:
    clinic, board = Clinic("VP8"), AnnotationBoard()
    rendition = Rendition(clinic.producer, board, "test")
    player = Player(rendition.producer.consume("viewer"), "VP8")
    try:
        await clinic.send(10)
        assert player.keyframes == [0]  # the source's keyframes are not copied: one per GOP
        player.consumer.request_keyframe()  # rate-limited: may wait up to 0.5 s, never lost
        await clinic.send(20)
        assert len(player.keyframes) == 2 and player.keyframes[1] >= 9
    finally:
        player.close()
        await rendition.stop()


async def test_a_frozen_board_repeats_one_picture_until_resumed() -> None:
    clinic, board = Clinic("VP8"), AnnotationBoard()
    rendition = Rendition(clinic.producer, board, "test")
    player = Player(rendition.producer.consume("viewer"), "VP8")
    try:
        await clinic.send(5)
        board.set_freeze(Freeze("surgeon-1", time.time(), None))
        await clinic.send(12)
        await wait_until(lambda: len(player.pictures) >= 17, timeout=3)
        stamps = [stamp_of(p) for p in player.pictures]
        assert len(set(stamps[-8:])) == 1 and stamps[-1] < 10  # still the picture of ~frame 5
        board.set_freeze(None)
        await clinic.send(5)
        assert await shown(player, stamps[-1] + 1)
    finally:
        player.close()
        await rendition.stop()


async def test_stop_joins_the_worker_and_leaves_the_source_untouched() -> None:
    clinic, board = Clinic("VP8"), AnnotationBoard()
    raw = clinic.producer.consume("raw viewer")
    rendition = Rendition(clinic.producer, board, "test")
    assert any(t.name.startswith("rendition ") for t in threading.enumerate())
    await clinic.send(5)
    await wait_until(lambda: rendition.frames_decoded == 5, timeout=3)  # stop() drops the rest
    await rendition.stop()
    assert not any(t.name.startswith("rendition ") for t in threading.enumerate())
    assert clinic.producer.consumers == {raw}
    assert rendition.frames_decoded == 5
    await clinic.send(2)
    assert raw.frames_forwarded == 7 and raw.frames_dropped == 0


async def test_hangul_and_cyrillic_labels_are_burned_in_as_glyphs_not_question_marks() -> None:
    clinic, board = Clinic("VP8"), AnnotationBoard()
    mark = glyphs.text_mark(0.1, 0.5, 0.02, GREEN)
    board.add(Annotation.from_json(mark, "surgeon-1", time.time(), None))
    rendition = Rendition(clinic.producer, board, "test")
    player = Player(rendition.producer.consume("viewer"), "VP8")
    try:
        await clinic.send(15)
        await shown(player, 14)
        assert len(player.pictures) >= 5
        picture = player.pictures[-1]
        b, g, r = (picture[..., i].astype(int) for i in range(3))
        found = glyphs.match((g > 150) & (r < 110) & (b < 110), 0.1, 0.5, 0.02)
        assert found.on_glyphs > 0.7 and found.off_glyphs < 0.25, found
        assert found.like_text > 0.25 and found.like_text > 2.5 * found.like_fallback, found
    finally:
        player.close()
        await rendition.stop()


def test_a_worker_that_stays_behind_still_shows_a_frame_every_so_often() -> None:
    """Stale frames are skipped only while the worker catches up: one that keeps pace decoding
    but stays behind (starved of CPU) shows a frame every ``SHOW_EVERY_S``, never none."""
    late = STALE_S * 2
    assert fresh(late, 0.0, newer_waiting=False), "the newest frame is always shown"
    assert fresh(STALE_S / 2, 0.0, newer_waiting=True), "a burst of the event loop is shown"
    assert not fresh(late, SHOW_EVERY_S / 2, newer_waiting=True), "stale: skipped"
    assert fresh(late, SHOW_EVERY_S, newer_waiting=True), "but not for longer than this"
