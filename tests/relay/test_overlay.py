"""Burn-in drawing on synthetic frames: each tool lands on the expected pixels and nowhere else,
sizes follow the frame height, and the YUV path paints the same picture as the BGR one."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from relay.annotations import Annotation
from relay.labels import MAX_WIDTH_PX, LabelCache
from relay.overlay import bgr, draw_bgr, draw_yuv420, yuv

W, H = 640, 360
GREEN = "#00ff00"


def make(tool: str, points: list[list[float]], width: float = 0.01, **extra: Any) -> Annotation:
    data = {"id": tool, "tool": tool, "color": GREEN, "width": width, "points": points, **extra}
    return Annotation.from_json(data, "surgeon-1", 0.0, None)


def drawn(*marks: Annotation, w: int = W, h: int = H) -> np.ndarray:
    """A mask of the green pixels after drawing ``marks`` on a black BGR frame."""
    image = np.zeros((h, w, 3), np.uint8)
    draw_bgr(image, marks)
    return (image[:, :, 1] > 128) & (image[:, :, 0] < 64) & (image[:, :, 2] < 64)


def at(mask: np.ndarray, x: float, y: float) -> bool:
    h, w = mask.shape
    return bool(mask[int(y * h), int(x * w)])


def inside(mask: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> bool:
    """Every marked pixel lies in the box (normalised corners)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    return bool(
        len(xs)
        and xs.min() >= x0 * w
        and xs.max() <= x1 * w
        and ys.min() >= y0 * h
        and ys.max() <= y1 * h
    )


def test_an_arrow_lands_on_its_shaft_and_head_and_nowhere_else() -> None:
    mask = drawn(make("arrow", [[0.2, 0.5], [0.8, 0.5]], width=0.01))
    assert all(at(mask, x, 0.5) for x in (0.21, 0.4, 0.6, 0.79))
    # the head: barbs at 45° behind the tip, 4 line widths (14.4 px) long
    tip_x, y = 0.8 * W, 0.5 * H
    for back in (4, 8):
        for side in (-1, 1):
            assert mask[round(y + side * back), round(tip_x - back)]
    assert not mask[round(y - 8), round(0.2 * W + 8)]  # no barbs at the tail
    assert not at(mask, 0.7, 0.45) and not at(mask, 0.7, 0.55)
    assert inside(mask, 0.19, 0.45, 0.81, 0.55)


def test_a_pen_stroke_follows_its_points() -> None:
    points = [[0.1, 0.1], [0.5, 0.9], [0.9, 0.1]]
    mask = drawn(make("pen", points))
    for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert at(mask, ax + (bx - ax) * t, ay + (by - ay) * t)
    assert not at(mask, 0.5, 0.1) and not at(mask, 0.5, 0.5)  # between the legs of the V
    assert inside(mask, 0.09, 0.08, 0.91, 0.92)


def test_a_single_point_pen_is_a_dot() -> None:
    mask = drawn(make("pen", [[0.5, 0.5]], width=0.05))
    assert at(mask, 0.5, 0.5)
    assert inside(mask, 0.47, 0.47, 0.53, 0.53)


def test_a_circle_is_the_ellipse_inscribed_in_its_corner_points() -> None:
    mask = drawn(make("circle", [[0.75, 0.75], [0.25, 0.25]]))
    for x, y in ((0.5, 0.25), (0.5, 0.749), (0.25, 0.5), (0.749, 0.5)):
        assert at(mask, x, y)
    assert not at(mask, 0.5, 0.5)  # an outline
    assert not at(mask, 0.27, 0.27) and not at(mask, 0.73, 0.73)  # the box corners stay clear
    assert inside(mask, 0.24, 0.23, 0.76, 0.77)


def test_a_rectangle_outlines_its_corner_points() -> None:
    mask = drawn(make("rect", [[0.2, 0.3], [0.6, 0.7]]))
    for x, y in ((0.2, 0.5), (0.6, 0.5), (0.4, 0.3), (0.4, 0.7), (0.2, 0.3), (0.6, 0.7)):
        assert at(mask, x, y)
    assert not at(mask, 0.4, 0.5)
    assert inside(mask, 0.19, 0.28, 0.61, 0.72)


def test_text_sits_on_its_anchor_and_grows_with_the_width() -> None:
    small = drawn(make("text", [[0.1, 0.5]], width=0.005, text="HELLO"))
    large = drawn(make("text", [[0.1, 0.5]], width=0.01, text="HELLO"))
    for mask in (small, large):
        assert mask.any()
        assert inside(mask, 0.1, 0.0, 1.0, 0.51)  # right of the anchor, above the baseline
    height = np.nonzero(small.any(axis=1))[0]
    assert (height.max() - height.min()) == pytest.approx(6 * 0.005 * H, abs=2)
    assert large.sum() > 2 * small.sum()


def cap_px(mask: np.ndarray) -> int:
    rows = np.nonzero(mask.any(axis=1))[0]
    return int(rows.max() - rows.min())


def test_a_text_size_sets_the_cap_height_whatever_the_line_width() -> None:
    for size in (0.03, 0.08):
        thin = drawn(make("text", [[0.1, 0.5]], width=0.002, text="HELLO", size=size))
        thick = drawn(make("text", [[0.1, 0.5]], width=0.02, text="HELLO", size=size))
        assert cap_px(thin) == pytest.approx(size * H, abs=2)
        assert (thin == thick).all()  # the line width plays no part in a sized label


def test_a_label_from_an_older_log_keeps_its_size_of_six_line_widths() -> None:
    old = make("text", [[0.1, 0.5]], width=0.008, text="HELLO")
    assert old.mark.size is None and "size" not in old.mark.to_json()
    same = make("text", [[0.1, 0.5]], width=0.008, text="HELLO", size=6 * 0.008)
    assert (drawn(old) == drawn(same)).all()


def test_accented_latin_text_is_drawn() -> None:
    assert drawn(make("text", [[0.1, 0.5]], text="é")).any()


def test_the_label_cache_is_bounded_in_memory_and_cuts_wide_patches() -> None:
    """A drawer sending many long, large labels must not grow the burn-in's memory."""
    cache = LabelCache(capacity=1000, max_bytes=8 * 1024 * 1024)
    wide = cache.label("내시경 Дуран " * 16, cap_height_px=300)
    assert wide.alpha.shape[1] <= MAX_WIDTH_PX and wide.alpha.any()
    for n in range(12):
        cache.label(f"{n} " + "Дуран " * 30, cap_height_px=300)
        assert cache.nbytes <= 8 * 1024 * 1024
    again = cache.label("Дуран", cap_height_px=20)
    assert cache.label("Дуран", cap_height_px=20) is again  # a hit: the same patch


def test_line_width_follows_the_frame_height() -> None:
    def thickness(h: int) -> int:
        mask = drawn(make("pen", [[0.1, 0.5], [0.9, 0.5]], width=0.02), w=h * 16 // 9, h=h)
        return int(mask[:, mask.shape[1] // 2].sum())

    assert thickness(360) == pytest.approx(0.02 * 360, abs=2)
    assert thickness(720) == pytest.approx(2 * thickness(360), abs=2)


def test_the_yuv_planes_show_the_same_picture_as_bgr() -> None:
    marks = [
        make("arrow", [[0.2, 0.5], [0.8, 0.5]], width=0.03),
        make("circle", [[0.25, 0.25], [0.75, 0.75]], width=0.03),
        Annotation.from_json(
            {"id": "red", "tool": "rect", "color": "#ff0000", "width": 0.02,
             "points": [[0.05, 0.05], [0.15, 0.15]]},
            "clinic-1", 0.0, None,
        ),
    ]  # fmt: skip
    picture = np.zeros((H * 3 // 2, W), np.uint8)
    picture[:H] = 16  # limited-range black
    picture[H:] = 128
    planes = [picture[:H], *picture[H:].reshape(2, H // 2, W // 2)]
    draw_yuv420(planes, marks)
    as_bgr = cv2.cvtColor(picture, cv2.COLOR_YUV2BGR_I420)
    reference = np.zeros((H, W, 3), np.uint8)
    draw_bgr(reference, marks)
    for x, y, color in ((0.5, 0.5, GREEN), (0.5, 0.25, GREEN), (0.1, 0.05, "#ff0000")):
        found = as_bgr[int(y * H), int(x * W)].astype(int)
        assert np.abs(found - bgr(color)).max() < 40, (x, y, found)
        assert np.abs(found - reference[int(y * H), int(x * W)]).max() < 40
    assert not as_bgr[int(0.4 * H), int(0.5 * W)].any()  # black stays black
    assert not as_bgr[int(0.9 * H), int(0.1 * W)].any()


def test_colours_convert_to_bgr_and_limited_range_yuv() -> None:
    assert bgr("#ff8000") == (0, 128, 255)
    assert yuv("#000000") == (16, 128, 128) and yuv("#ffffff") == (235, 128, 128)


def test_a_thin_line_keeps_its_colour_at_360p() -> None:
    """4:2:0 chroma is half size: a 3 px line there is mostly anti-aliased edge, and its colour
    faded to grey under the encoder (a 360p rung, a clinic sending 640×360)."""
    mark = Annotation.from_json(
        {"id": "pen", "tool": "pen", "color": "#ff40ff", "width": 0.008,
         "points": [[0.3, 0.5], [0.7, 0.5]]},
        "surgeon-1", 0.0, None,
    )  # fmt: skip
    picture = np.zeros((H * 3 // 2, W), np.uint8)
    y, u, v = yuv("#008700")  # the green of Chromium's fake camera
    picture[:H], picture[H : H * 5 // 4], picture[H * 5 // 4 :] = y, u, v
    draw_yuv420([picture[:H], *picture[H:].reshape(2, H // 2, W // 2)], [mark])
    rgb = cv2.cvtColor(picture, cv2.COLOR_YUV2RGB_I420).astype(int)
    centre = rgb[H // 2 - 1 : H // 2 + 1, W // 2]
    assert (np.abs(centre - (0xFF, 0x40, 0xFF)).max(axis=1) < 20).all(), centre.tolist()
