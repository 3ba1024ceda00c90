"""Client message parser: valid messages, every malformed variant, and no exception but
ProtocolError for arbitrary input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signaling.ws.protocol import (
    INVALID,
    MALFORMED,
    MAX_CHAT_LENGTH,
    STAT_LIMITS,
    UNKNOWN_TYPE,
    AuthMessage,
    ChatMessage,
    PingMessage,
    ProtocolError,
    StatsMessage,
    parse_client_message,
)

FULL_STATS = {
    "fps": 29.97,
    "width": 1280,
    "height": 720,
    "bitrate_kbps": 2500,
    "rtt_ms": 42.5,
    "loss_pct": 0.3,
    "direction": "recv",
    "feed": "endoscope",
}


def parse(message: Any) -> Any:
    return parse_client_message(json.dumps(message))


def rejected(raw: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    return info.value


def test_auth() -> None:
    assert parse({"type": "auth", "token": "abc.def.ghi"}) == AuthMessage("abc.def.ghi")


def test_chat_keeps_text_as_sent() -> None:
    text = "  Biopsy at 3 o'clock? 👍\nplease  "
    assert parse({"type": "chat", "text": text}) == ChatMessage(text)
    assert parse({"type": "chat", "text": "x" * MAX_CHAT_LENGTH}) == ChatMessage("x" * 2000)


def test_ping_ignores_extra_keys() -> None:
    assert parse({"type": "ping", "v": 1, "id": 7}) == PingMessage()


def test_stats_full_and_unknown_keys_dropped() -> None:
    message = parse({"type": "stats", "stats": {**FULL_STATS, "jitter": 3, "note": "x"}})
    assert message == StatsMessage(FULL_STATS)


def test_stats_minimal_and_nulls_omitted() -> None:
    message = parse({"type": "stats", "stats": {"direction": "send", "rtt_ms": None, "fps": 0}})
    assert message == StatsMessage({"direction": "send", "fps": 0})


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "{'type': 'ping'}",
        '{"type": "ping"',
        '{"type": "ping", "x": NaN}',
        '{"type": "ping", "x": Infinity}',
        '{"type": "ping", "x": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
        "[]",
        '"ping"',
        "42",
        "null",
        "{}",
        '{"type": 1}',
        '{"type": null}',
        '{"type": ["ping"]}',
    ],
    ids=lambda raw: raw[:30],
)
def test_malformed(raw: str) -> None:
    error = rejected(raw)
    assert error.code == MALFORMED
    assert error.fatal


def test_unknown_type_is_not_fatal() -> None:
    error = rejected('{"type": "annotate-secret-patient-name"}')
    assert error.code == UNKNOWN_TYPE
    assert not error.fatal
    assert "patient" not in error.reason  # reasons never quote client values


@pytest.mark.parametrize(
    "message",
    [
        {"type": "auth"},
        {"type": "auth", "token": ""},
        {"type": "auth", "token": 123},
        {"type": "auth", "token": "x" * 10_000},
        {"type": "chat"},
        {"type": "chat", "text": ""},
        {"type": "chat", "text": "   \n "},
        {"type": "chat", "text": 5},
        {"type": "chat", "text": ["hi"]},
        {"type": "chat", "text": "x" * (MAX_CHAT_LENGTH + 1)},
        {"type": "chat", "text": "lone \ud800 surrogate"},
        {"type": "stats"},
        {"type": "stats", "stats": []},
        {"type": "stats", "stats": {}},
        {"type": "stats", "stats": {"direction": "sideways"}},
        {"type": "stats", "stats": {"direction": "send", "feed": "kitchen"}},
        {"type": "stats", "stats": {"direction": "send", "feed": 1}},
        {"type": "stats", "stats": {"direction": "send", "fps": "30"}},
        {"type": "stats", "stats": {"direction": "send", "fps": True}},
        {"type": "stats", "stats": {"direction": "send", "fps": -1}},
        {"type": "stats", "stats": {"direction": "send", "loss_pct": 100.5}},
        {"type": "stats", "stats": {"direction": "send", "width": 10**400}},
        {"type": "stats", "stats": {"direction": "send", "rtt_ms": [1]}},
    ],
    ids=lambda m: json.dumps(m)[:60],
)
def test_invalid_fields(message: dict[str, Any]) -> None:
    error = rejected(json.dumps(message))
    assert error.code == INVALID
    assert not error.fatal


@pytest.mark.parametrize("key", sorted(STAT_LIMITS))
def test_every_stat_rejects_infinity(key: str) -> None:
    raw = '{"type":"stats","stats":{"direction":"send","KEY":1e999}}'.replace("KEY", key)
    assert rejected(raw).code == INVALID


@given(st.text())
def test_arbitrary_text_raises_only_protocol_error(raw: str) -> None:
    try:
        parse_client_message(raw)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(
    st.sampled_from(["auth", "chat", "stats", "ping", "other"]),
    st.dictionaries(st.sampled_from(["token", "text", "stats", "v"]), json_values),
    st.dictionaries(st.sampled_from([*STAT_LIMITS, "direction", "feed"]), json_values),
)
def test_arbitrary_json_messages_raise_only_protocol_error(
    kind: str, fields: dict[str, Any], stats: dict[str, Any]
) -> None:
    message = {**fields, "type": kind}
    if kind == "stats" and "stats" not in fields:
        message["stats"] = stats
    try:
        parse_client_message(json.dumps(message))
    except ProtocolError:
        pass
