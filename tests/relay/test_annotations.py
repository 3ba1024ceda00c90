"""Annotations: strict validation of untrusted marks (incl. a property test), and the board's
operations, ownership, fading, undo, limits and freeze state."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.annotations import (
    MAX_ANCHORED,
    MAX_BOARD_POINTS,
    MAX_MARKS,
    MAX_POINTS,
    MAX_TEXT_LENGTH,
    Annotation,
    AnnotationBoard,
    AnnotationError,
    Freeze,
    Mark,
    Tool,
)

PEN = {
    "id": "stroke-1",
    "tool": "pen",
    "color": "#FF8800",
    "width": 0.005,
    "points": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.45]],
}
NOW = 1_700_000_000.0


def mark(**changes: Any) -> dict[str, Any]:
    return {**PEN, **changes}


def annotation(author: str = "surgeon-1", now: float = NOW, **changes: Any) -> Annotation:
    return Annotation.from_json(mark(**changes), author, now, media_pts=90_000)


def refused(data: Any) -> str:
    with pytest.raises(AnnotationError) as info:
        Mark.from_json(data)
    return str(info.value)


# -- validation ----------------------------------------------------------------------------------


def test_a_valid_pen_stroke_is_kept_with_its_colour_normalised() -> None:
    parsed = Mark.from_json({**PEN, "author": "ignored", "extra": 1})
    assert parsed.tool is Tool.PEN and parsed.color == "#ff8800"
    assert parsed.points == ((0.1, 0.2), (0.3, 0.4), (0.5, 0.45))
    assert parsed.text is None and parsed.fade_s is None


def test_the_server_stamps_author_times_and_media_pts() -> None:
    data = annotation(fade_s=5).to_json()
    assert data["author"] == "surgeon-1" and data["media_pts"] == 90_000
    assert data["created_at"] == data["updated_at"] == "2023-11-14T22:13:20.000+00:00"
    assert data["fade_s"] == 5.0 and data["points"] == PEN["points"] and "text" not in data


@pytest.mark.parametrize(
    ("tool", "points", "text"),
    [
        ("pen", [[0.5, 0.5]], None),
        ("pen", [[0.0, 0.0]] * MAX_POINTS, None),
        ("arrow", [[0, 0], [1, 1]], None),
        ("circle", [[0.2, 0.2], [0.4, 0.3]], None),
        ("rect", [[0.4, 0.3], [0.2, 0.2]], None),
        ("text", [[0.5, 0.5]], "turbinate"),
        ("text", [[0.5, 0.5]], "é" * MAX_TEXT_LENGTH),
    ],
)
def test_every_tool_accepts_its_point_count(tool: str, points: list[Any], text: str | None) -> None:
    assert Mark.from_json(mark(tool=tool, points=points, text=text)).tool == tool


def test_a_label_keeps_its_text_size_through_json() -> None:
    label = Mark.from_json(mark(tool="text", points=[[0.5, 0.5]], text="polyp", size=0.08))
    assert label.size == 0.08 and label.cap_height == 0.08
    assert Mark.from_json(label.to_json()) == label


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "pen",
        mark(id=""),
        mark(id="x" * 65),
        mark(id="a b"),
        mark(id="../etc"),
        mark(id=7),
        mark(tool="laser"),
        mark(tool=None),
        mark(tool=["pen"]),
        mark(color="red"),
        mark(color="#ff880"),
        mark(color="#gg8800"),
        mark(color=0xFF8800),
        mark(width=0),
        mark(width=0.06),
        mark(width=True),
        mark(width="0.005"),
        mark(width=math.nan),
        mark(width=math.inf),
        mark(points=[]),
        mark(points=None),
        mark(points="0.1,0.2"),
        mark(points=[[0.1]]),
        mark(points=[[0.1, 0.2, 0.3]]),
        mark(points=[[0.1, -0.01]]),
        mark(points=[[1.01, 0.5]]),
        mark(points=[[math.nan, 0.5]]),
        mark(points=[[0.5, math.inf]]),
        mark(points=[[10**400, 0.5]]),
        mark(points=[[True, 0.5]]),
        mark(points=[["0.5", 0.5]]),
        mark(points=[{"x": 0.5, "y": 0.5}]),
        mark(points=[[0.5, 0.5]] * (MAX_POINTS + 1)),
        mark(tool="arrow", points=[[0.5, 0.5]]),
        mark(tool="arrow", points=[[0.5, 0.5]] * 3),
        mark(tool="circle", points=[[0.5, 0.5]]),
        mark(tool="rect", points=[[0.5, 0.5]] * 3),
        mark(tool="text", points=[[0.5, 0.5]]),
        mark(tool="text", points=[[0.5, 0.5]], text="  "),
        mark(tool="text", points=[[0.5, 0.5]], text="x" * (MAX_TEXT_LENGTH + 1)),
        mark(tool="text", points=[[0.5, 0.5]], text="lone \ud800"),
        mark(tool="text", points=[[0.5, 0.5], [0.6, 0.6]], text="two anchors"),
        mark(text="text on a pen stroke"),
        mark(size=0.05),
        mark(tool="text", points=[[0.5, 0.5]], text="x", size=0.005),
        mark(tool="text", points=[[0.5, 0.5]], text="x", size=0.3),
        mark(tool="text", points=[[0.5, 0.5]], text="x", size="0.05"),
        mark(tool="text", points=[[0.5, 0.5]], text="x", size=math.nan),
        mark(fade_s=0.1),
        mark(fade_s=601),
        mark(fade_s="5"),
        mark(fade_s=math.nan),
    ],
    ids=lambda d: repr(d)[:70],
)
def test_invalid_marks_are_refused(data: Any) -> None:
    refused(data)


def test_refusals_never_quote_the_client_values() -> None:
    assert "SECRET" not in refused(mark(id="SECRET name"))
    assert "SECRET" not in refused(mark(tool="SECRET"))
    assert "SECRET" not in refused(mark(color="SECRET"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
coordinates = st.floats() | st.integers() | st.sampled_from([0, 1, 0.5, -0.0, 1.0000001])
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=70) | json_values,
        "tool": st.sampled_from([*Tool, "laser"]) | json_values,
        "color": st.from_regex(r"#[0-9a-fA-Fg]{5,7}", fullmatch=True) | json_values,
        "width": st.floats(0, 0.06) | json_values,
        "points": st.lists(st.lists(coordinates, max_size=3), max_size=4) | json_values,
        "text": st.text(max_size=210) | json_values,
        "fade_s": st.floats(0, 700) | json_values,
    },
)


@given(near_valid | json_values)
def test_arbitrary_json_never_raises_anything_but_annotation_error(data: Any) -> None:
    try:
        parsed = Mark.from_json(data)
    except AnnotationError:
        return
    lowest, highest = parsed.tool.point_counts
    assert lowest <= len(parsed.points) <= highest
    assert all(0 <= c <= 1 for point in parsed.points for c in point)
    assert 0.001 <= parsed.width <= 0.05
    assert (parsed.text is not None) == (parsed.tool is Tool.TEXT)


# -- the board -----------------------------------------------------------------------------------


def test_marks_are_listed_oldest_first_and_ids_are_per_author() -> None:
    board = AnnotationBoard()
    board.add(annotation("surgeon-1"))
    board.add(annotation("clinic-1"))  # the same id, another author: another mark
    assert [a.author for a in board.visible(NOW)] == ["surgeon-1", "clinic-1"]
    with pytest.raises(AnnotationError):
        board.add(annotation("surgeon-1"))


def test_an_update_replaces_the_points_but_keeps_creation_time_and_media_pts() -> None:
    board = AnnotationBoard()
    board.add(annotation())
    longer = Mark.from_json(mark(points=[*PEN["points"], [0.6, 0.5]]))
    updated = board.update(longer, "surgeon-1", NOW + 1)
    assert len(updated.mark.points) == 4
    assert (updated.created_at, updated.updated_at, updated.media_pts) == (NOW, NOW + 1, 90_000)
    assert board.visible(NOW + 1) == (updated,)


def test_an_anchored_update_carries_the_frame_its_author_saw_as_it_was_drawn() -> None:
    """An anchored mark is anchored again on each version's own frame (a box dragged, a stroke
    growing); an update that does not say which frame is not pinned to the first one's."""
    board = AnnotationBoard()
    board.add(replace(annotation(), frame_pts=3_000))
    anchored = Mark.from_json(mark(points=[*PEN["points"], [0.6, 0.5]], anchored=True))
    assert board.update(anchored, "surgeon-1", NOW + 1, 9_000).frame_pts == 9_000
    assert board.update(anchored, "surgeon-1", NOW + 2).frame_pts is None


def test_archived_marks_come_back_with_their_author_and_name() -> None:
    board = AnnotationBoard()
    named = replace(annotation(), author_name="Dr Kim")
    board.add(named)
    assert board.archive(NOW + 1) == (named,) and board.visible(NOW + 1) == ()
    [restored] = board.restore(NOW + 2)
    assert (restored.author, restored.author_name, restored.updated_at) == (
        "surgeon-1",
        "Dr Kim",
        NOW + 2,
    )
    assert board.visible(NOW + 2) == (restored,)


def test_nobody_can_update_or_remove_someone_elses_mark() -> None:
    board = AnnotationBoard()
    board.add(annotation("surgeon-1"))
    with pytest.raises(AnnotationError):
        board.update(Mark.from_json(PEN), "clinic-1", NOW)
    with pytest.raises(AnnotationError):
        board.remove(PEN["id"], "clinic-1")
    assert len(board.visible(NOW)) == 1
    board.remove(PEN["id"], "surgeon-1")
    assert board.visible(NOW) == ()


def test_undo_removes_the_senders_newest_mark_only() -> None:
    board = AnnotationBoard()
    board.add(annotation("surgeon-1", id="a"))
    board.add(annotation("surgeon-1", id="b"))
    board.add(annotation("clinic-1", id="c"))
    board.update(Mark.from_json(mark(id="a")), "surgeon-1", NOW + 1)  # updating is not adding
    assert board.undo("surgeon-1", NOW + 2).mark.id == "b"  # type: ignore[union-attr]
    assert board.undo("surgeon-1", NOW + 2).mark.id == "a"  # type: ignore[union-attr]
    assert board.undo("surgeon-1", NOW + 2) is None
    assert [a.mark.id for a in board.visible(NOW + 2)] == ["c"]


def test_clear_removes_everyones_marks() -> None:
    board = AnnotationBoard()
    board.add(annotation("surgeon-1"))
    board.add(annotation("clinic-1"))
    assert board.clear() == 2 and board.visible(NOW) == ()


def test_a_fading_mark_disappears_after_its_last_update_and_is_then_forgotten() -> None:
    board = AnnotationBoard()
    board.add(annotation(fade_s=2))
    board.add(annotation(id="kept"))
    board.update(Mark.from_json(mark(fade_s=2)), "surgeon-1", NOW + 1)
    assert len(board.visible(NOW + 2.9)) == 2
    assert [a.mark.id for a in board.visible(NOW + 3)] == ["kept"]
    assert board.undo("surgeon-1", NOW + 3).mark.id == "kept"  # type: ignore[union-attr]
    with pytest.raises(AnnotationError):  # faded: gone for good
        board.remove(PEN["id"], "surgeon-1")


def test_only_so_many_marks_follow_the_tissue_at_once() -> None:
    board = AnnotationBoard()
    for i in range(MAX_ANCHORED):
        board.add(annotation(id=f"a{i}", anchored=True))
    with pytest.raises(AnnotationError, match="follow the tissue"):
        board.add(annotation(id="one-too-many", anchored=True))
    board.add(annotation(id="still-drawn", anchored=False))  # a mark that stays put is fine


def test_the_board_refuses_marks_beyond_its_limits() -> None:
    board = AnnotationBoard()
    for i in range(MAX_MARKS):
        board.add(annotation(id=f"m{i}", points=[[0.5, 0.5]]))
    with pytest.raises(AnnotationError):
        board.add(annotation(id="one-too-many"))
    board.clear()
    big = [[0.5, 0.5]] * MAX_POINTS
    for i in range(MAX_BOARD_POINTS // MAX_POINTS):
        board.add(annotation(id=f"big{i}", points=big))
    with pytest.raises(AnnotationError):
        board.add(annotation(id="dot", points=[[0.5, 0.5]]))
    with pytest.raises(AnnotationError):  # growing a stroke counts too
        board.update(
            Mark.from_json(mark(id="big0", points=[*big[:-1], [0.1, 0.1], [0.2, 0.2]])),
            "surgeon-1",
            NOW,
        )


def test_every_change_bumps_the_version_and_freeze_is_kept() -> None:
    board = AnnotationBoard()
    versions = [board.version]
    board.add(annotation())
    versions.append(board.version)
    board.set_freeze(Freeze("surgeon-1", NOW, "snapshotid123456"))
    versions.append(board.version)
    assert board.freeze is not None and board.freeze.snapshot_id == "snapshotid123456"
    board.set_freeze(None)
    versions.append(board.version)
    assert versions == sorted(set(versions)) and board.freeze is None


def test_a_reader_thread_always_sees_a_consistent_list_while_the_loop_mutates() -> None:
    board = AnnotationBoard()
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                assert all(isinstance(a, Annotation) for a in board.visible(NOW))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2000):
        board.add(annotation(id=f"m{i % 100}-{i}", points=[[0.5, 0.5]]))
        if i % 100 == 99:
            board.clear()
    done.set()
    reader.join()
    assert errors == []
