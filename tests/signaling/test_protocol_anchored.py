"""Anchored marks in client messages: ``anchored`` (pen, arrow, circle, rect; a boolean),
``frame_pts`` (an anchored mark's, an integer pts), and ``placements``, which only the server
sends. Every refusal is a readable ProtocolError that quotes nothing the client sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay import Mark
from relay.annotations import MAX_FRAME_PTS, AnnotationError, Tool
from signaling.ws.protocol import (
    FORBIDDEN,
    INVALID,
    AnnotationMessage,
    AnnotationOp,
    ProtocolError,
    parse_client_message,
)
from tests.signaling.test_websocket_annotations import STROKE

ARROW = {**STROKE, "id": "a1", "tool": "arrow", "points": [[0.1, 0.2], [0.3, 0.4]]}


def parse(message: Any) -> Any:
    return parse_client_message(json.dumps(message))


def add(frame_pts: Any = None, **changes: Any) -> dict[str, Any]:
    message = {"type": "annotation", "op": "add", "annotation": {**ARROW, **changes}}
    return message if frame_pts is None else {**message, "frame_pts": frame_pts}


@pytest.mark.parametrize("tool", ["pen", "arrow", "circle", "rect"])
def test_pen_arrow_circle_and_rect_may_be_anchored_on_a_frame(tool: str) -> None:
    message = parse(add(frame_pts=123_456, anchored=True, tool=tool))
    assert message.mark.anchored and message.mark.tool is Tool(tool)
    assert message.frame_pts == 123_456
    assert message.mark.to_json()["anchored"] is True


def test_an_update_of_an_anchored_mark_says_its_frame_too() -> None:
    message = parse({**add(frame_pts=200_000, anchored=True), "op": "update"})
    assert message.op is AnnotationOp.UPDATE and message.frame_pts == 200_000


def test_a_mark_is_not_anchored_unless_it_says_so_and_its_json_stays_as_before() -> None:
    message = parse(add())
    assert message == AnnotationMessage(AnnotationOp.ADD, mark=Mark.from_json(ARROW))
    assert not message.mark.anchored and "anchored" not in message.mark.to_json()
    assert not parse(add(anchored=False)).mark.anchored
    assert parse(add(frame_pts=None, anchored=True)).frame_pts is None


def test_a_text_label_is_never_anchored() -> None:
    label = {**ARROW, "tool": "text", "points": [[0.5, 0.5]], "text": "turbinate"}
    with pytest.raises(ProtocolError) as refused:
        parse({"type": "annotation", "op": "add", "annotation": {**label, "anchored": True}})
    assert refused.value.code == INVALID
    assert refused.value.reason == "annotation.anchored is for pen, arrow, circle and rect marks"
    assert not Mark.from_json({**label, "anchored": False}).anchored


@pytest.mark.parametrize("value", [1, 0, "true", None, [], {}, 1.0])
def test_anchored_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(AnnotationError, match="annotation.anchored must be true or false"):
        Mark.from_json({**ARROW, "anchored": value})


@pytest.mark.parametrize("value", [-1, 1.5, "12", True, [1], MAX_FRAME_PTS, 10**30])
def test_frame_pts_must_be_a_video_pts(value: Any) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(add(frame_pts=value, anchored=True))
    assert refused.value.code == INVALID
    assert refused.value.reason == "annotation frame_pts must be a video pts (an integer >= 0)"


def test_frame_pts_is_only_for_an_anchored_mark() -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(add(frame_pts=3000))
    assert refused.value.reason == "annotation frame_pts is only for an anchored mark"


def test_a_client_cannot_send_placements() -> None:
    placements = {"type": "placements", "pts": 0, "capture_ms": None, "marks": []}
    with pytest.raises(ProtocolError) as refused:
        parse(placements)
    assert refused.value.code == FORBIDDEN
    assert refused.value.reason == "placements messages are sent by the server only"
