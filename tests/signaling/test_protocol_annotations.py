"""Client messages of the annotation additions (annotation, pointer, freeze): valid forms, every
malformed variant, and no exception but ProtocolError for arbitrary input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import Mark
from signaling.ws.protocol import (
    INVALID,
    AnnotationMessage,
    AnnotationOp,
    FreezeMessage,
    PointerMessage,
    ProtocolError,
    parse_client_message,
)

STROKE = {"id": "s1", "tool": "pen", "color": "#00ff00", "width": 0.004, "points": [[0.1, 0.2]]}
SNAPSHOT = "AbCdEfGhIjKlMn_-"


def parse(message: Any) -> Any:
    return parse_client_message(json.dumps(message))


def test_add_and_update_carry_a_validated_mark() -> None:
    for op in ("add", "update"):
        message = parse({"type": "annotation", "op": op, "annotation": STROKE})
        assert message == AnnotationMessage(AnnotationOp(op), mark=Mark.from_json(STROKE))


def test_remove_names_a_mark_while_undo_and_clear_need_nothing() -> None:
    assert parse({"type": "annotation", "op": "remove", "id": "s1"}) == AnnotationMessage(
        AnnotationOp.REMOVE, id="s1"
    )
    assert parse({"type": "annotation", "op": "undo"}) == AnnotationMessage(AnnotationOp.UNDO)
    assert parse({"type": "annotation", "op": "clear", "x": 1}) == AnnotationMessage(
        AnnotationOp.CLEAR
    )


def test_a_pointer_moves_or_hides_with_nulls() -> None:
    assert parse({"type": "pointer", "x": 0, "y": 1}) == PointerMessage(0.0, 1.0)
    assert parse({"type": "pointer", "x": None, "y": None}) == PointerMessage(None, None)
    assert parse({"type": "pointer"}) == PointerMessage(None, None)


def test_a_pointer_may_carry_its_authors_colour() -> None:
    moved = parse({"type": "pointer", "x": 0.5, "y": 0.5, "color": "#00E676"})
    assert moved == PointerMessage(0.5, 0.5, "#00e676")


def test_freeze_may_name_a_snapshot_and_resume_may_not() -> None:
    assert parse({"type": "freeze", "frozen": True, "snapshot_id": SNAPSHOT}) == FreezeMessage(
        True, SNAPSHOT
    )
    assert parse({"type": "freeze", "frozen": True}) == FreezeMessage(True)
    assert parse({"type": "freeze", "frozen": False, "snapshot_id": None}) == FreezeMessage(False)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "annotation"},
        {"type": "annotation", "op": "erase"},
        {"type": "annotation", "op": ["add"]},
        {"type": "annotation", "op": "add"},
        {"type": "annotation", "op": "add", "annotation": []},
        {"type": "annotation", "op": "add", "annotation": {**STROKE, "tool": "laser"}},
        {"type": "annotation", "op": "add", "annotation": {**STROKE, "points": [[2, 0]]}},
        {"type": "annotation", "op": "update", "annotation": {**STROKE, "color": "green"}},
        {"type": "annotation", "op": "remove"},
        {"type": "annotation", "op": "remove", "id": "../../x"},
        {"type": "annotation", "op": "remove", "id": 5},
        {"type": "pointer", "x": 0.5},
        {"type": "pointer", "x": 0.5, "y": "0.5"},
        {"type": "pointer", "x": -0.1, "y": 0.5},
        {"type": "pointer", "x": 0.5, "y": True},
        {"type": "pointer", "x": [0.5], "y": 0.5},
        {"type": "pointer", "x": 0.5, "y": 0.5, "color": "red"},
        {"type": "pointer", "x": 0.5, "y": 0.5, "color": 0xFF0000},
        {"type": "freeze"},
        {"type": "freeze", "frozen": "yes"},
        {"type": "freeze", "frozen": 1},
        {"type": "freeze", "frozen": True, "snapshot_id": "short"},
        {"type": "freeze", "frozen": True, "snapshot_id": "../../../etc/pass"},
        {"type": "freeze", "frozen": False, "snapshot_id": SNAPSHOT},
    ],
    ids=lambda m: json.dumps(m)[:70],
)
def test_bad_fields_are_invalid_messages_that_keep_the_socket_open(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(message)
    assert info.value.code == INVALID and not info.value.fatal


@pytest.mark.parametrize("value", ["1e999", "-1e999", "NaN"])
def test_pointer_and_points_reject_non_finite_numbers(value: str) -> None:
    for raw in (
        '{"type":"pointer","x":V,"y":0.5}',
        '{"type":"annotation","op":"add","annotation":{"id":"a","tool":"pen",'
        '"color":"#000000","width":0.01,"points":[[V,0.5]]}}',
    ):
        with pytest.raises(ProtocolError):
            parse_client_message(raw.replace("V", value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=15,
)
numbers = st.floats() | st.integers() | st.just(math.inf)


@given(
    st.sampled_from(["annotation", "pointer", "freeze"]),
    st.fixed_dictionaries(
        {},
        optional={
            "op": st.sampled_from([*AnnotationOp, "nope"]) | json_values,
            "annotation": st.fixed_dictionaries(
                {k: st.just(v) for k, v in STROKE.items() if k != "points"},
                optional={"points": st.lists(st.lists(numbers, max_size=3), max_size=3)},
            )
            | json_values,
            "id": st.text(max_size=70) | json_values,
            "x": numbers | json_values,
            "y": numbers | json_values,
            "frozen": st.booleans() | json_values,
            "snapshot_id": st.just(SNAPSHOT) | st.text(max_size=20) | json_values,
        },
    ),
)
def test_arbitrary_annotation_messages_raise_only_protocol_error(
    kind: str, fields: dict[str, Any]
) -> None:
    try:
        parse_client_message(json.dumps({**fields, "type": kind}))  # NaN/inf written as such
    except ProtocolError:
        pass
